"""Clock offset from four timestamps."""

from hypothesis import given
from hypothesis import strategies as st

from telepresence.clocksync import OffsetEstimator


@given(
    offset=st.integers(-(10**12), 10**12),
    up=st.integers(1, 10**7),
    down=st.integers(1, 10**7),
    hold=st.integers(0, 10**8),
)
def test_symmetric_exchange_gives_exact_offset(offset: int, up: int, down: int, hold: int) -> None:
    # Error is half the path asymmetry, and at most the reported uncertainty.
    t1 = 5 * 10**12
    t2 = t1 + up + offset
    t3 = t2 + hold
    t4 = t3 - offset + down
    e = OffsetEstimator()
    e.add(t1, t2, t3, t4)
    assert e.offset_ns is not None and e.uncertainty_ns is not None
    assert abs(e.offset_ns - (offset + (up - down) / 2)) <= 1
    assert abs(e.offset_ns - offset) <= e.uncertainty_ns + 1


def test_picks_fastest_exchange() -> None:
    e = OffsetEstimator()
    offset = 1_000_000
    # slow exchange with asymmetric queueing on the uplink, then a fast clean one
    e.add(0, 0 + 900_000 + offset, 1_000_000 + offset, 1_000_000 + 10_000)
    e.add(2_000_000, 2_000_000 + 10_000 + offset, 2_100_000 + offset, 2_110_000)
    assert e.offset_ns == offset
    assert e.uncertainty_ns == 10_000


def test_fixed_offset_and_empty() -> None:
    assert OffsetEstimator().offset_ns is None
    f = OffsetEstimator(fixed_offset_ns=0)
    f.add(0, 100, 200, 50)
    assert f.offset_ns == 0 and f.uncertainty_ns == 0
