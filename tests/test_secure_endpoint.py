"""The robot endpoint in secure mode: only sealed datagrams of opened sessions, from the lease
holder, are ever applied; forged, replayed, truncated and foreign ones are counted."""

from __future__ import annotations

import random

from helpers import MS, HandClock, RecordingDriver, joint_command
from hypothesis import given, settings
from hypothesis import strategies as st

from telepresence.control.lease import ControlLease
from telepresence.endpoint import EndpointConfig, RobotCore, SecureSessions
from telepresence.security import SessionKeys, new_session_secret
from telepresence.streams import Stream
from telepresence.wire import MessageType, Role, encode

ADDR = ("127.0.0.1", 40000)


def secure_core() -> tuple[RobotCore, RecordingDriver, HandClock, SessionKeys, SessionKeys]:
    clock = HandClock(step=1_000)
    driver = RecordingDriver()
    sessions = SecureSessions(ControlLease(2_000 * MS))
    core = RobotCore(driver, EndpointConfig(), clock=clock, secure=sessions)
    core.start(clock.now)
    a = SessionKeys.derive(new_session_secret(), 0xA)
    b = SessionKeys.derive(new_session_secret(), 0xB)
    sessions.add(a)
    sessions.add(b)
    sessions.lease.take(a.session, clock.now)
    return core, driver, clock, a, b


def sealed(keys: SessionKeys, seq: int, *positions: float) -> bytes:
    sealer = keys.sealer(Role.STATION)
    return sealer.seal(joint_command(*(positions or (0.1, 0.2))), stream=Stream.COMMAND, seq=seq,
                       send_time_ns=0)  # fmt: skip


def test_lease_holder_commands_are_applied_and_telemetry_is_sealed() -> None:
    core, driver, clock, a, _ = secure_core()
    core.receive_datagram(sealed(a, 1), ADDR, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert len(driver.applied) == 1
    opener = a.opener(Role.STATION)
    out = [opener.open(d) for d, _ in core.datagrams_to_send()]
    assert {h.type for h, _ in out} >= {MessageType.TELEMETRY, MessageType.JOINT_STATE}
    assert all(h.flags == 1 for h, _ in out)
    assert core.status()["secure"] and core.status()["aead"] == "libsodium"
    plain = RobotCore(RecordingDriver(), EndpointConfig(), clock=clock)
    assert not plain.status()["secure"] and plain.status()["aead"] is None


def test_other_session_cannot_command_without_the_lease() -> None:
    core, driver, clock, _, b = secure_core()
    core.receive_datagram(sealed(b, 1), ADDR, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert driver.applied == [] and core.counters.dropped == 1


def test_plain_forged_foreign_and_replayed_are_never_applied() -> None:
    core, driver, clock, a, _ = secure_core()
    good = sealed(a, 1, 0.3, 0.3)
    plain = bytes(encode(joint_command(0.9, 0.9), stream=Stream.COMMAND, session=a.session,
                         seq=2, send_time_ns=0))  # fmt: skip
    stranger = sealed(SessionKeys.derive(new_session_secret(), 0xC), 1, 0.9, 0.9)
    wrong_key = sealed(SessionKeys.derive(new_session_secret(), a.session), 3, 0.9, 0.9)
    for data in (good, plain, stranger, wrong_key, good, good[:-1], good + b"x"):
        core.receive_datagram(data, ADDR, clock.advance(MS))
        core.tick(clock.advance(MS))
    assert [c.positions[0] for c in driver.applied] == [0.3]  # the first good one only
    assert core.counters.forged == 2  # plain and wrong key
    assert core.counters.unknown_session == 1  # a stranger
    assert core.counters.duplicate == 1 and core.counters.malformed == 2  # cut, extended


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_sealed_datagrams_are_never_applied(data: st.DataObject) -> None:
    core, driver, clock, a, _ = secure_core()
    original = bytearray(sealed(a, 1, 0.5, 0.5))
    flips = data.draw(st.lists(st.integers(0, len(original) * 8 - 1), min_size=1, max_size=4,
                               unique=True))  # fmt: skip
    for bit in flips:
        original[bit // 8] ^= 1 << (bit % 8)
    core.receive_datagram(bytes(original), ADDR, clock.advance(MS))
    core.tick(clock.advance(MS))
    assert driver.applied == []


def test_random_bytes_never_raise_or_apply() -> None:
    core, driver, clock, _, _ = secure_core()
    rng = random.Random(3)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 140)))
        core.receive_datagram(data, ADDR, clock.advance(100_000))
    core.tick(clock.advance(MS))
    assert driver.applied == [] and core.counters.received == 2000


def test_a_session_that_retakes_control_keeps_its_numbering() -> None:
    core, _, clock, a, b = secure_core()
    lease = core.secure.lease  # type: ignore[union-attr]
    core.receive_datagram(sealed(a, 1), ADDR, clock.advance(MS))
    core.tick(clock.advance(MS))
    first = [decode_header_seq(d) for d, _ in core.datagrams_to_send()]
    lease.release(a.session)
    lease.take(b.session, clock.now)
    core.receive_datagram(sealed(b, 1), ADDR, clock.advance(MS))
    core.tick(clock.advance(20 * MS))
    core.datagrams_to_send()
    lease.release(b.session)
    lease.take(a.session, clock.now)
    core.receive_datagram(sealed(a, 2), ADDR, clock.advance(MS))
    core.tick(clock.advance(20 * MS))
    again = [decode_header_seq(d) for d, _ in core.datagrams_to_send()]
    # a's telemetry numbering continues: a nonce is never reused under a's key
    assert min(again) > max(first)


def decode_header_seq(data: bytes) -> int:
    from telepresence.wire import Header

    header, _ = Header.parse(data, flags_expected=1)
    return int(header.seq)


def test_replayed_or_rejected_commands_do_not_renew_the_lease() -> None:
    core, _, clock, a, _ = secure_core()
    lease = core.secure.lease  # type: ignore[union-attr]
    first = sealed(a, 1)
    core.receive_datagram(first, ADDR, clock.advance(MS))  # renews: 2 s from now
    renewed_at = clock.now
    core.receive_datagram(first, ADDR, clock.advance(1_900 * MS))  # replayed
    nan = sealed(a, 2, float("nan"), 0.0)
    core.receive_datagram(nan, ADDR, clock.advance(50 * MS))  # rejected
    remaining = lease.remaining_ns(clock.now)
    assert remaining is not None and remaining <= 2_000 * MS - (clock.now - renewed_at)
    assert core.counters.duplicate == 1 and core.counters.rejected == 1


def test_a_closed_sessions_pending_command_is_never_applied() -> None:
    core, driver, clock, a, _ = secure_core()
    core.receive_datagram(sealed(a, 1), ADDR, clock.advance(MS))
    core.secure.remove(a.session)  # type: ignore[union-attr]
    core.forget_session(a.session)
    core.tick(clock.advance(MS))
    assert driver.applied == []
