"""Per-stream sequence tracking: duplicates, stale and reordered datagrams (sans-IO).

A `SequenceWindow` keeps the highest sequence number accepted on one stream and a 64-bit
bitmap of which of the 64 numbers below it have been seen, the way an IPsec replay window does.
"""

from __future__ import annotations

import enum

__all__ = ["SeqVerdict", "SequenceWindow"]

WINDOW = 64
_MASK = (1 << WINDOW) - 1


class SeqVerdict(enum.IntEnum):
    """What a sequence number is, relative to what the stream has seen."""

    NEWEST = 0
    """Higher than any seen: the freshest datagram of the stream."""
    LATE = 1
    """Older than the newest but inside the window and not seen before (reordered)."""
    DUPLICATE = 2
    """Seen before."""
    TOO_OLD = 3
    """Older than the window can tell about."""


class SequenceWindow:
    """Highest sequence number seen on a stream plus a bitmap of the 64 below it."""

    __slots__ = ("bitmap", "highest")

    def __init__(self) -> None:
        self.highest = 0
        """Highest sequence number seen (0: none yet; real numbers start at 1)."""
        self.bitmap = 0
        """Bit i set: sequence ``highest - i`` has been seen (bit 0 is `highest` itself)."""

    def check(self, seq: int) -> SeqVerdict:
        """Classify `seq` without recording it."""
        if seq > self.highest:
            return SeqVerdict.NEWEST
        diff = self.highest - seq
        if diff >= WINDOW or seq == 0:
            return SeqVerdict.TOO_OLD
        return SeqVerdict.DUPLICATE if (self.bitmap >> diff) & 1 else SeqVerdict.LATE

    def accept(self, seq: int) -> SeqVerdict:
        """Classify `seq` and record it as seen (unless it is a duplicate or too old)."""
        highest = self.highest
        if seq > highest:  # the common case first, inline
            shift = seq - highest
            self.bitmap = ((self.bitmap << shift) | 1) & _MASK if shift < WINDOW else 1
            self.highest = seq
            return _NEWEST
        verdict = self.check(seq)
        if verdict is SeqVerdict.LATE:
            self.bitmap |= 1 << (highest - seq)
        return verdict


_NEWEST = SeqVerdict.NEWEST
