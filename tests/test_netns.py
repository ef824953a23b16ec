"""The runtime across two hosts: a robot and a station in separate network namespaces, joined
by a veth pair (optionally shaped by tbf), driven through the `telepresence` command.

Needs root; skips with the reason `netsim.hosts.check_available` gives.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Keys

from netsim.exceptions import HostsUnavailable
from netsim.hosts import HostNetwork, Shaping, check_available

pytestmark = pytest.mark.netns

CLI = [sys.executable, "-m", "telepresence"]
PORT = 7000
DURATION_S = 2.0
COMMAND_RATE_HZ = 500  # the station's default --rate
TELEMETRY_RATE_HZ = 100  # the robot's default --telemetry-rate


@pytest.fixture
def net() -> Iterator[HostNetwork]:
    try:
        check_available()
    except HostsUnavailable as exc:
        pytest.skip(str(exc))
    with HostNetwork(hosts=["station", "robot"]) as network:
        yield network


def shape_or_skip(net: HostNetwork, shaping: Shaping, *, both_ways: bool = True) -> None:
    try:
        net.shape("station", "robot", shaping, both_ways=both_ways)
    except HostsUnavailable as exc:
        pytest.skip(str(exc))


def drive(net: HostNetwork, tmp_path: Path, clock: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a robot and a station for DURATION_S; return (station JSON, robot JSON)."""
    robot_json, station_json = tmp_path / "robot.json", tmp_path / "station.json"
    keys = Keys(tmp_path / "keys")  # a secure session: CURVE control plane, sealed datagrams
    target = f"{net.address('robot')}:{PORT}"
    control = f"{net.address('robot')}:{PORT + 1}"
    robot = net.popen("robot", [*CLI, "robot", "--driver", "sim-arm", "--listen", target,
                                "--duration", "60", "--json", str(robot_json),
                                *keys.robot_args()])  # fmt: skip
    # The station waits (--wait, 5 s) for the robot to answer, so no sleep is needed here.
    station = net.run("station", [*CLI, "station", "--connect", control, "--duration",
                                  str(DURATION_S), "--clock", clock, "--json", str(station_json),
                                  *keys.station_args()],
                      timeout=30)  # fmt: skip
    robot.send_signal(signal.SIGTERM)  # the robot stops on SIGTERM and writes its JSON
    _, robot_err = robot.communicate(timeout=10)
    assert robot.returncode == 0, robot_err
    assert f"station -> {control}" in station.stdout
    return json.loads(station_json.read_text()), json.loads(robot_json.read_text())


def assert_loop_works(summary: dict[str, Any], robot: dict[str, Any]) -> None:
    sent = summary["station"]["commands_sent"]
    assert sent >= 0.8 * COMMAND_RATE_HZ * DURATION_S
    assert robot["counters"]["applied"] >= 0.9 * sent
    assert robot["counters"]["malformed"] == robot["counters"]["rejected"] == 0
    assert summary["station"]["telemetry"] >= 0.8 * TELEMETRY_RATE_HZ * DURATION_S
    assert summary["uplink_loss"] is not None and summary["uplink_loss"] < 0.01


def report(label: str, summary: dict[str, Any], robot: dict[str, Any]) -> None:
    up, down = summary["latency"]["stages"]["uplink"], summary["latency"]["stages"]["downlink"]
    print(f"\n{label}: sent {summary['station']['commands_sent']}, applied "
          f"{robot['counters']['applied']}, telemetry {summary['station']['telemetry']}; "
          f"uplink p50 {up['p50_us']} µs p99 {up['p99_us']} µs, downlink p50 {down['p50_us']} "
          f"µs; clock offset {summary['latency']['clock_offset_us']} µs")  # fmt: skip


def test_commands_and_telemetry_cross_the_veth(net: HostNetwork, tmp_path: Path) -> None:
    summary, robot = drive(net, tmp_path, clock="shared")
    report("shared clock", summary, robot)
    assert robot["address"] == f"{net.address('robot')}:{PORT}"
    assert_loop_works(summary, robot)
    uplink = summary["latency"]["stages"]["uplink"]
    assert uplink["samples"] >= 0.8 * TELEMETRY_RATE_HZ * DURATION_S
    # One kernel, one CLOCK_MONOTONIC: the uplink is measured directly; a veth hop plus two
    # Python event loops stays well below a millisecond at the median.
    assert 0 < uplink["p50_us"] < 1000
    assert uplink["p99_us"] < 20_000
    assert summary["latency"]["clock_offset_us"] == 0


def test_estimated_clock_offset_is_near_zero(net: HostNetwork, tmp_path: Path) -> None:
    summary, robot = drive(net, tmp_path, clock="estimate")
    report("estimated clock", summary, robot)
    assert_loop_works(summary, robot)
    # Both namespaces share the kernel's clock, so the true offset is 0.
    assert abs(summary["latency"]["clock_offset_us"]) < 300
    assert summary["latency"]["clock_uncertainty_us"] < 1000


def test_commands_flow_through_a_1mbit_tbf(net: HostNetwork, tmp_path: Path) -> None:
    # ~500 commands/s of ~140 bytes on the wire is ~0.55 Mbit/s: it fits in 1 Mbit/s.
    shape_or_skip(net, Shaping(rate="1mbit"))
    summary, robot = drive(net, tmp_path, clock="shared")
    report("tbf 1 mbit", summary, robot)
    assert_loop_works(summary, robot)
    assert 0 < summary["latency"]["stages"]["uplink"]["p50_us"] < 5000
    stats = net.run("station", ["tc", "-s", "qdisc", "show", "dev", "eth0"]).stdout
    assert "qdisc tbf" in stats and "rate 1Mbit" in stats
    sent_bytes = int(stats.split("Sent ")[1].split(" bytes")[0])
    assert sent_bytes >= summary["station"]["commands_sent"] * 96  # the traffic went through it
    assert "dropped 0," in stats


def test_commands_beyond_the_tbf_rate_queue_and_drop(net: HostNetwork, tmp_path: Path) -> None:
    # 0.25 Mbit/s is under half the command traffic: the tbf queue fills (~260 ms deep at the
    # default 8 KiB limit) and drops the rest. (The robot still applies what arrives: its
    # --max-age counts from arrival, since it cannot read the station's clock.)
    shape_or_skip(net, Shaping(rate="250kbit"), both_ways=False)
    summary, robot = drive(net, tmp_path, clock="shared")
    report("tbf 250 kbit", summary, robot)
    stats = net.run("station", ["tc", "-s", "qdisc", "show", "dev", "eth0"]).stdout
    dropped = int(stats.split("(dropped ")[1].split(",")[0])
    assert dropped > 0.3 * summary["station"]["commands_sent"]
    assert robot["counters"]["applied"] < 0.7 * summary["station"]["commands_sent"]
    assert summary["latency"]["stages"]["uplink"]["p50_us"] > 50_000
    assert summary["latency"]["stages"]["downlink"]["p50_us"] < 5_000  # the way back is free
