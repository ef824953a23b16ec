"""The link model with fixed seeds: statistics within tolerance of theory, exact queueing."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.link import GilbertElliott, LinkConfig, LinkModel, Outage, load_mahimahi_trace

MS = 1_000_000
US = 1_000


def drain(model: LinkModel[int]) -> list[tuple[int, int]]:
    """Run the model to the end; (delivery time, packet) in delivery order."""
    out: list[tuple[int, int]] = []
    while (t := model.next_time()) is not None:
        out.extend((t, p) for p in model.deliver(t))
    return out


def offer(
    config: LinkConfig, n: int, gap_ns: int, size: int = 100, seed: int = 1
) -> LinkModel[int]:
    m: LinkModel[int] = LinkModel(config, seed=seed)
    for i in range(n):
        m.send(i, size, i * gap_ns)
    return m


def test_fixed_delay_is_exact() -> None:
    m = offer(LinkConfig(delay=0.010), 100, MS)
    got = drain(m)
    assert [p for _, p in got] == list(range(100))
    assert all(t == p * MS + 10 * MS for t, p in got)


def test_bernoulli_loss_rate() -> None:
    m = offer(LinkConfig(loss=0.05), 100_000, 10 * US)
    rate = m.stats.lost / m.stats.sent
    # 5 sigma of a binomial with n=1e5, p=0.05 is ~0.0035
    assert abs(rate - 0.05) < 0.0035


def test_gilbert_elliott_loss_and_burst_lengths() -> None:
    ge = GilbertElliott(p=0.01, r=0.25)  # loss only in the bad state
    m: LinkModel[int] = LinkModel(LinkConfig(loss_model=ge), seed=5)
    lost = []
    for i in range(200_000):
        before = m.stats.lost
        m.send(i, 100, i * US)
        lost.append(m.stats.lost > before)
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    rate = sum(lost) / len(lost)
    assert rate == pytest.approx(ge.mean_loss, rel=0.08)  # theory: p / (p + r) = 3.85 %
    assert statistics.mean(bursts) == pytest.approx(1 / ge.r, rel=0.08)  # geometric, mean 1/r
    # burst lengths are geometric: P(len=1) = r
    assert sum(1 for b in bursts if b == 1) / len(bursts) == pytest.approx(ge.r, rel=0.1)


@pytest.mark.parametrize(
    ("dist", "std_factor"), [("normal", 1.0), ("uniform", 1 / math.sqrt(3)), ("pareto", 1.0)]
)
def test_jitter_distribution_moments(dist: str, std_factor: float) -> None:
    cfg = LinkConfig(delay=0.020, jitter=0.002, jitter_dist=dist, jitter_reorders=True)  # type: ignore[arg-type]
    m = offer(cfg, 100_000, 10 * US)
    drain(m)
    d = np.asarray(m.stats.delays_ns) / MS
    assert d.mean() == pytest.approx(20.0, abs=0.05)
    tolerance = 0.03 if dist != "pareto" else 0.15  # a heavy tail converges slowly
    assert d.std() == pytest.approx(2.0 * std_factor, rel=tolerance)
    if dist == "pareto":
        skew = float(((d - d.mean()) ** 3).mean() / d.std() ** 3)
        assert skew > 1.0  # heavy right tail
    if dist == "uniform":
        assert d.min() >= 18.0 and d.max() <= 22.0


def test_no_reordering_by_default_even_with_jitter() -> None:
    m = offer(LinkConfig(delay=0.005, jitter=0.003), 20_000, 50 * US)
    order = [p for _, p in drain(m)]
    assert order == sorted(order)


def test_jitter_reorders_when_asked() -> None:
    m = offer(LinkConfig(delay=0.005, jitter=0.003, jitter_reorders=True), 20_000, 50 * US)
    order = [p for _, p in drain(m)]
    assert order != sorted(order)


def test_reorder_probability_sends_ahead() -> None:
    m = offer(LinkConfig(delay=0.010, reorder_prob=0.1), 10_000, 100 * US)
    got = drain(m)
    early = sum(1 for t, p in got if t == p * 100 * US)
    assert early / 10_000 == pytest.approx(0.1, abs=0.015)


def test_duplication() -> None:
    m = offer(LinkConfig(duplicate=0.02), 50_000, 10 * US)
    got = drain(m)
    assert len(got) == 50_000 + m.stats.duplicated
    assert m.stats.duplicated / 50_000 == pytest.approx(0.02, abs=0.003)


def test_periodic_outage_drops_exactly_the_down_time() -> None:
    cfg = LinkConfig(outage=Outage(period=1.0, duration=0.1))
    m = offer(cfg, 3000, MS)  # 3 s, one packet per ms
    lost = {p for p in range(3000)} - {p for _, p in drain(m)}
    # down from 0.9 s to 1.0 s, 1.9-2.0, 2.9-3.0 (up-time first)
    expected = {p for p in range(3000) if (p % 1000) >= 900}
    assert lost == expected
    assert m.stats.outage_lost == 300


def test_random_outages_average_the_period() -> None:
    cfg = LinkConfig(outage=Outage(period=0.1, duration=0.01, random=True))
    m = offer(cfg, 100_000, 100 * US)  # 10 s
    assert m.stats.outage_lost / m.stats.sent == pytest.approx(0.1, rel=0.2)


def test_rate_limit_holds() -> None:
    # 1200-byte packets offered at 2x a 10 Mbit/s link, with a big queue
    cfg = LinkConfig(rate=10e6, queue_packets=100_000)
    gap = round(1200 * 8 / 20e6 * 1e9)
    m = offer(cfg, 20_000, gap, size=1200)
    got = drain(m)
    span = (got[-1][0] - got[0][0]) / 1e9
    throughput = (len(got) - 1) * 1200 * 8 / span
    assert throughput == pytest.approx(10e6, rel=0.001)
    assert all(
        b - a == 960 * US for (a, _), (b, _) in itertools.pairwise(got)
    )  # 1200 B at 10 Mbit/s


@given(
    queue=st.integers(1, 50),
    burst=st.integers(1, 200),
    in_bytes=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_queue_overflow_drops_exactly_the_excess(queue: int, burst: int, in_bytes: bool) -> None:
    # a burst at one instant: one packet goes into service, `queue` wait, the rest are dropped
    size = 1000
    cfg = LinkConfig(rate=1e6, queue_bytes=queue * size if in_bytes else None,
                     queue_packets=None if in_bytes else queue)  # fmt: skip
    m: LinkModel[int] = LinkModel(cfg)
    for i in range(burst):
        m.send(i, size, 0)
    delivered = [p for _, p in drain(m)]
    kept = min(burst, queue + 1)
    assert delivered == list(range(kept))
    assert m.stats.queue_dropped == burst - kept


def _bulk_and_control(cfg: LinkConfig) -> tuple[LinkModel[tuple[str, int]], list[int]]:
    """Bulk floods class 3 at twice the link rate; 20 control packets (class 0) cross it.
    Returns the model and each control packet's wait."""
    events = [(i * 4 * MS, 3, ("bulk", i), 1000) for i in range(100)]
    events += [(100 * MS + i * 10 * MS, 0, ("control", i), 100) for i in range(20)]
    m: LinkModel[tuple[str, int]] = LinkModel(cfg)
    for t, cls, p, size in sorted(events):
        m.send(p, size, t, cls=cls)
    waits = []
    while (t := m.next_time()) is not None:
        for p in m.deliver(t):
            if p[0] == "control":
                waits.append(t - (100 * MS + p[1] * 10 * MS))
    return m, waits


def test_strict_priority_lets_high_class_through_a_full_low_queue() -> None:
    # 1 Mbit/s: a 1000-byte bulk packet takes 8 ms, a 100-byte control packet 0.8 ms
    m, waits = _bulk_and_control(LinkConfig(rate=1e6, queue_packets=20, qdisc="priority"))
    assert len(waits) == 20  # none dropped although bulk overflowed its queue
    assert m.stats.queue_dropped > 0
    assert max(waits) <= 8 * MS + 800 * US  # at most the bulk packet in service, then its own
    _fifo, fifo_waits = _bulk_and_control(LinkConfig(rate=1e6, queue_packets=20))
    assert max(fifo_waits) > 100 * MS  # behind a full FIFO


def test_codel_keeps_standing_queue_near_target() -> None:
    # 10.5 Mbit/s offered into 10 Mbit/s for 10 s: drop-tail lets a standing queue build up;
    # CoDel's drop rate grows until the sojourn time is back near its 5 ms target.
    gap = round(1200 * 8 / 10.5e6 * 1e9)
    n = round(10e9 / gap)
    results = {}
    for qdisc in ("droptail", "codel"):
        cfg = LinkConfig(rate=10e6, queue_packets=1000, qdisc=qdisc)  # type: ignore[arg-type]
        m = offer(cfg, n, gap, size=1200)
        drain(m)
        d = np.asarray(m.stats.delays_ns[len(m.stats.delays_ns) // 2 :]) / MS
        results[qdisc] = (float(np.median(d)), m.stats.queue_dropped)
    assert results["droptail"][0] > 300  # ms of standing queue, no drops yet
    assert results["droptail"][1] == 0
    assert results["codel"][0] < 20
    assert results["codel"][1] > 100


def test_trace_replay_delivers_what_the_trace_allows() -> None:
    trace = load_mahimahi_trace("# comment\n1\n1\n2\n5\n")
    m = offer(LinkConfig(trace=trace), 6, 0, size=1500)
    got = [(t // MS, p) for t, p in drain(m)]
    assert got == [(1, 0), (1, 1), (2, 2), (5, 3), (6, 4), (6, 5)]  # trace loops every 5 ms


def test_trace_capacity_matches_line_count() -> None:
    # 10 opportunities per ms for 100 ms (loops) = 10 * 1500 B/ms = 120 Mbit/s
    trace = tuple(ms for ms in range(1, 101) for _ in range(10))
    cfg = LinkConfig(trace=trace, queue_packets=100_000)
    m = offer(cfg, 30_000, 10 * US, size=1500)  # offered 1.2 Gbit/s
    got = drain(m)
    span = (got[-1][0] - got[0][0]) / 1e9
    assert (len(got) - 10) * 1500 * 8 / span == pytest.approx(120e6, rel=0.01)


def test_small_packets_share_an_opportunity() -> None:
    m = offer(LinkConfig(trace=(3,)), 3, 0, size=500)
    assert [t // MS for t, _ in drain(m)] == [3, 3, 3]


def test_same_seed_same_result() -> None:
    cfg = LinkConfig(delay=0.01, jitter=0.002, loss=0.1, duplicate=0.05)
    a = drain(offer(cfg, 5000, 100 * US, seed=9))
    b = drain(offer(cfg, 5000, 100 * US, seed=9))
    c = drain(offer(cfg, 5000, 100 * US, seed=10))
    assert a == b and a != c


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": 1.5}, "loss"),
        ({"delay": -1}, "delay"),
        ({"jitter_dist": "cauchy"}, "normal, uniform or pareto"),
        ({"qdisc": "priority"}, "needs a rate"),
        ({"rate": 1e6, "trace": (1,)}, "either a rate or a trace"),
        ({"loss": 0.1, "loss_model": GilbertElliott(p=0.1, r=0.5)}, "either loss"),
    ],
)
def test_bad_configs_name_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinkConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_trace_lines() -> None:
    with pytest.raises(ValueError, match="line 2"):
        load_mahimahi_trace("1\nabc\n")
    with pytest.raises(ValueError, match="non-decreasing"):
        load_mahimahi_trace("5\n3\n")
