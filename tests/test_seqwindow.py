"""Sequence window: newest, late, duplicate and too-old datagrams."""

from hypothesis import given
from hypothesis import strategies as st

from telepresence.seqwindow import WINDOW, SequenceWindow, SeqVerdict


def test_in_order_then_duplicate() -> None:
    w = SequenceWindow()
    assert [w.accept(s) for s in (1, 2, 3)] == [SeqVerdict.NEWEST] * 3
    assert w.accept(3) is SeqVerdict.DUPLICATE
    assert w.accept(2) is SeqVerdict.DUPLICATE


def test_late_once_then_duplicate() -> None:
    w = SequenceWindow()
    w.accept(10)
    assert w.accept(7) is SeqVerdict.LATE
    assert w.accept(7) is SeqVerdict.DUPLICATE
    assert w.accept(8) is SeqVerdict.LATE


def test_too_old_and_zero() -> None:
    w = SequenceWindow()
    assert w.accept(0) is SeqVerdict.TOO_OLD
    w.accept(1000)
    assert w.accept(1000 - WINDOW) is SeqVerdict.TOO_OLD
    assert w.accept(1000 - WINDOW + 1) is SeqVerdict.LATE


def test_big_jump_clears_bitmap() -> None:
    w = SequenceWindow()
    w.accept(5)
    w.accept(5 + 10 * WINDOW)
    assert w.accept(5 + 10 * WINDOW - 1) is SeqVerdict.LATE


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200))
def test_matches_a_set_model(seqs: list[int]) -> None:
    w = SequenceWindow()
    seen: set[int] = set()
    highest = 0
    for s in seqs:
        v = w.accept(s)
        if s > highest:
            assert v is SeqVerdict.NEWEST
            highest = s
            seen.add(s)
        elif highest - s >= WINDOW:
            assert v is SeqVerdict.TOO_OLD
        elif s in seen:
            assert v is SeqVerdict.DUPLICATE
        else:
            assert v is SeqVerdict.LATE
            seen.add(s)
