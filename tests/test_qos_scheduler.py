"""The sender's scheduler with a hand clock: strict priority, policing, pacing, counters."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telepresence.exceptions import ConfigError
from telepresence.qos import (
    DROPPED,
    Grant,
    Scheduler,
    SchedulerConfig,
    StreamSpec,
    TrafficClass,
)
from telepresence.qos.bucket import NANOBITS_PER_BYTE

M = 1_000_000
MS = 1_000_000
US = 1_000
CONTROL, VIDEO, BULK = 1, 3, 5

Packet = tuple[int, int, int, int]  # (stream, seq, enqueued at, size)
Sent = tuple[int, Packet, int, int]  # (sent at, packet, size, tos)


def grant(
    stream: int,
    cls: TrafficClass,
    rate: int,
    burst: int = 3000,
    size: int = 1200,
) -> Grant:
    return Grant(
        spec=StreamSpec(
            stream=stream,
            traffic_class=cls,
            rate_bps=rate,
            burst_bytes=burst,
            max_packet_bytes=size,
        ),
        dscp=cls.dscp,
    )


def scheduler(capacity: int = 100 * M, *grants: Grant, **config: object) -> Scheduler[Packet]:
    s: Scheduler[Packet] = Scheduler(SchedulerConfig(capacity_bps=capacity, **config))  # type: ignore[arg-type]
    for g in grants:
        s.add(g)
    return s


def drive(s: Scheduler[Packet], offers: Iterable[tuple[int, int, int]]) -> list[Sent]:
    """Offer (time, stream, size) in time order, dequeue whenever the scheduler says; the way
    the UDP adapter runs it. Returns what left, with the time it left."""
    pending = sorted(offers)
    sent: list[Sent] = []
    i, now, seq = 0, 0, 0
    for _ in range(10 * (len(pending) + len(s)) + 10):
        nt = s.next_time()
        to = pending[i][0] if i < len(pending) else None
        if nt is None and to is None:
            return sent
        if to is not None and (nt is None or to <= max(nt, now)):
            now = to
            while i < len(pending) and pending[i][0] == now:
                _, stream, size = pending[i]
                seq += 1
                pkt = (stream, seq, now, size)
                s.enqueue(pkt, size, stream, now)
                i += 1
        else:
            assert nt is not None
            now = max(now, nt)
        sent.extend((now, p, p[3], tos) for p, tos in s.dequeue(now))
    raise AssertionError("the scheduler did not settle")


def periodic(
    stream: int, size: int, period: int, until: int, start: int = 0
) -> list[tuple[int, int, int]]:
    return [(t, stream, size) for t in range(start, until, period)]


def max_window_excess(events: list[tuple[int, int]], rate: int) -> float:
    """The largest (bytes sent in [t_i, t_j]) - rate * (t_j - t_i) over every window, in bytes:
    with prefix sums, max over j of (P(j+1) - r t_j) - min over i <= j of (P(i) - r t_i)."""
    worst = 0
    lowest = None
    total = 0  # nanobits sent before the current event
    for t, size in sorted(events):
        start = total - rate * t
        lowest = start if lowest is None or start < lowest else lowest
        total += size * NANOBITS_PER_BYTE
        worst = max(worst, total - rate * t - lowest)
    return worst / NANOBITS_PER_BYTE


# -- config -----------------------------------------------------------------------------------


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="capacity_bps must be within 1"):
        SchedulerConfig(capacity_bps=0)
    with pytest.raises(ConfigError, match=r"max_delay_ns\[video\] must be within 0..1000000000"):
        SchedulerConfig(capacity_bps=M, max_delay_ns={TrafficClass.VIDEO: -1})
    with pytest.raises(ConfigError, match="queue_packets must be within 1"):
        SchedulerConfig(capacity_bps=M, queue_packets=0)
    c = SchedulerConfig(capacity_bps=M, max_delay_ns={TrafficClass.BULK: 0})
    assert c.max_delay_ns[TrafficClass.BULK] == 0
    assert c.max_delay_ns[TrafficClass.VIDEO] == 10 * MS


def test_max_packet_must_fit_the_pacer() -> None:
    s = scheduler(100 * M)
    with pytest.raises(ConfigError, match=r"video stream 3: max packet 9000 B is larger than"):
        s.add(grant(3, TrafficClass.VIDEO, M, 9000, 9000))


# -- strict priority --------------------------------------------------------------------------


def test_control_behind_1000_video_packets_goes_out_first() -> None:
    s = scheduler(
        100 * M,
        grant(CONTROL, TrafficClass.CONTROL, M),
        grant(VIDEO, TrafficClass.VIDEO, 50 * M, 1_200_000),
    )
    for n in range(1000):
        assert s.enqueue((VIDEO, n, 0, 1200), 1200, VIDEO, 0)
    assert s.enqueue((CONTROL, 0, 0, 100), 100, CONTROL, 0)
    out = s.dequeue(0)
    assert out[0] == ((CONTROL, 0, 0, 100), TrafficClass.CONTROL.tos)
    assert [p[0] for p, _ in out[1:]] == [VIDEO, VIDEO]  # then the pace burst of video
    # and in the middle of the paced video, a new control packet leaves at once
    sent = drive(s, [(5 * MS + 7, CONTROL, 100)])
    first_after = next(x for x in sent if x[0] >= 5 * MS + 7)
    assert first_after[1][0] == CONTROL and first_after[0] == 5 * MS + 7
    c = s.counters(CONTROL)
    assert c is not None and c.sent == 2 and c.max_wait_ns == 0
    v = s.counters(VIDEO)
    assert v is not None and v.sent == 1000 and v.max_wait_ns > 90 * MS  # paced at 100 Mbit/s


def test_bulk_never_starves_control() -> None:
    s = scheduler(
        20 * M,
        grant(CONTROL, TrafficClass.CONTROL, 500_000, 400, 200),
        grant(VIDEO, TrafficClass.VIDEO, 10 * M, 30_000),
        grant(BULK, TrafficClass.BULK, 7 * M, 12_000),
    )
    until = 1_000 * MS
    offers = (
        periodic(CONTROL, 100, 2 * MS, until, start=13)  # 500 Hz
        + periodic(VIDEO, 1200, 480 * US, until)  # 20 Mbit/s: 2x its grant
        + periodic(BULK, 1200, 240 * US, until)  # 40 Mbit/s: saturating
    )
    sent = drive(s, offers)
    control = [(t, p) for t, p, _, _ in sent if p[0] == CONTROL]
    assert len(control) == 500
    assert all(t == p[2] for t, p in control)  # every one left the instant it came
    counters = s.all_counters()
    assert counters[CONTROL].policed == 0 and counters[CONTROL].max_wait_ns == 0
    assert counters[BULK].sent > 0 and counters[BULK].policed > 0
    # classes carry their marks
    assert {tos for _, p, _, tos in sent if p[0] == BULK} == {TrafficClass.BULK.tos}


def test_strict_priority_within_one_dequeue() -> None:
    s = scheduler(
        1000 * M,
        *(grant(i, cls, M, 100_000) for i, cls in enumerate(TrafficClass, start=1)),
        pace_burst_bytes=1_000_000,
    )
    for n in range(5):
        for stream in (5, 4, 3, 2, 1):
            s.enqueue((stream, n, 0, 100), 100, stream, 0)
    out = [p for p, _ in s.dequeue(0)]
    assert [p[0] for p in out] == [k for k in (1, 2, 3, 4, 5) for _ in range(5)]
    assert [p[1] for p in out[:5]] == [0, 1, 2, 3, 4]  # FIFO within a class


def test_lower_class_never_overtakes_a_paced_head() -> None:
    s = scheduler(
        8 * M,  # 1 byte/µs
        grant(VIDEO, TrafficClass.VIDEO, 4 * M, 10_000),
        grant(BULK, TrafficClass.BULK, 4 * M, 10_000),
        pace_burst_bytes=1200,
    )
    s.enqueue((VIDEO, 1, 0, 1200), 1200, VIDEO, 0)
    s.enqueue((VIDEO, 2, 0, 1200), 1200, VIDEO, 0)
    s.enqueue((BULK, 3, 0, 100), 100, BULK, 0)
    assert [p[1] for p, _ in s.dequeue(0)] == [1]
    assert s.next_time() == 1200 * US
    assert s.dequeue(1199 * US) == []  # the small bulk packet does not slip in
    assert [p[1] for p, _ in s.dequeue(1200 * US)] == [2]
    assert [p[1] for p, _ in s.dequeue(1300 * US)] == [3]
    assert s.next_time() is None and len(s) == 0


# -- policing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TrafficClass.VIDEO, TrafficClass.CONTROL, TrafficClass.BULK])
def test_policing_holds_a_stream_at_2x_to_its_grant(cls: TrafficClass) -> None:
    rate, burst, size, seconds = 8 * M, 15_000, 1000, 10
    s = scheduler(100 * M, grant(7, cls, rate, burst, size))
    until = seconds * 1000 * MS
    sent = drive(s, periodic(7, size, 500 * US, until))  # 16 Mbit/s
    c = s.counters(7)
    assert c is not None
    expected = rate * seconds // 8
    max_delay = s.config.max_delay_ns[cls]
    assert expected - burst <= c.sent_bytes <= expected + burst + rate * max_delay // 8_000_000_000
    assert c.sent_bytes == sum(x[2] for x in sent)
    assert c.policed + c.sent == seconds * 2000
    slack = burst + rate * max_delay // 8_000_000_000  # burst + what the delay bound holds
    assert abs(c.policed - c.sent) <= 2 * slack // size + 1
    if max_delay == 0:
        assert c.delayed == 0 and c.max_wait_ns == 0  # control: conform or drop, never wait
    else:
        assert c.delayed > 0 and c.max_wait_ns <= max_delay
    # what left obeys the stream's envelope
    assert max_window_excess([(t, n) for t, _, n, _ in sent], rate) <= burst


def test_a_burst_is_delayed_up_to_the_bound_then_dropped() -> None:
    s = scheduler(
        1000 * M,
        grant(VIDEO, TrafficClass.VIDEO, 8 * M, 6000, 1200),  # 1 B/µs
        pace_burst_bytes=100_000,  # the pacer out of the way
    )
    # a 16.8 kB frame at once: 5 packets fit the burst, the k-th after them waits k * 1.2 ms
    accepted = [s.enqueue((VIDEO, n, 0, 1200), 1200, VIDEO, 0) for n in range(14)]
    assert accepted == [True] * 13 + [False]  # the 14th would wait 10.8 ms > 10 ms
    assert not s.enqueue((VIDEO, 99, 0, 1500), 1500, VIDEO, 0)
    c = s.counters(VIDEO)
    assert c is not None
    assert (c.delayed, c.policed, c.policed_bytes, c.oversize) == (8, 1, 1200, 1)
    assert c.dropped == 2 and len(s) == 13
    sent = drive(s, [])
    assert [t for t, *_ in sent][4:] == [0] + [k * 1200 * US for k in range(1, 9)]
    assert c.sent == 13 and c.max_wait_ns == 9600 * US


def test_unknown_stream_queue_limit_and_remove() -> None:
    s = scheduler(
        M,
        grant(VIDEO, TrafficClass.VIDEO, M, 100_000, 100),
        grant(BULK, TrafficClass.BULK, M, 100_000, 100),
        queue_packets=3,
    )
    assert not s.enqueue((42, 0, 0, 100), 100, 42, 0)
    assert s.unknown_stream == 1
    assert [s.enqueue((VIDEO, n, 0, 100), 100, VIDEO, 0) for n in range(4)] == [True] * 3 + [False]
    assert s.enqueue((BULK, 0, 0, 100), 100, BULK, 0)  # the limit is per class
    video = s.remove(VIDEO)
    assert video is not None and video.queue_dropped == 1
    assert s.remove(VIDEO) is None and s.counters(VIDEO) is None
    out = s.dequeue(10**10)
    assert [p[0] for p, _ in out] == [BULK]
    assert video.discarded == 3 and video.sent == 0 and len(s) == 0
    assert not s.enqueue((VIDEO, 9, 10**10, 100), 100, VIDEO, 10**10)


def test_a_new_grant_replaces_the_old_one_without_a_fresh_burst() -> None:
    s = scheduler(100 * M, grant(VIDEO, TrafficClass.VIDEO, 8 * M, 3000))
    assert s.enqueue((VIDEO, 0, 0, 1200), 1200, VIDEO, 0)
    assert s.enqueue((VIDEO, 1, 0, 1200), 1200, VIDEO, 0)
    s.add(grant(VIDEO, TrafficClass.VIDEO, 16 * M, 30_000), now=0)
    assert s.enqueue((VIDEO, 2, 0, 1200), 1200, VIDEO, 0)  # 600 B left + wait 0.3 ms at 2 B/µs
    c = s.counters(VIDEO)
    assert c is not None and c.delayed == 1
    g = s.grant(VIDEO)
    assert g is not None and g.rate_bps == 16 * M
    s.add(grant(VIDEO, TrafficClass.BULK, 16 * M, 30_000), now=0)  # a class change
    assert s.counters(VIDEO) is c and s.dequeue(10**9) == [] and c.discarded == 3


# -- pacing -----------------------------------------------------------------------------------

streams = st.lists(
    st.tuples(
        st.sampled_from([TrafficClass.HAPTICS, TrafficClass.VIDEO, TrafficClass.BULK]),
        st.integers(100_000, 60 * M),
        st.integers(1500, 40_000),
    ),
    min_size=1,
    max_size=4,
)
offers = st.lists(
    st.tuples(st.integers(0, 3 * MS), st.integers(0, 3), st.integers(1, 1500)),
    max_size=250,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(M, 100 * M), st.integers(1500, 10_000), streams, offers)
def test_pacing_never_exceeds_capacity_over_any_window(
    capacity: int,
    pace_burst: int,
    specs: list[tuple[TrafficClass, int, int]],
    offered: list[tuple[int, int, int]],
) -> None:
    s = scheduler(
        capacity,
        *(grant(i, cls, rate, burst, 1500) for i, (cls, rate, burst) in enumerate(specs)),
        pace_burst_bytes=pace_burst,
    )
    sent = drive(s, [(t, i % len(specs), size) for t, i, size in offered])
    assert max_window_excess([(t, n) for t, _, n, _ in sent], capacity) <= pace_burst
    for stream, c in s.all_counters().items():
        assert c.sent + c.dropped == sum(1 for _, i, _ in offered if i % len(specs) == stream)


@settings(max_examples=150, deadline=None)
@given(st.integers(2 * M, 50 * M), streams, offers, st.integers(0, 3 * MS))
def test_control_bypass_only_adds_its_own_burst(
    capacity: int,
    specs: list[tuple[TrafficClass, int, int]],
    offered: list[tuple[int, int, int]],
    control_gap: int,
) -> None:
    control_burst = 600
    s = scheduler(
        capacity,
        grant(99, TrafficClass.CONTROL, M, control_burst, 200),
        *(grant(i, cls, rate, burst, 1500) for i, (cls, rate, burst) in enumerate(specs)),
    )
    traffic = [(t, i % len(specs), size) for t, i, size in offered]
    traffic += [(t, 99, 200) for t, *_ in offered[:: 1 + control_gap // MS]]
    sent = drive(s, traffic)
    assert max_window_excess([(t, n) for t, _, n, _ in sent], capacity) <= 3000 + control_burst
    assert all(t == p[2] for t, p, _, _ in sent if p[0] == 99)  # control never waited


def test_next_time() -> None:
    s = scheduler(8 * M, grant(VIDEO, TrafficClass.VIDEO, 8 * M, 2400), pace_burst_bytes=1200)
    assert s.next_time() is None
    for n in range(3):
        s.enqueue((VIDEO, n, 0, 1200), 1200, VIDEO, 0)
    assert s.next_time() == 0  # at once
    assert len(s.dequeue(0)) == 1
    assert s.next_time() == 1200 * US  # the pacer (the policer's delayed one is due later)
    assert len(s.dequeue(1200 * US)) == 1
    assert s.next_time() == 2400 * US
    assert len(s.dequeue(2400 * US)) == 1
    assert s.next_time() is None


# -- cost -------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 10 * MS), st.integers(1, 1500)), max_size=60))
def test_max_window_excess_matches_the_pairwise_check(events: list[tuple[int, int]]) -> None:
    rate = 8 * M
    events = sorted(events)
    brute = 0.0
    for i, (ti, _) in enumerate(events):
        total = 0
        for tj, size in events[i:]:
            total += size
            brute = max(brute, total - rate * (tj - ti) / NANOBITS_PER_BYTE)
    assert max_window_excess(events, rate) == pytest.approx(brute)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2 * MS),  # gap before the offer, ns
            st.sampled_from([CONTROL, 2, VIDEO, BULK, 9]),  # 9: no grant
            st.integers(0, 1400),  # size (0 and > max are refused)
        ),
        max_size=80,
    )
)
def test_offer_is_enqueue_then_dequeue_in_one_step(offers: list[tuple[int, int, int]]) -> None:
    grants = (
        grant(CONTROL, TrafficClass.CONTROL, 2 * M, burst=1500),
        grant(2, TrafficClass.HAPTICS, 1 * M, burst=1500),
        grant(VIDEO, TrafficClass.VIDEO, 8 * M, burst=6000),
        grant(BULK, TrafficClass.BULK, 4 * M, burst=3000),
    )
    fast, slow = scheduler(10 * M, *grants), scheduler(10 * M, *grants)
    out_fast: list[tuple[int, Packet, int]] = []
    out_slow: list[tuple[int, Packet, int]] = []
    now = 0
    for seq, (gap, stream, size) in enumerate(offers):
        now += gap
        for s, out in ((fast, out_fast), (slow, out_slow)):  # what is due goes first
            out.extend((now, p, tos) for p, tos in s.dequeue(now))
        packet = (stream, seq, now, size)
        tos = fast.offer(packet, size, stream, now)
        if tos >= 0:
            out_fast.append((now, packet, tos))
        accepted = slow.enqueue(packet, size, stream, now)
        out_slow.extend((now, p, t) for p, t in slow.dequeue(now))
        assert (tos != DROPPED) == accepted
    while (t := slow.next_time()) is not None:  # drain both at the same times
        now = max(now, t)
        out_slow.extend((now, p, tos) for p, tos in slow.dequeue(now))
        out_fast.extend((now, p, tos) for p, tos in fast.dequeue(now))
    out_fast.extend((now, p, tos) for p, tos in fast.dequeue(now))
    assert out_fast == out_slow
    assert fast.all_counters() == slow.all_counters()
    assert fast.unknown_stream == slow.unknown_stream and len(fast) == len(slow) == 0
