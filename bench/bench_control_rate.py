"""Sustained 1 kHz control for 10 s over loopback, with zero datagrams lost.

Runtime: the real robot endpoint (``python -m telepresence robot``: `serve_robot`, sim-arm,
control loop at 1000 Hz, telemetry at 100 Hz) in a child process, on a UDP socket bound here
and passed by descriptor as the demo does, and the real station (`run_station` at 1000 Hz with
the scripted input, clocks shared) on uvloop in this process. The station's ticker is the
runtime's own `PreciseTicker`, wrapped only to record when each tick was due and when it ran.

Baseline, same duration, just before: the naive way to send at 1 kHz, a blocking UDP socket
that sleeps with ``time.sleep`` until each next millisecond deadline and sends a datagram of
the size of an encoded JointCommand, to a child process that counts what arrives.

Asserted: every datagram the station sent reached the robot; nothing malformed, stale,
duplicate, rejected or dropped at the robot, nothing malformed, stale or duplicate at the
station, no telemetry lost; every command was applied or superseded (two landing in one control
tick: latest wins, by design); at least 95 % of the 10,000 commands were sent (the ticker skips
a tick that would be more than a period late, rather than burst); and the station's ticks are
no later than the naive sender's sends at p50. Reported: superseded count and applied ratio,
commands per second, tick lateness of both ends, send-interval jitter (|interval - 1 ms|) of
the station and of the naive sender, and hand-to-actuator latency percentiles (input sampled
to actuated, including sim-arm's 2 ms actuation delay, and its network + compute share).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchkit import Peer, machine, percentiles_us, run_abab
from peers import SINK_STOP

import telepresence.apps
from robots.api import JointCommand
from telepresence import aio
from telepresence.aio import PreciseTicker
from telepresence.apps import run_station
from telepresence.inputs import ScriptedInput
from telepresence.station import StationConfig, StationCore
from telepresence.wire import encode

# This machine is shared: a benchmark that misses a target is measured once more; a
# regression misses both times, a neighbour's burst rarely twice (docs/benchmarks.md).
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

RATE_HZ = 1000
PERIOD_NS = 1_000_000_000 // RATE_HZ
DURATION_S = 10.0
MIN_RATE_FRACTION = 0.95


class RecordingTicker(PreciseTicker):
    """The runtime's `PreciseTicker`, noting for each tick when it was due and when it ran."""

    last: RecordingTicker | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop, period_ns: int, callback: Any,
                 **kwargs: Any) -> None:  # fmt: skip
        capacity = int(DURATION_S * 1e9 / period_ns) * 2 + 1000
        self.due = np.zeros(capacity, dtype=np.int64)
        self.ran = np.zeros(capacity, dtype=np.int64)
        self.n = 0
        monotonic_ns = time.monotonic_ns

        def record(tick_ns: int) -> None:
            i = self.n
            if i < capacity:
                self.ran[i] = monotonic_ns()
                self.due[i] = tick_ns
                self.n = i + 1
            callback(tick_ns)

        super().__init__(loop, period_ns, record, **kwargs)
        RecordingTicker.last = self


def _jitter(times_ns: np.ndarray) -> np.ndarray:
    """|interval - period| between consecutive sends, ns."""
    return np.abs(np.diff(times_ns) - PERIOD_NS)


def _rate_summary(due: np.ndarray, ran: np.ndarray) -> dict[str, Any]:
    span_s = (ran[-1] - ran[0]) / 1e9
    return {
        "sent": int(ran.size),
        "per_second": round((ran.size - 1) / span_s, 1),
        "tick_lateness": percentiles_us(ran - due),
        "send_interval": percentiles_us(np.diff(ran)),
        "send_interval_jitter": percentiles_us(_jitter(ran)),
    }


def _naive_sender(payload: bytes) -> dict[str, Any]:
    """Send `payload` at 1 kHz for DURATION_S with time.sleep pacing, to a sink process."""
    n = int(DURATION_S * RATE_HZ)
    due = np.zeros(n, dtype=np.int64)
    ran = np.zeros(n, dtype=np.int64)
    with Peer("sink") as sink:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(sink.address)
        send, sleep, monotonic_ns = sock.send, time.sleep, time.monotonic_ns
        deadline = monotonic_ns() + PERIOD_NS
        for i in range(n):
            wait = deadline - monotonic_ns()
            if wait > 0:
                sleep(wait / 1e9)
            ran[i] = monotonic_ns()
            send(payload)
            due[i] = deadline
            deadline += PERIOD_NS
        time.sleep(0.05)  # let the sink drain its socket before the stop marker
        sock.send(SINK_STOP)
        received = int(sink.readline(10.0))
        sock.close()
        assert sink.close() == 0
    return {**_rate_summary(due, ran), "received": received, "lost": n - received}


def _robot_command(fd: int, status: Path) -> list[str]:
    return [
        sys.executable, "-m", "telepresence", "robot",
        "--driver", "sim-arm", "--driver-config", f"control_rate_hz={RATE_HZ}",
        "--listen-fd", str(fd), "--rate", str(RATE_HZ), "--telemetry-rate", "100",
        "--loop", "uvloop", "--log-level", "warning", "--json", str(status),
        "--insecure",  # this station is the plain data-plane core: no control plane
    ]  # fmt: skip


def _run_runtime(tmp: Path) -> dict[str, Any]:
    """Robot endpoint in a child process, station here, for DURATION_S; both summaries."""
    status_file = tmp / "robot.json"
    RecordingTicker.last = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    robot = subprocess.Popen(_robot_command(sock.fileno(), status_file),
                             pass_fds=(sock.fileno(),), stdout=subprocess.DEVNULL)  # fmt: skip
    sock.close()
    try:
        station = StationCore(
            StationConfig(control_rate_hz=RATE_HZ, clock_offset_ns=0),
            lambda view, now: ScriptedInput(view, {}, now),
            clock=time.monotonic_ns,
        )
        summary = aio.run(run_station(station, address, duration=DURATION_S,
                                      wait_for_robot_s=20.0), "uvloop")  # fmt: skip
        robot.send_signal(signal.SIGINT)
        assert robot.wait(timeout=20) == 0, "the robot endpoint failed"
    finally:
        if robot.poll() is None:
            robot.kill()
            robot.wait()
    ticker = RecordingTicker.last
    assert ticker is not None and ticker.n > 1
    stages = station.profile.stage_samples(0)
    return {
        "summary": summary,
        "robot": json.loads(status_file.read_text()),
        "station_ticks": _rate_summary(ticker.due[: ticker.n], ticker.ran[: ticker.n]),
        "station_ticker_overruns": ticker.overruns,
        "hand_to_actuator": percentiles_us(stages["total"]),
        "hand_to_actuator_runtime_share": percentiles_us(stages["network"] + stages["compute"]),
        "stages": {
            key: percentiles_us(stages[key])
            for key in ("station", "uplink", "decode", "control_wait", "actuation", "downlink")
        },
    }


def test_sustained_1khz_control_without_loss(benchmark, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(telepresence.apps, "PreciseTicker", RecordingTicker)
    command = JointCommand(positions=np.zeros(6), gripper=0.5)
    payload = bytes(len(encode(command, stream=1, session=1, seq=1, send_time_ns=0)))
    results: dict[str, Any] = {}

    def baseline() -> None:
        results["naive"] = _naive_sender(payload)

    def runtime() -> None:
        results["runtime"] = _run_runtime(tmp_path)

    run_abab(benchmark, baseline, runtime, blocks=1)
    naive, run = results["naive"], results["runtime"]
    summary, robot = run["summary"], run["robot"]
    st = summary["station"]
    rc = robot["counters"]
    sent = st["commands_sent"] + st["heartbeats_sent"]
    ours = run["station_ticks"]
    report = {
        "machine": machine(),
        "duration_s": DURATION_S,
        "rate_hz": RATE_HZ,
        "commands_sent": st["commands_sent"],
        "heartbeats_sent": st["heartbeats_sent"],
        "robot_received": rc["received"],
        "lost": sent - rc["received"],
        "robot_counters": rc,
        "applied_ratio": round(rc["applied"] / st["commands_sent"], 4),
        "superseded": rc["superseded"],
        "commands_per_second": ours["per_second"],
        "station_tick_lateness": ours["tick_lateness"],
        "station_send_interval": ours["send_interval"],
        "station_send_interval_jitter": ours["send_interval_jitter"],
        "station_ticker_overruns": run["station_ticker_overruns"],
        "robot_tick_lateness": robot["tick_lateness"],
        "robot_tick_overruns": robot["tick_overruns"],
        "hand_to_actuator": run["hand_to_actuator"],
        "hand_to_actuator_network_plus_compute": run["hand_to_actuator_runtime_share"],
        "latency_stages": run["stages"],
        "telemetry_received": st["telemetry"],
        "telemetry_lost": st["telemetry_lost"],
        "naive_sleep_sender": naive,
    }
    benchmark.extra_info.update(report)
    j_ours, j_naive = ours["send_interval_jitter"], naive["send_interval_jitter"]
    print(f"\n1 kHz for {DURATION_S:g} s: sent {st['commands_sent']} commands "
          f"({ours['per_second']}/s), robot received {rc['received']} of {sent} datagrams, "
          f"applied {rc['applied']}, superseded {rc['superseded']}\n"
          f"  station tick lateness {ours['tick_lateness']}\n"
          f"  robot tick lateness {robot['tick_lateness']}, overruns {robot['tick_overruns']}\n"
          f"  hand to actuator {run['hand_to_actuator']}\n"
          f"  send-interval jitter µs: ours {j_ours}\n"
          f"                           naive {j_naive} ({naive['per_second']}/s, "
          f"lost {naive['lost']})\n  naive lateness {naive['tick_lateness']}")  # fmt: skip

    assert report["lost"] == 0, f"{report['lost']} datagrams lost on loopback"
    for name in ("malformed", "duplicate", "stale", "rejected", "dropped"):
        assert rc[name] == 0, f"robot counted {rc[name]} {name}"
    assert rc["applied"] + rc["superseded"] == st["commands_sent"]
    assert st["malformed"] == st["duplicate"] == st["stale"] == 0
    assert st["telemetry_lost"] == 0
    assert robot["handler_errors"] == 0
    assert st["commands_sent"] >= MIN_RATE_FRACTION * DURATION_S * RATE_HZ, (
        f"{ours['per_second']} commands/s, below {MIN_RATE_FRACTION:.0%} of {RATE_HZ}"
    )
    late_ours, late_naive = ours["tick_lateness"]["p50_us"], naive["tick_lateness"]["p50_us"]
    assert late_ours <= late_naive, (
        f"station ticks are later than time.sleep pacing: p50 {late_ours} > {late_naive} µs"
    )
