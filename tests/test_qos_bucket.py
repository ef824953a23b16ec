"""Token bucket with a hand clock: exact refill, back-to-back bursts, the rate envelope."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telepresence.exceptions import ConfigError
from telepresence.qos import TokenBucket
from telepresence.qos.bucket import NANOBITS_PER_BYTE

MS = 1_000_000
US = 1_000


def within_envelope(events: list[tuple[int, int]], rate: int, burst: int) -> bool:
    """Every interval [t_i, t_j] carries at most burst + rate * (t_j - t_i) / 8e9 bytes
    (checked on every pair, the slow obvious way)."""
    events = sorted(events)
    for i, (ti, _) in enumerate(events):
        total = 0
        for tj, size in events[i:]:
            total += size
            if total * NANOBITS_PER_BYTE > burst * NANOBITS_PER_BYTE + rate * (tj - ti):
                return False
    return True


def test_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="rate_bps must be within 1"):
        TokenBucket(0, 1500)
    with pytest.raises(ConfigError, match="burst_bytes must be a whole number"):
        TokenBucket(1000, 1.5)  # type: ignore[arg-type]


def test_burst_passes_back_to_back_then_rate() -> None:
    b = TokenBucket(8_000_000, 3000, now=0)  # 1 byte/µs
    assert [b.conforms(1000, 0) for _ in range(4)] == [True, True, True, False]
    assert b.delay_until_conforming(1000, 0) == 1000 * US
    assert not b.conforms(1000, 999 * US)
    assert b.conforms(1000, 1000 * US)
    assert b.tokens(1000 * US) == 0


def test_refill_is_exact_and_capped() -> None:
    b = TokenBucket(1, 1, now=0, full=False)  # one bit per second: a byte takes 8 s
    assert b.delay_until_conforming(1, 0) == 8_000_000_000
    assert not b.conforms(1, 7_999_999_999)
    assert b.conforms(1, 8_000_000_000)
    b = TokenBucket(3, 1, now=0, full=False)  # 8/3 s per byte: the ceiling, to the ns
    assert b.delay_until_conforming(1, 0) == 2_666_666_667
    assert b.conforms(1, 2_666_666_667)
    c = TokenBucket(8_000_000, 1500, now=0)
    assert c.tokens(10**15) == 1500  # capped, however long it idles


def test_time_never_runs_backwards() -> None:
    b = TokenBucket(8_000_000, 1500, now=10 * MS)
    assert b.conforms(1500, 10 * MS)
    assert not b.conforms(1, 5 * MS)  # an earlier now earns nothing
    assert b.conforms(1, 10 * MS + US)


def test_too_big_never_conforms() -> None:
    b = TokenBucket(8_000_000, 1500)
    assert not b.conforms(1501, 10**12)
    assert b.take(1501, 10**12, 10**12) is None
    with pytest.raises(ConfigError, match="never conforms"):
        b.delay_until_conforming(1501, 0)


def test_take_goes_into_debt_within_the_bound() -> None:
    b = TokenBucket(8_000_000, 1000, now=0)  # 1 byte/µs
    assert b.take(1000, 0, 5 * MS) == 0
    assert b.take(1000, 0, 5 * MS) == 1000 * US
    assert b.take(1000, 0, 5 * MS) == 2000 * US
    assert b.take(4000, 0, 5 * MS) is None  # 7 ms away: nothing spent
    assert b.take(1000, 0, 5 * MS) == 3000 * US
    assert b.tokens(0) == -3000
    assert b.conforming_at(1000) == 4000 * US


def test_resize_keeps_debt_and_caps_tokens() -> None:
    b = TokenBucket(8_000_000, 10_000, now=0)
    b.resize(8_000_000, 2000, now=0)
    assert b.tokens(0) == 2000  # a smaller burst caps the tokens
    b.charge(3000, 0)
    b.resize(16_000_000, 50_000, now=0)
    assert b.tokens(0) == -1000  # debt is kept; no fresh burst
    assert b.delay_until_conforming(1000, 0) == 1000 * US


@given(
    st.integers(1, 100_000_000),
    st.integers(1, 20_000),
    st.lists(st.tuples(st.integers(0, 2 * MS), st.integers(1, 1500)), max_size=150),
)
def test_policing_envelope(rate: int, burst: int, offers: list[tuple[int, int]]) -> None:
    b = TokenBucket(rate, burst, now=0)
    now = 0
    passed: list[tuple[int, int]] = []
    for gap, size in offers:
        now += gap
        if b.conforms(size, now):
            passed.append((now, size))
    assert within_envelope(passed, rate, burst)


@given(
    st.integers(1_000, 100_000_000),
    st.integers(1500, 20_000),
    st.integers(0, 20 * MS),
    st.lists(st.tuples(st.integers(0, MS), st.integers(1, 1500)), max_size=150),
)
def test_shaped_release_times_obey_the_envelope_and_stay_in_order(
    rate: int, burst: int, max_delay: int, offers: list[tuple[int, int]]
) -> None:
    b = TokenBucket(rate, burst, now=0)
    now = 0
    released: list[tuple[int, int]] = []
    last = 0
    for gap, size in offers:
        now += gap
        wait = b.take(size, now, max_delay)
        if wait is None:
            continue
        assert 0 <= wait <= max_delay
        assert now + wait >= last  # a stream's packets leave in order
        last = now + wait
        released.append((now + wait, size))
    assert within_envelope(released, rate, burst)


@given(
    st.integers(1, 10**9),
    st.integers(1, 10_000),
    st.lists(st.tuples(st.integers(0, 10 * MS), st.integers(1, 10_000)), max_size=50),
)
def test_delay_until_conforming_is_exact(
    rate: int, burst: int, offers: list[tuple[int, int]]
) -> None:
    b = TokenBucket(rate, burst, now=0, full=False)
    now = 0
    for gap, size in offers:
        now += gap
        size = min(size, burst)
        d = b.delay_until_conforming(size, now)
        assert b.conforming_at(size) == now + d
        if d:
            early = copy.copy(b)
            assert not early.conforms(size, now + d - 1)
        assert b.conforms(size, now + d)
        now += d


def test_long_run_rate() -> None:
    """A greedy sender gets rate * T + burst, to the byte."""
    rate, burst, size = 10_000_000, 15_000, 1250  # 1250 B = 1 ms at 10 Mbit/s
    b = TokenBucket(rate, burst, now=0)
    sent = sum(size for t in range(0, 10_000 * MS, 100 * US) if b.conforms(size, t))
    assert sent == burst + 9_999 * size  # the envelope at T = 10 s - 100 µs, rounded down
