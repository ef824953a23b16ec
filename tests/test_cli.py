"""End to end through the `telepresence` command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_bad_driver_config_names_the_option() -> None:
    result = run("robot", "--driver-config", "actuation_delay_ms=-3", "--duration", "1")
    assert result.returncode == 2
    assert "actuation_delay_ms" in result.stderr


def test_station_without_robot_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = run("station", "--connect", f"127.0.0.1:{port}", "--wait", "0.3")
    assert result.returncode == 1
    assert "no answer from a robot" in result.stderr


def test_robot_and_station_as_separate_commands(tmp_path: Path) -> None:
    port = free_port()
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        station = run(
            "station",
            "--connect",
            f"127.0.0.1:{port}",
            "--duration",
            "1",
            "--rate",
            "200",
            "--json",
            str(station_json),
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
    assert "sim-base-0" in robot_out


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
