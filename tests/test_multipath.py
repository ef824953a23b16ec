"""Multipath: every command goes on two paths (two netsim relays); one path is cut mid-run and
the arm does not stutter."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from robots.api import Command
from robots.sim_arm import SimArm
from telepresence import aio
from telepresence.apps import serve_robot
from telepresence.endpoint import EndpointConfig, RobotCore
from telepresence.inputs import ScriptedInput
from telepresence.station import StationConfig, StationCore

PERIOD_NS = 2_000_000  # 500 Hz
TICK_JITTER_NS = 500_000


class TimedArm(SimArm):
    def __init__(self) -> None:
        super().__init__()
        self.applied_at: list[int] = []

    def apply(self, command: Command, now_ns: int) -> None:
        self.applied_at.append(now_ns)
        super().apply(command, now_ns)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relay(to_port: int, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netsim",
            "relay",
            "--listen-fd",
            str(sock.fileno()),
            "--to",
            f"127.0.0.1:{to_port}",
            "--delay",
            "1ms",
            *extra,
        ],
        pass_fds=(sock.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock.close()
    return proc, port


@pytest.mark.flaky(reruns=1)  # timing on a shared machine: a real fault fails twice
def test_cutting_one_of_two_paths_leaves_no_control_gap() -> None:
    arm = TimedArm()
    robot = RobotCore(arm, EndpointConfig(), clock=time.monotonic_ns)
    path_ports = [free_port(), free_port()]
    relay_started = time.monotonic_ns()
    # path A is cut 2 s after its relay starts (an outage that lasts the rest of the run)
    relays = [relay(path_ports[0], "--outage", "100s:98s"), relay(path_ports[1])]
    station = StationCore(
        StationConfig(clock_offset_ns=0),
        lambda view, now: ScriptedInput(view, {}, now),
        clock=time.monotonic_ns,
    )

    async def main() -> tuple[dict, dict]:  # type: ignore[type-arg]
        stop = asyncio.Event()
        served = asyncio.create_task(
            serve_robot(
                robot,
                local=("127.0.0.1", path_ports[0]),
                more_paths=[("127.0.0.1", path_ports[1])],
                stop=stop,
            )
        )

        summary = await run_station_through([("127.0.0.1", p) for _, p in relays], station)
        stop.set()
        return summary, await served

    async def run_station_through(remotes: list[tuple[str, int]], core: StationCore) -> dict:  # type: ignore[type-arg]
        from telepresence.apps import run_station

        return await run_station(core, remotes, duration=3.0)

    try:
        summary, status = aio.run(main())
    finally:
        for proc, _ in relays:
            proc.kill()
            proc.wait()
    applied = np.asarray(arm.applied_at)
    cut = relay_started + 2_000_000_000

    def gaps(lo: int, hi: int) -> np.ndarray:
        return np.diff(applied[(applied >= lo) & (applied < hi)])

    # A gap is the time between two applied commands: one period, two when a tick is skipped
    # under load on this shared machine. The cut must not add any: compare the second after it
    # with the second before it, measured in the same run.
    before, after = gaps(cut - 1_000_000_000, cut), gaps(cut, cut + 1_000_000_000)
    assert len(before) > 400 and len(after) > 400
    long_before = int((before > 2 * PERIOD_NS + TICK_JITTER_NS).sum())
    long_after = int((after > 2 * PERIOD_NS + TICK_JITTER_NS).sum())
    assert long_after <= max(2, 2 * long_before), (long_before, long_after)
    assert abs(np.median(after) - PERIOD_NS) < 100_000
    assert summary["robot"]["duplicate"] > 300  # the redundant copies, until the cut
    a, b = summary["paths"]
    assert b["live"] and not a["live"]
    assert a["silent_ms"] > 1000 and b["received"] > a["received"]
    assert len(status["paths"]) == 2
