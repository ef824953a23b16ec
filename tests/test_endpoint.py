"""Robot endpoint core, pumped by hand: admission, latest-wins, staleness, deadman, telemetry."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import MS, HandClock, RecordingDriver, joint_command

from robots.api import BaseVelocityCommand
from telepresence.endpoint import EndpointConfig, RobotCore
from telepresence.streams import Stream
from telepresence.wire import Heartbeat, MessageType, RobotMode, Role, decode, encode

STATION = ("127.0.0.1", 40000)
OTHER = ("127.0.0.1", 40001)
SESSION = 0x1234


def make_core(**kw: object) -> tuple[RobotCore, RecordingDriver, HandClock]:
    clock = HandClock(step=1_000)  # every stamp taken inside a call moves time by 1 µs
    driver = RecordingDriver(delay_ns=int(kw.pop("delay_ns", 0)))  # type: ignore[call-overload]
    core = RobotCore(driver, EndpointConfig(**kw), clock=clock)  # type: ignore[arg-type]
    core.start(clock.now)
    return core, driver, clock


def cmd(seq: int, *positions: float, session: int = SESSION, sent: int = 0, **kw: object) -> bytes:
    message = joint_command(*(positions or (0.1, 0.2)), **kw)  # type: ignore[arg-type]
    return bytes(
        encode(message, stream=Stream.COMMAND, session=session, seq=seq, send_time_ns=sent)
    )


def sent_messages(core: RobotCore) -> list[tuple[MessageType, object, object]]:
    return [
        (decode(d).header.type, decode(d).message, addr) for d, addr in core.datagrams_to_send()
    ]


def test_command_is_applied_on_next_tick_and_reported() -> None:
    core, driver, clock = make_core()
    t_rx = clock.advance(MS)
    core.receive_datagram(cmd(1, 0.1, 0.2, sent=t_rx - 100_000), STATION, t_rx)
    assert driver.applied == []  # nothing happens before the tick
    core.tick(clock.advance(MS))
    assert len(driver.applied) == 1
    np.testing.assert_allclose(driver.applied[0].positions, [0.1, 0.2])
    out = sent_messages(core)
    types = [t for t, _, _ in out]
    assert MessageType.JOINT_STATE in types and MessageType.TELEMETRY in types
    telemetry = next(m for t, m, _ in out if t is MessageType.TELEMETRY)
    assert all(addr == STATION for _, _, addr in out)
    assert telemetry.mode is RobotMode.ACTIVE
    assert telemetry.command_seq == 1 and telemetry.command_sent_ns == t_rx - 100_000
    assert telemetry.received_ns == t_rx
    assert t_rx < telemetry.decoded_ns < telemetry.applied_ns <= telemetry.actuated_ns
    assert telemetry.actuated_known
    assert telemetry.counters.applied == 1 and telemetry.counters.received == 1


def test_actuation_time_comes_from_the_driver() -> None:
    core, driver, clock = make_core(delay_ns=3 * MS, telemetry_rate_hz=10_000)
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    core.datagrams_to_send()
    applied_at = driver.calls[-1][1]
    for _ in range(4):
        core.tick(clock.advance(MS))
    telemetry = [m for t, m, _ in sent_messages(core) if t is MessageType.TELEMETRY][-1]
    assert telemetry.actuated_known
    assert telemetry.actuated_ns == applied_at + 3 * MS


def test_latest_wins_and_older_is_stale() -> None:
    core, driver, clock = make_core()
    now = clock.advance(MS)
    core.receive_datagram(cmd(5, 0.5, 0.5), STATION, now)
    core.receive_datagram(cmd(7, 0.7, 0.7), STATION, now)
    core.receive_datagram(cmd(6, 0.6, 0.6), STATION, now)  # reordered: older than 7
    core.receive_datagram(cmd(7, 0.7, 0.7), STATION, now)  # duplicate
    core.tick(clock.advance(MS))
    assert [c.positions[0] for c in driver.applied] == [0.7]
    c = core.counters
    assert (c.superseded, c.stale, c.duplicate, c.applied) == (1, 1, 1, 1)
    core.receive_datagram(cmd(3, 0.3, 0.3), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert len(driver.applied) == 1 and core.counters.stale == 2


def test_command_older_than_max_age_is_never_applied() -> None:
    core, driver, clock = make_core(max_command_age_s=0.010, hold_after_s=0.050)
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(10 * MS))  # exactly the age limit: stale
    assert driver.applied == [] and core.counters.stale == 1


def test_send_time_counts_when_clocks_are_comparable() -> None:
    core, driver, clock = make_core(max_command_age_s=0.010, sender_clock_offset_ns=0)
    now = clock.advance(MS)
    core.receive_datagram(cmd(1, sent=now - 20 * MS), STATION, now)  # 20 ms on the network
    core.tick(clock.advance(MS))
    assert driver.applied == [] and core.counters.stale == 1


@pytest.mark.parametrize(
    "positions", [(float("nan"), 0.0), (float("inf"), 0.0), (0.0,), (0.0, 0.0, 0.0)]
)
def test_invalid_values_are_rejected(positions: tuple[float, ...]) -> None:
    core, driver, clock = make_core()
    core.receive_datagram(cmd(1, *positions), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert driver.applied == [] and core.counters.rejected == 1


def test_unsupported_mode_is_rejected() -> None:
    core, driver, clock = make_core()
    data = encode(
        BaseVelocityCommand(vx=1.0), stream=Stream.COMMAND, session=SESSION, seq=1, send_time_ns=0
    )
    core.receive_datagram(bytes(data), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert driver.applied == [] and core.counters.rejected == 1


def test_out_of_limits_is_clamped_and_counted() -> None:
    core, driver, clock = make_core()
    core.receive_datagram(cmd(1, 5.0, -0.5, gripper=3.0), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    np.testing.assert_allclose(driver.applied[0].positions, [1.0, -0.5])
    assert driver.applied[0].gripper == 1.0
    assert core.counters.clamped == 1 and core.counters.applied == 1


def test_deadman_holds_at_deadline_then_stops_then_resumes() -> None:
    core, driver, clock = make_core(hold_after_s=0.050, stop_after_s=0.500)
    t_rx = clock.advance(MS)
    core.receive_datagram(cmd(1), STATION, t_rx)
    clock.step = 0  # ticks at exact times from here
    core.tick(t_rx + MS)
    assert core.mode is RobotMode.ACTIVE
    core.tick(t_rx + 50 * MS - 1)
    assert "hold" not in driver.names()
    core.tick(t_rx + 50 * MS)
    assert core.mode is RobotMode.HOLDING and driver.names().count("hold") == 1
    core.tick(t_rx + 499 * MS)
    assert "stop" not in driver.names()
    core.tick(t_rx + 500 * MS)
    assert core.mode is RobotMode.STOPPED and driver.names().count("stop") == 1
    core.tick(t_rx + 900 * MS)
    assert driver.names().count("stop") == 1  # once, on the transition
    core.receive_datagram(cmd(2), STATION, t_rx + 901 * MS)
    core.tick(t_rx + 902 * MS)
    assert core.mode is RobotMode.ACTIVE and len(driver.applied) == 2


def test_other_session_is_dropped_while_active_and_takes_over_when_not() -> None:
    core, driver, clock = make_core()
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    core.receive_datagram(cmd(1, 0.9, 0.9, session=99), OTHER, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert core.counters.dropped == 1 and len(driver.applied) == 1 and core.session == SESSION
    core.tick(clock.advance(60 * MS))
    assert core.mode is RobotMode.HOLDING
    core.receive_datagram(cmd(1, 0.9, 0.9, session=99), OTHER, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert core.session == 99 and core.peer == OTHER
    first = [decode(d).header for d, _ in core.datagrams_to_send()]
    core.tick(clock.advance(10 * MS))
    sent = [decode(d).header for d, _ in core.datagrams_to_send()] + first
    telemetry = [h for h in sent if h.type is MessageType.TELEMETRY and h.session == 99]
    assert telemetry and min(h.seq for h in telemetry) == 1  # numbering restarts per session
    assert driver.applied[-1].positions[0] == pytest.approx(0.9)


def test_heartbeat_gets_telemetry_without_commanding() -> None:
    core, driver, clock = make_core()
    hb = encode(
        Heartbeat(role=Role.STATION),
        stream=Stream.STATION_HEARTBEAT,
        session=SESSION,
        seq=1,
        send_time_ns=0,
    )
    core.receive_datagram(bytes(hb), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    out = sent_messages(core)
    kinds = {t for t, _, _ in out}
    assert kinds == {MessageType.HEARTBEAT, MessageType.JOINT_STATE, MessageType.TELEMETRY}
    telemetry = next(m for t, m, _ in out if t is MessageType.TELEMETRY)
    assert telemetry.mode is RobotMode.STOPPED and telemetry.command_seq == 0
    answer = next(m for t, m, _ in out if t is MessageType.HEARTBEAT)
    assert answer.role is Role.ROBOT  # the heartbeat is answered on its path
    assert driver.applied == []


def test_heartbeats_are_answered_on_every_path_at_most_every_50_ms() -> None:
    core, _, clock = make_core()
    path_a, path_b = ("10.0.0.1", 1), ("10.0.1.1", 1)
    for seq in range(1, 6):  # 5 heartbeats 10 ms apart, each arriving on both paths
        data = bytes(
            encode(
                Heartbeat(role=Role.STATION),
                stream=Stream.STATION_HEARTBEAT,
                session=SESSION,
                seq=seq,
                send_time_ns=0,
            )
        )
        now = clock.advance(10 * MS)
        core.receive_datagram(data, path_a, now)
        core.receive_datagram(data, path_b, now)
    answers = [a for t, _, a in sent_messages(core) if t is MessageType.HEARTBEAT]
    assert sorted(answers) == [path_a, path_b]  # once per path within 50 ms
    assert core.counters.duplicate == 5  # the copies on the second path


def test_telemetry_follows_its_rate() -> None:
    core, _, clock = make_core(telemetry_rate_hz=100, control_rate_hz=1000)
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    clock.step = 0
    n = 0
    for _ in range(100):  # 100 ms of 1 kHz ticks
        core.tick(clock.advance(MS))
        n += sum(1 for t, _, _ in sent_messages(core) if t is MessageType.TELEMETRY)
    assert n == 10


def test_malformed_and_random_datagrams_never_raise() -> None:
    core, driver, clock = make_core()
    rng = random.Random(7)
    good = cmd(1)
    for i in range(3000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:
            b = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
            data = bytes(b)
        core.receive_datagram(data, STATION, clock.advance(1000))
        core.tick(clock.advance(1000))
    c = core.counters
    assert c.received == 3000
    assert c.malformed > 2000
    for applied in driver.applied:  # whatever got through was a valid, in-limits command
        assert np.all(np.isfinite(applied.positions)) and np.all(np.abs(applied.positions) <= 1)


def test_driver_failure_holds_and_keeps_running() -> None:
    clock = HandClock(step=1_000)
    driver = RecordingDriver(fail_apply=True)
    core = RobotCore(driver, EndpointConfig(), clock=clock)
    core.start(clock.now)
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert core.driver_errors == 1 and driver.names()[-1] == "hold"
    core.receive_datagram(cmd(2), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert core.driver_errors == 2


def test_unavailable_driver_applies_nothing_reports_holding_and_recovers(caplog) -> None:  # type: ignore[no-untyped-def]
    core, driver, clock = make_core()
    hb = encode(Heartbeat(role=Role.STATION), stream=Stream.STATION_HEARTBEAT, session=SESSION,
                seq=1, send_time_ns=0)  # fmt: skip
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert len(driver.applied) == 1 and core.mode is RobotMode.ACTIVE and core.driver_available
    driver.gone = True
    core.receive_datagram(cmd(2), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))  # apply fails, then the hold after it, then read
    assert core.driver_errors == 3 and driver.names()[-2:] == ["apply", "hold"]
    assert not core.driver_available and core.mode is RobotMode.HOLDING
    sent_messages(core)
    for seq in range(3, 8):  # commands keep arriving: each is tried once, none gets through
        core.receive_datagram(cmd(seq), STATION, clock.advance(MS))
        core.tick(clock.advance(MS))
    assert driver.names()[-5:] == ["apply"] * 5 and driver.names().count("hold") == 1
    assert len(driver.applied) == 1 and core.counters.applied == 1
    assert core.counters.dropped == 6  # commands 2-7: none reached the robot
    core.receive_datagram(bytes(hb), STATION, clock.advance(MS))
    out = sent_messages(core)
    telemetry = [m for t, m, _ in out if t is MessageType.TELEMETRY]
    answers = [m for t, m, _ in out if t is MessageType.HEARTBEAT]
    assert telemetry and all(t.mode is RobotMode.HOLDING for t in telemetry)
    assert answers and answers[-1].mode is RobotMode.HOLDING
    status = core.status()
    assert status["mode"] == "holding" and status["driver"]["available"] is False
    assert status["driver"]["failed_call"] == "apply" and status["driver_errors"] == 3 + 2 * 5
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "device gone" in failures[0].getMessage()  # said once
    driver.gone = False
    core.receive_datagram(cmd(8), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))  # the next command is the probe: it is applied
    assert core.driver_available and len(driver.applied) == 2 and core.mode is RobotMode.ACTIVE
    assert any("works again after" in r.getMessage() for r in caplog.records)
    assert core.status()["driver"] == {"name": "RecordingDriver", "available": True,
                                       "failed_call": None}  # fmt: skip


def test_a_driver_whose_apply_keeps_failing_is_reported_holding(caplog) -> None:  # type: ignore[no-untyped-def]
    clock = HandClock(step=1_000)
    driver = RecordingDriver(fail_apply=True)  # every apply fails, every read works
    core = RobotCore(driver, EndpointConfig(telemetry_rate_hz=100), clock=clock)
    core.start(clock.now)
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))  # a peer for the telemetry
    for seq in range(2, 502):  # 1 s of commands at 500 Hz
        core.receive_datagram(cmd(seq), STATION, clock.advance(MS))
        core.tick(clock.advance(MS))
    assert core.driver_errors == 500 and core.counters.dropped == 500 and core.counters.applied == 0
    assert driver.names().count("hold") == 1  # once, when it first failed
    assert core.mode is RobotMode.HOLDING and not core.driver_available
    telemetry = [m for t, m, _ in sent_messages(core) if t is MessageType.TELEMETRY]
    assert len(telemetry) >= 90 and all(t.mode is RobotMode.HOLDING for t in telemetry)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "apply failed" in warnings[0]


def test_a_failing_read_holds_the_robot_and_drops_commands_untried(caplog) -> None:  # type: ignore[no-untyped-def]
    core, driver, clock = make_core()
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    driver.fail_read = True
    core.tick(clock.advance(MS))
    assert driver.names()[-1] == "hold" and not core.driver_available
    for seq in range(2, 12):
        core.receive_datagram(cmd(seq), STATION, clock.advance(MS))
        core.tick(clock.advance(MS))
    assert driver.names().count("apply") == 1 and core.counters.dropped == 10
    driver.fail_read = False
    core.tick(clock.advance(MS))
    assert core.driver_available
    core.receive_datagram(cmd(12), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert driver.names().count("apply") == 2 and core.mode is RobotMode.ACTIVE


def test_an_outage_right_after_a_logged_failure_is_still_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    core, driver, clock = make_core()
    clock.step = 0
    driver.fail_apply = True
    core.receive_datagram(cmd(1), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))  # a one-command failure, logged ...
    driver.fail_apply = False
    core.receive_datagram(cmd(2), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))  # ... and over
    driver.gone = True  # 10 ms later, a long outage of the same call
    for seq in range(3, 1003):
        core.receive_datagram(cmd(seq), STATION, clock.advance(MS))
        core.tick(clock.advance(MS))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("apply failing for" in m for m in said), said
    driver.gone = False
    core.receive_datagram(cmd(1003), STATION, clock.advance(MS))
    core.tick(clock.advance(MS))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("works again after" in m for m in said) == 2, said


def test_close_stops_and_closes_driver() -> None:
    core, driver, _ = make_core()
    core.close()
    assert driver.names()[-2:] == ["stop", "close"]
