"""End to end through the `telepresence` command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Keys

from telepresence import native

CLI = [sys.executable, "-m", "telepresence"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["", "demo", "robot", "station", "drivers"])
def test_help_explains(command: str) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: telepresence" in result.stdout
    if command == "robot":
        assert "--hold-after" in result.stdout and "default: 50ms" in result.stdout


def test_demo_prints_latency_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    started = time.monotonic()
    result = run("demo", "--duration", "1", "--json", str(out))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 15
    for word in ("network", "compute", "device", "p50", "p99", "uplink loss", "applied"):
        assert word in result.stdout
    data = json.loads(out.read_text())
    assert data["station"]["commands_sent"] >= 400
    assert data["robot"]["applied"] >= 0.9 * data["station"]["commands_sent"]
    assert data["latency"]["groups"]["device"]["p50_us"] == pytest.approx(2000, abs=1)
    assert data["latency"]["total"]["samples"] >= 80
    assert data["robot_endpoint"]["tick_lateness"]["ticks"] >= 400


def test_unknown_driver_lists_installed_ones() -> None:
    result = run("robot", "--driver", "no-such-arm", "--duration", "1")
    assert result.returncode == 2
    assert "no-such-arm" in result.stderr and "sim-arm" in result.stderr
    assert "sim-base" in result.stderr


def test_duration_without_unit_is_refused() -> None:
    result = run("robot", "--hold-after", "50")
    assert result.returncode == 2
    assert "needs a unit" in result.stderr


def test_bridge_endpoint_is_for_the_bridge_driver_only() -> None:
    result = run("robot", "--driver", "sim-arm", "--bridge", "ipc:///run/arm.sock")
    assert result.returncode == 2
    assert "--bridge ipc:///run/arm.sock is for --driver bridge" in result.stderr
    result = run("robot", "--driver", "bridge", "--bridge", "ipc:///a.sock",
                 "--driver-config", "endpoint=ipc:///b.sock")  # fmt: skip
    assert result.returncode == 2 and "disagree" in result.stderr


def test_bad_driver_config_names_the_option() -> None:
    result = run("robot", "--driver-config", "actuation_delay_ms=-3", "--duration", "1")
    assert result.returncode == 2
    assert "actuation_delay_ms" in result.stderr


def test_station_without_robot_says_so(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        insecure = run("station", "--insecure", "--connect", f"127.0.0.1:{port}", "--wait", "0.3")
        secure = run(
            "station",
            "--connect",
            f"127.0.0.1:{free_port()}",
            "--wait",
            "0.5",
            *keys.station_args(),
        )
    assert insecure.returncode == 1 and "no answer from a robot" in insecure.stderr
    assert "--insecure" in insecure.stderr and "WARNING" in insecure.stderr
    assert secure.returncode == 1 and "no welcome from the robot's control plane" in secure.stderr


def test_secure_defaults_explain_missing_keys(tmp_path: Path) -> None:
    robot = run("robot", "--key", str(tmp_path / "nope.key_secret"), "--duration", "1")
    assert robot.returncode == 2 and "telepresence keygen robot" in robot.stderr
    station = run("station", "--connect", "127.0.0.1", "--key", str(tmp_path / "nope"))
    assert station.returncode == 2 and "telepresence keygen operator" in station.stderr


def test_keygen_writes_a_key_pair(tmp_path: Path) -> None:
    result = run("keygen", "bob", "--dir", str(tmp_path))
    assert result.returncode == 0
    assert (tmp_path / "bob.key").exists() and (tmp_path / "bob.key_secret").exists()
    assert (tmp_path / "bob.key_secret").stat().st_mode & 0o077 == 0
    assert "public key: " in result.stdout
    again = run("keygen", "bob", "--dir", str(tmp_path))
    assert again.returncode == 2 and "exists already" in again.stderr


def test_robot_and_station_as_separate_commands(tmp_path: Path) -> None:
    port = free_port()
    keys = Keys(tmp_path / "keys")
    robot_json, station_json = tmp_path / "robot.json", tmp_path / "station.json"
    robot = subprocess.Popen(
        [
            *CLI,
            "robot",
            "--driver",
            "sim-base",
            "--listen",
            f"127.0.0.1:{port}",
            "--duration",
            "6",
            "--json",
            str(robot_json),
            "--log-level",
            "warning",
            *keys.robot_args(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        station = run(
            "station",
            "--connect",
            f"127.0.0.1:{port + 1}",
            "--duration",
            "1",
            "--rate",
            "200",
            "--json",
            str(station_json),
            *keys.station_args(),
        )
        assert station.returncode == 0, station.stderr
    finally:
        robot_out, robot_err = robot.communicate(timeout=30)
    assert robot.returncode == 0, robot_err
    s = json.loads(station_json.read_text())
    r = json.loads(robot_json.read_text())
    assert 150 <= s["station"]["commands_sent"] <= 230
    assert r["counters"]["applied"] >= 0.9 * s["station"]["commands_sent"]
    assert r["mode"] == "stopped"  # the station left long before the robot's end
    assert "sim-base-0" in robot_out and "secure" in robot_out
    assert s["control"]["held_control"] and r["secure"]
    assert s["aead"] == r["aead"] == "libsodium"  # the data plane's ChaCha20-Poly1305
    assert s["hot_path"] == r["hot_path"] == native.IMPLEMENTATION  # test_native: "c" here
    where = native.label(native.IMPLEMENTATION)
    assert f"data plane: secure (libsodium), hot path in {where}" in station.stdout
    assert f"secure, hot path in {where}" in robot_out


def test_drivers_lists_builtins() -> None:
    text = run("drivers")
    assert text.returncode == 0
    assert "sim-arm" in text.stdout and "sim-base" in text.stdout
    data = json.loads(run("drivers", "--json").stdout)
    names = {d["name"] for d in data["drivers"]}
    assert {"sim-arm", "sim-base"} <= names
    arm = next(d for d in data["drivers"] if d["name"] == "sim-arm")
    assert len(arm["manifest"]["joints"]) == 6


def test_demo_through_an_emulated_link_shows_the_network_share(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    result = run(
        "demo", "--duration", "1", "--profile", "apn", "--distance-km", "2000", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "emulated 'apn' link at 2000 km" in result.stdout
    data = json.loads(out.read_text())
    uplink = data["latency"]["stages"]["uplink"]["p50_us"]
    assert 9800 <= uplink <= 9800 + 3000  # 2000 km * 4.9 µs/km, plus two loopback hops
    assert data["link"]["up"]["delay_p50_us"] == pytest.approx(9800.0)
    assert data["link"]["up"]["delivered"] >= 400


def test_an_observer_watches_while_another_operator_drives(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys")
    bob = keys.add_operator("bob")
    port = free_port()
    robot = subprocess.Popen(
        [
            *CLI,
            "robot",
            "--listen",
            f"127.0.0.1:{port}",
            "--duration",
            "9",
            "--json",
            str(tmp_path / "robot.json"),
            "--log-level",
            "warning",
            *keys.robot_args(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    connect = ["--connect", f"127.0.0.1:{port + 1}", "--robot-key", str(keys.robot_public)]
    try:
        time.sleep(1.0)
        driver = subprocess.Popen(
            [
                *CLI,
                "station",
                *connect,
                "--key",
                str(keys.operator_secret),
                "--duration",
                "5",
                "--json",
                str(tmp_path / "driver.json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        observer = run(
            "station",
            *connect,
            "--key",
            str(bob),
            "--observe",
            "--duration",
            "4",
            "--json",
            str(tmp_path / "observer.json"),
        )
        _, driver_err = driver.communicate(timeout=30)
    finally:
        robot.communicate(timeout=30)
    assert driver.returncode == 0, driver_err
    assert observer.returncode == 0, observer.stderr
    watched = json.loads((tmp_path / "observer.json").read_text())
    drove = json.loads((tmp_path / "driver.json").read_text())
    r = json.loads((tmp_path / "robot.json").read_text())
    assert watched["station"]["commands_sent"] == 0
    assert watched["station"]["telemetry"] >= 300  # 100 Hz for ~4 s, longer than 3 s keepalive
    assert watched["station"]["forged"] == 0
    assert drove["station"]["telemetry"] >= 400
    assert r["counters"]["dropped"] == 0 and r["counters"]["unknown_session"] == 0


def test_removing_an_operators_key_ends_their_run(tmp_path: Path) -> None:
    """The robot's owner removes the driving operator's key and sends the robot SIGHUP: the
    robot closes the session at once, and the station stops and says why."""
    import signal
    import threading

    port = free_port()
    keys = Keys(tmp_path / "keys")
    keys.add_operator("bob")  # a list that keeps one key is taken
    robot_json, station_json = tmp_path / "robot.json", tmp_path / "station.json"
    robot = subprocess.Popen(
        [*CLI, "robot", "--driver", "sim-arm", "--listen", f"127.0.0.1:{port}",
         "--duration", "30", "--json", str(robot_json), "--log-level", "warning",
         *keys.robot_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    station = subprocess.Popen(
        [*CLI, "station", "--connect", f"127.0.0.1:{port + 1}", "--duration", "30",
         "--json", str(station_json), "--log-level", "info", *keys.station_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert station.stderr is not None
        deadline = time.monotonic() + 20
        seen = ""
        while "driving at" not in seen:  # the station holds the lease and sends commands
            assert time.monotonic() < deadline and station.poll() is None, seen
            seen += station.stderr.readline()
        rest: list[str] = []
        err = station.stderr
        drain = threading.Thread(target=lambda: rest.extend(err), daemon=True)
        drain.start()  # a full pipe must not stall the station
        (keys.allowlist / "alice.key").unlink()  # off the allowlist ...
        removed = time.monotonic()
        robot.send_signal(signal.SIGHUP)  # ... and read at once
        station.wait(timeout=20)
        took = time.monotonic() - removed
        drain.join(5)
        station_err = seen + "".join(rest)
    finally:
        if station.poll() is None:
            station.kill()
        robot.send_signal(signal.SIGINT)
        _, robot_err = robot.communicate(timeout=30)
    assert robot.returncode == 0, robot_err
    assert station.returncode == 0, station_err
    assert took < 15  # well before its 30 s
    s = json.loads(station_json.read_text())
    assert "allowlist" in s["control"]["ended_by_robot"]
    assert "the robot ended the session" in station_err
    r = json.loads(robot_json.read_text())
    assert r["control"]["revoked_sessions"] == 1, r["control"]
    assert r["control"]["allowlist"]["operators"] == ["bob"]
    assert r["secure"] and r["control"]["sessions"] == 0
