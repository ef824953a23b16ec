"""The control plane's sans-IO core: sessions, lease contention, reservations, expiry."""

from __future__ import annotations

import pytest

from telepresence.control.lease import ControlLease
from telepresence.control.messages import (
    Bye,
    ClockReply,
    ClockRequest,
    Error,
    Grant,
    Hello,
    LeaseRelease,
    LeaseState,
    LeaseTake,
    Refuse,
    Reserve,
    Welcome,
    decode_message,
    encode_message,
)
from telepresence.control.server import ControlState
from telepresence.exceptions import RemoteProtocolError

S = 1_000_000_000
A, B = b"station-a", b"station-b"


def state() -> ControlState:
    return ControlState(
        manifest={"robot_id": "r"},
        data_addresses=["127.0.0.1:7000"],
        control_rate_hz=500,
        secure=True,
        link_capacity_bps=100e6,
        lease_ttl_ns=2 * S,
        session_timeout_ns=10 * S,
    )


def hello(st: ControlState, who: bytes, now: int = 0, role: str = "control") -> Welcome:
    replies = st.handle(who, who.decode(), Hello(station=who.decode(), role=role), now)
    welcome = replies[0][1]
    assert isinstance(welcome, Welcome)
    return welcome


def test_hello_opens_a_session_with_a_fresh_secret() -> None:
    st = state()
    opened = []
    st.on_open = opened.append
    w1, w2 = hello(st, A), hello(st, B)
    assert w1.session != w2.session and len(bytes.fromhex(w1.secret)) == 32
    assert w1.secret != w2.secret and w1.manifest == {"robot_id": "r"}
    assert [s.session for s in opened] == [w1.session, w2.session]


def test_requests_before_hello_are_refused() -> None:
    (reply,) = state().handle(A, "a", LeaseTake(), 0)
    assert isinstance(reply[1], Error) and "before hello" in reply[1].reason


def test_two_stations_contend_for_the_lease() -> None:
    st = state()
    wa, wb = hello(st, A), hello(st, B)
    replies = st.handle(A, "a", LeaseTake(), 1)
    assert {who: m.you_hold for who, m in replies if isinstance(m, LeaseState)} == {
        A: True,
        B: False,
    }
    (refused,) = st.handle(B, "b", LeaseTake(), 2)
    assert isinstance(refused[1], Refuse) and refused[1].code == "lease_held"
    assert "held by station-a" in refused[1].reason
    # renewal keeps it; release hands it over
    st.handle(A, "a", LeaseTake(), 1 * S)
    assert st.lease.holder == wa.session
    st.handle(A, "a", LeaseRelease(), 1 * S + 1)
    replies = st.handle(B, "b", LeaseTake(), 1 * S + 2)
    assert st.lease.holder == wb.session
    assert any(isinstance(m, LeaseState) and m.you_hold for who, m in replies if who == B)


def test_lease_expires_when_not_renewed() -> None:
    st = state()
    hello(st, A)
    st.handle(A, "a", LeaseTake(), 0)
    assert st.expire(2 * S - 1) == []
    updates = st.expire(2 * S)
    assert st.lease.holder is None and updates and all(m.holder is None for _, m in updates)


def test_observer_cannot_take_control() -> None:
    st = state()
    hello(st, A, role="observe")
    (reply,) = st.handle(A, "a", LeaseTake(), 0)
    assert isinstance(reply[1], Refuse) and reply[1].code == "observer"


def test_clock_reply_carries_the_robot_stamps() -> None:
    st = state()
    hello(st, A)
    (reply,) = st.handle(A, "a", ClockRequest(t1=5), 123)
    assert reply[1] == ClockReply(t1=5, t2=123, t3=123)


def test_reservation_over_capacity_is_refused_with_the_reason() -> None:
    st = state()
    hello(st, A)
    ok = st.handle(
        A,
        "a",
        Reserve(
            stream=1, traffic_class="control", rate_bps=1e6, burst_bytes=3000, max_packet_bytes=200
        ),
        0,
    )
    assert isinstance(ok[0][1], Grant) and ok[0][1].dscp == 46
    (refused,) = st.handle(
        A,
        "a",
        Reserve(
            stream=3, traffic_class="video", rate_bps=95e6, burst_bytes=60000, max_packet_bytes=1200
        ),
        0,
    )
    assert isinstance(refused[1], Refuse) and refused[1].code == "over capacity"
    assert "video stream 3 asks 95 Mbit/s" in refused[1].reason


def test_bye_releases_lease_and_reservations() -> None:
    st = state()
    closed = []
    st.on_close = closed.append
    w = hello(st, A)
    st.handle(A, "a", LeaseTake(), 0)
    st.handle(
        A,
        "a",
        Reserve(
            stream=3, traffic_class="video", rate_bps=50e6, burst_bytes=60000, max_packet_bytes=1200
        ),
        0,
    )
    st.handle(A, "a", Bye(), 1)
    assert st.lease.holder is None and not st.sessions and closed[0].session == w.session
    assert st.admission["up"].reserved_bps == 0


def test_silent_sessions_are_forgotten() -> None:
    st = state()
    hello(st, A)
    st.expire(10 * S + 1)
    assert not st.sessions


def test_lease_core_rules() -> None:
    lease = ControlLease(ttl_ns=10)
    assert lease.take(1, 0).granted and not lease.take(2, 5).granted
    assert lease.touch(1, 9) and lease.remaining_ns(9) == 10
    assert not lease.touch(2, 9)
    assert lease.take(2, 19).granted  # lapsed at 19
    assert not lease.release(1) and lease.release(2) and lease.holder is None


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"hello"], "2 frames"),
        ([b"nope", b"{}"], "unknown control message"),
        ([b"clock", b"not json"], "not JSON"),
        ([b"clock", b"[1]"], "JSON object"),
        ([b"clock", b"{}"], "missing field 't1'"),
        ([b"clock", b'{"t1": 1, "x": 2}'], "unknown field"),
        ([b"clock", b'{"t1": "1"}'], "clock.t1"),
    ],
)
def test_malformed_control_messages_name_the_problem(frames: list[bytes], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_message(frames)


def test_every_message_round_trips() -> None:
    for m in (
        Hello(station="s"),
        LeaseState(holder=5, you_hold=True, expires_in_ms=3.5),
        Reserve(stream=1, traffic_class="video", rate_bps=1e6, burst_bytes=1, max_packet_bytes=1),
    ):
        assert decode_message(encode_message(m)) == m


def test_observers_reserve_nothing_and_a_released_lease_frees_reservations() -> None:
    st = state()
    hello(st, A)
    hello(st, B, role="observe")
    (refused,) = st.handle(
        B,
        "b",
        Reserve(
            stream=1, traffic_class="control", rate_bps=1e6, burst_bytes=3000, max_packet_bytes=200
        ),
        0,
    )
    assert isinstance(refused[1], Refuse) and refused[1].code == "observer"
    st.handle(A, "a", LeaseTake(), 0)
    st.handle(
        A,
        "a",
        Reserve(
            stream=1, traffic_class="control", rate_bps=1e6, burst_bytes=3000, max_packet_bytes=200
        ),
        0,
    )
    assert st.admission["up"].reserved_bps > 0
    st.handle(A, "a", LeaseRelease(), 1)
    assert st.admission["up"].reserved_bps == 0  # the next controller can reserve stream 1
