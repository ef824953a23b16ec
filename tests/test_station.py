"""Station and robot cores pumped against each other through a hand-made network."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import MS, HandClock, RecordingDriver

from telepresence.endpoint import EndpointConfig, RobotCore
from telepresence.inputs import RobotView, ScriptedInput
from telepresence.station import StationConfig, StationCore

ROBOT_ADDR = ("robot", 1)
STATION_ADDR = ("station", 1)


class FakeNet:
    """Delivers datagrams after fixed one-way delays, in time order; can drop by predicate."""

    def __init__(self, up_ns: int, down_ns: int) -> None:
        self.up_ns, self.down_ns = up_ns, down_ns
        self.queue: list[tuple[int, int, str, bytes]] = []
        self.n = 0
        self.cut = False

    def send(self, to: str, data: bytes, now: int) -> None:
        if self.cut:
            return
        self.n += 1
        delay = self.up_ns if to == "robot" else self.down_ns
        heapq.heappush(self.queue, (now + delay, self.n, to, bytes(data)))

    def due(self, now: int) -> list[tuple[int, str, bytes]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            t, _, to, data = heapq.heappop(self.queue)
            out.append((t, to, data))
        return out


def run(
    *,
    up: int,
    down: int,
    robot_offset: int,
    fixed_offset: int | None,
    ms: int = 400,
    actuation: int = 4 * MS,
    every_ms: Callable[[int, RecordingDriver, StationCore], None] | None = None,
) -> tuple[StationCore, RobotCore, RecordingDriver]:
    st_clock = HandClock(start=10**12)
    rb_clock = HandClock(start=10**12 + robot_offset)
    driver = RecordingDriver(delay_ns=actuation)
    robot = RobotCore(
        driver, EndpointConfig(control_rate_hz=1000, telemetry_rate_hz=1000), clock=rb_clock
    )
    robot.start(rb_clock.now)
    station = StationCore(
        StationConfig(control_rate_hz=1000, clock_offset_ns=fixed_offset),
        lambda view, now: ScriptedInput(view, {"amplitude": "0.2"}, now),
        clock=st_clock,
    )
    net = FakeNet(up, down)
    net.send("robot", station.heartbeat(st_clock.now), st_clock.now)
    for _ in range(ms * 4):  # 250 µs steps
        st_clock.advance(MS // 4)
        rb_clock.advance(MS // 4)
        for t, to, data in net.due(st_clock.now):
            if to == "robot":
                robot.receive_datagram(data, STATION_ADDR, t + robot_offset)
            else:
                station.receive_datagram(data, t)
        if st_clock.now % MS == 0:
            if every_ms is not None:
                every_ms((st_clock.now - 10**12) // MS, driver, station)
            robot.tick(rb_clock.now)
            for data, _addr in robot.datagrams_to_send():
                net.send("station", data, st_clock.now)
            out = station.tick(st_clock.now)
            if out is not None:
                net.send("robot", out, st_clock.now)
    return station, robot, driver


def test_stage_times_match_the_network_and_device() -> None:
    station, _robot, driver = run(up=3 * MS, down=2 * MS, robot_offset=0, fixed_offset=0)
    s = station.profile.stage_samples(0)
    n = station.profile.command_samples
    assert n > 300
    assert np.all(s["uplink"] == 3 * MS)
    assert np.all(s["downlink"] == 2 * MS)
    assert np.all(s["actuation"] == 4 * MS)
    assert np.all(s["station"] == 0) and np.all(s["decode"] == 0)
    assert np.all((s["control_wait"] >= 0) & (s["control_wait"] < MS))
    assert np.all(s["total"] == s["network"] + s["compute"] + s["device"])
    summary = station.summary()
    assert summary["latency"]["stages"]["uplink"]["p50_us"] == 3000.0
    # the last telemetry left the robot 2 ms (the downlink) before the run ended
    assert 0 <= len(driver.applied) - summary["robot"]["applied"] <= 3
    assert summary["station"]["telemetry_lost"] == 0


def test_clock_offset_is_estimated_across_hosts() -> None:
    offset = 5_000_000_000  # robot clock is 5 s ahead
    station, _, _ = run(up=3 * MS, down=3 * MS, robot_offset=offset, fixed_offset=None)
    assert station.clock_offset.offset_ns == pytest.approx(offset, abs=MS // 4)
    report: dict[str, Any] = station.summary()["latency"]
    assert report["stages"]["uplink"]["p50_us"] == pytest.approx(3000, abs=300)


def test_station_waits_for_robot_before_commanding() -> None:
    clock = HandClock()
    station = StationCore(StationConfig(), lambda v, n: ScriptedInput(v, {}, n), clock=clock)
    assert station.tick(clock.now) is None
    assert station.counters["commands_sent"] == 0


def test_garbage_to_station_is_counted_not_raised() -> None:
    clock = HandClock()
    station = StationCore(StationConfig(), lambda v, n: ScriptedInput(v, {}, n), clock=clock)
    for data in (b"", b"TP", b"\x00" * 64, bytes(range(200))):
        station.receive_datagram(data, clock.now)
    assert station.counters["malformed"] == 4


def test_scripted_input_starts_at_current_pose() -> None:
    from robots.api import JointState

    start = np.array([0.1, -0.2, 0.3])
    view = RobotView(joints=JointState(positions=start, gripper=0.0))
    src = ScriptedInput(view, {"amplitude": "0.5", "period": "2"}, 0)
    first = src.sample(0)
    np.testing.assert_allclose(first.positions, start)  # type: ignore[union-attr]
    later = src.sample(500 * MS)  # a quarter period
    assert np.max(np.abs(later.positions - start)) > 0.1  # type: ignore[union-attr]
    assert np.max(np.abs(later.positions - start)) <= 1.0 + 1e-9  # type: ignore[union-attr]


def test_scripted_input_rejects_unknown_option() -> None:
    from robots.api import JointState
    from telepresence.exceptions import ConfigError

    view = RobotView(joints=JointState(positions=np.zeros(2)))
    with pytest.raises(ConfigError, match="amplitude, period, speed, turn"):
        ScriptedInput(view, {"amplitud": "1"}, 0)


def test_uplink_loss_counts_from_the_first_telemetry() -> None:
    from telepresence.streams import Stream
    from telepresence.wire import Counters, RobotMode, Telemetry, encode

    clock = HandClock()
    station = StationCore(
        StationConfig(session=7), lambda v, n: ScriptedInput(v, {}, n), clock=clock
    )

    def telemetry(seq: int, received: int) -> bytes:
        t = Telemetry(mode=RobotMode.ACTIVE, counters=Counters(received=received))
        return bytes(encode(t, stream=Stream.TELEMETRY, session=7, seq=seq, send_time_ns=0))

    station.heartbeat(clock.now)
    station.receive_datagram(telemetry(1, 5_000), clock.now)  # a robot that served others
    for _ in range(100):
        station.heartbeat(clock.advance(MS))
    station.receive_datagram(telemetry(2, 5_090), clock.now)  # 90 of our 100 arrived
    assert station.summary()["uplink_loss"] == pytest.approx(0.10)


def test_station_sees_the_robot_hold_while_its_driver_is_gone_and_resume(caplog) -> None:  # type: ignore[no-untyped-def]
    def outage(ms: int, driver: RecordingDriver, _station: StationCore) -> None:
        driver.gone = 200 <= ms < 300  # the driver's device is away for 100 ms

    with caplog.at_level(logging.WARNING):
        station, robot, _driver = run(
            up=1 * MS, down=1 * MS, robot_offset=0, fixed_offset=0, ms=500, every_ms=outage
        )
    modes = [(c["at_s"], c["mode"]) for c in station.summary()["robot_modes"]]
    assert [m for _, m in modes] == ["stopped", "active", "holding", "active"], modes
    at_hold, at_back = modes[2][0], modes[3][0]
    assert 0.095 <= at_back - at_hold <= 0.110  # the outage, as the station saw it
    assert robot.counters.dropped >= 95  # every command of the outage arrived and moved nothing
    assert robot.driver_available and robot.status()["mode"] == "active"
    said = [r.getMessage() for r in caplog.records if r.name == "telepresence.station"]
    assert len(said) == 2, said
    assert "reports HOLDING although commands are being sent" in said[0]
    assert "active again after" in said[1]


def test_station_does_not_warn_when_the_robot_holds_because_commands_stopped(caplog) -> None:  # type: ignore[no-untyped-def]
    def pause(ms: int, _driver: RecordingDriver, station: StationCore) -> None:
        station.input = _Silent() if 200 <= ms < 400 else station.input

    with caplog.at_level(logging.WARNING):
        station, _robot, _driver = run(
            up=1 * MS, down=1 * MS, robot_offset=0, fixed_offset=0, ms=300, every_ms=pause
        )
    assert [c["mode"] for c in station.summary()["robot_modes"]] == ["stopped", "active", "holding"]
    assert not [r for r in caplog.records if r.name == "telepresence.station"]


class _Silent:
    """An input source with nothing to send."""

    def sample(self, now: int) -> None:
        return None


def test_a_flapping_robot_is_warned_about_at_most_every_5_s_and_modes_stay_tracked(caplog) -> None:  # type: ignore[no-untyped-def]
    from robots.api import JointState
    from telepresence.streams import Stream
    from telepresence.wire import Counters, RobotMode, Telemetry, encode

    clock = HandClock(start=10**12)
    station = StationCore(
        StationConfig(session=7), lambda v, n: ScriptedInput(v, {}, n), clock=clock
    )
    seqs = {Stream.TELEMETRY: 0, Stream.JOINT_STATE: 0}

    def send(message: object, stream: Stream) -> None:
        seqs[stream] += 1
        data = encode(message, stream=stream, session=7, seq=seqs[stream], send_time_ns=0)
        station.receive_datagram(bytes(data), clock.now)

    send(JointState(positions=np.zeros(6), gripper=0.5), Stream.JOINT_STATE)
    with caplog.at_level(logging.WARNING):
        for i in range(2000):  # 20 s: the robot flips between ACTIVE and HOLDING every 10 ms
            assert station.tick(clock.advance(10 * MS)) is not None  # commanding all along
            mode = RobotMode.HOLDING if i % 2 else RobotMode.ACTIVE
            send(Telemetry(mode=mode, counters=Counters()), Stream.TELEMETRY)
    said = [r.getMessage() for r in caplog.records if r.name == "telepresence.station"]
    not_moving = [m for m in said if "although commands are being sent" in m]
    assert 4 <= len(not_moving) <= 5, said  # 20 s, at most one every 5 s
    assert len(said) == 2 * len(not_moving)  # each followed by "active again"
    assert len(station.robot_modes) == 1000  # kept for the summary, then no more
    assert station.summary()["robot_mode"] == "holding"
