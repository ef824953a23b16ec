"""The robot's `forged` and `unknown_session` counters travel in TELEMETRY: the wire layout, the
secure robot that fills them, and the station that shows them in its summary."""

from __future__ import annotations

import struct

import pytest
from helpers import MS, HandClock, RecordingDriver, joint_command
from hypothesis import given
from hypothesis import strategies as st

from telepresence.control.lease import ControlLease
from telepresence.endpoint import EndpointConfig, RobotCore, SecureSessions
from telepresence.exceptions import DecodeError
from telepresence.inputs import ScriptedInput
from telepresence.security import SessionKeys, new_session_secret
from telepresence.station import StationConfig, StationCore
from telepresence.streams import Stream
from telepresence.wire import (
    HEADER_SIZE,
    Counters,
    Heartbeat,
    MessageType,
    RobotMode,
    Role,
    Telemetry,
    decode,
    encode,
)

ADDR = ("127.0.0.1", 40000)
U32 = st.integers(0, 2**32 - 1)
OLD_FIELDS = (
    "received", "malformed", "duplicate", "stale", "dropped",
    "superseded", "rejected", "clamped", "applied",
)  # fmt: skip


def telemetry_datagram(counters: Counters) -> bytes:
    t = Telemetry(mode=RobotMode.ACTIVE, counters=counters)
    return bytes(encode(t, stream=Stream.TELEMETRY, session=7, seq=1, send_time_ns=0))


# ---------------------------------------------------------------------------------------------
# The wire layout


def test_the_two_counters_are_appended_after_the_old_nine() -> None:
    assert (*OLD_FIELDS, "forged", "unknown_session") == Counters.FIELDS
    assert list(Counters().as_dict()) == list(Counters.FIELDS)


def test_forged_and_unknown_session_are_the_last_two_u32_of_a_100_byte_body() -> None:
    data = telemetry_datagram(Counters(applied=0x11, forged=0x01020304, unknown_session=0xA0B0C0D))
    assert len(data) == HEADER_SIZE + 100
    assert struct.unpack_from("<H", data, 12) == (100,)  # the header's body length
    assert struct.unpack_from("<3I", data, HEADER_SIZE + 88) == (0x11, 0x01020304, 0xA0B0C0D)


@given(st.builds(Counters, **dict.fromkeys(Counters.FIELDS, U32)))
def test_counters_round_trip(counters: Counters) -> None:
    data = telemetry_datagram(counters)
    header, got = decode(data)
    assert header.type is MessageType.TELEMETRY
    assert got.counters == counters
    assert telemetry_datagram(got.counters) == data  # one encoding


def test_forged_and_unknown_session_wrap_at_2_32() -> None:
    _, got = decode(telemetry_datagram(Counters(forged=2**32 + 3, unknown_session=-1)))
    assert (got.counters.forged, got.counters.unknown_session) == (3, 2**32 - 1)


def test_an_old_92_byte_body_is_malformed() -> None:
    new = telemetry_datagram(Counters(received=5, applied=4))
    old = bytearray(new[: HEADER_SIZE + 92])  # the layout before forged and unknown_session
    struct.pack_into("<H", old, 12, 92)
    with pytest.raises(DecodeError, match=r"TELEMETRY body length is invalid: 92 != 100"):
        decode(bytes(old))

    station = StationCore(
        StationConfig(session=7), lambda view, now: ScriptedInput(view, {}, now), clock=HandClock()
    )
    station.receive_datagram(bytes(old), 0)
    assert station.counters["malformed"] == 1 and station.last_telemetry is None
    assert station.summary()["robot"] is None


# ---------------------------------------------------------------------------------------------
# A secure robot reports them, the station shows them


def secure_pair() -> tuple[RobotCore, StationCore, HandClock, SessionKeys]:
    clock = HandClock(step=1_000)
    sessions = SecureSessions(ControlLease(2_000 * MS))
    robot = RobotCore(RecordingDriver(), EndpointConfig(), clock=clock, secure=sessions)
    robot.start(clock.now)
    keys = SessionKeys.derive(new_session_secret(), 0xA)
    sessions.add(keys)
    sessions.lease.take(keys.session, clock.now)
    station = StationCore(
        StationConfig(),
        lambda view, now: ScriptedInput(view, {}, now),
        clock=clock,
        keys=keys,
    )
    return robot, station, clock, keys


def sealed_command(keys: SessionKeys, seq: int) -> bytes:
    return keys.sealer(Role.STATION).seal(
        joint_command(0.9, 0.9), stream=Stream.COMMAND, seq=seq, send_time_ns=0
    )


def deliver_to_station(robot: RobotCore, station: StationCore, now: int) -> None:
    for data, _addr in robot.datagrams_to_send():
        station.receive_datagram(bytes(data), now)


def test_a_secure_robot_reports_forged_and_unknown_session_and_the_station_shows_them() -> None:
    robot, station, clock, keys = secure_pair()
    robot.receive_datagram(station.heartbeat(clock.now), ADDR, clock.advance(MS))

    genuine = bytearray(sealed_command(keys, 2))
    genuine[-1] ^= 0x01  # the tag no longer verifies
    attacks = [
        bytes(encode(joint_command(0.9, 0.9), stream=Stream.COMMAND, session=keys.session,
                     seq=3, send_time_ns=0)),  # plain, while security is on: forged
        sealed_command(SessionKeys.derive(new_session_secret(), keys.session), 4),  # wrong key
        bytes(genuine),  # altered on the path: forged
        sealed_command(SessionKeys.derive(new_session_secret(), 0xC), 1),  # unknown session
        sealed_command(SessionKeys.derive(new_session_secret(), 0xD), 1),  # unknown session
    ]  # fmt: skip
    for data in attacks:
        robot.receive_datagram(data, ADDR, clock.advance(MS))
    robot.tick(clock.advance(MS))
    deliver_to_station(robot, station, clock.now)

    assert station.last_telemetry is not None
    got = station.last_telemetry.counters
    assert (got.forged, got.unknown_session) == (3, 2)
    assert got == robot.counters  # every counter, as the robot had it when it reported
    summary = station.summary()
    assert summary["robot"]["forged"] == 3 and summary["robot"]["unknown_session"] == 2
    assert summary["robot"]["received"] == 6  # the heartbeat and the five refused datagrams
    assert summary["robot"] == robot.status()["counters"]
    assert summary["station"]["forged"] == 0  # the station itself was sent nothing forged

    # More of them later: the next report carries the new counts.
    for seq in range(5, 9):
        robot.receive_datagram(
            sealed_command(SessionKeys.derive(new_session_secret(), keys.session), seq),
            ADDR,
            clock.advance(MS),
        )
    robot.tick(clock.advance(1_000 * MS))  # past the telemetry period
    deliver_to_station(robot, station, clock.now)
    assert station.summary()["robot"]["forged"] == 7
    assert station.summary()["robot"]["unknown_session"] == 2


def test_status_keys_are_unchanged_and_read_the_one_set_of_counters() -> None:
    robot, _station, clock, keys = secure_pair()
    robot.receive_datagram(sealed_command(SessionKeys.derive(new_session_secret(), 0xC), 1),
                           ADDR, clock.advance(MS))  # fmt: skip
    plain = encode(Heartbeat(role=Role.STATION), stream=Stream.STATION_HEARTBEAT,
                   session=keys.session, seq=1, send_time_ns=0)  # fmt: skip
    robot.receive_datagram(bytes(plain), ADDR, clock.advance(MS))  # plain: forged
    status = robot.status()["counters"]
    assert list(status) == [*OLD_FIELDS, "forged", "unknown_session"]
    assert status == robot.counters.as_dict()
    assert (robot.counters.forged, robot.counters.unknown_session) == (1, 1)


def test_an_insecure_robot_reports_zero_and_counts_sealed_datagrams_as_malformed() -> None:
    clock = HandClock(step=1_000)
    robot = RobotCore(RecordingDriver(), EndpointConfig(), clock=clock)
    robot.start(clock.now)
    keys = SessionKeys.derive(new_session_secret(), 0xA)
    robot.receive_datagram(sealed_command(keys, 1), ADDR, clock.advance(MS))
    heartbeat = StationCore(
        StationConfig(session=0xB), lambda view, now: ScriptedInput(view, {}, now), clock=clock
    )
    robot.receive_datagram(bytes(heartbeat.heartbeat(clock.now)), ADDR, clock.advance(MS))
    robot.tick(clock.advance(MS))
    telemetry = [
        m for (h, m) in (decode(d) for d, _ in robot.datagrams_to_send())
        if h.type is MessageType.TELEMETRY
    ]  # fmt: skip
    assert telemetry
    c = telemetry[-1].counters
    assert (c.malformed, c.forged, c.unknown_session) == (1, 0, 0)
