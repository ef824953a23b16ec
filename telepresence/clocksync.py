"""Clock offset between two hosts from four timestamps (sans-IO).

One exchange gives t1 (request sent, local clock), t2 (request received, remote clock), t3
(reply sent, remote clock) and t4 (reply received, local clock). With symmetric paths::

    offset = ((t2 - t1) + (t3 - t4)) / 2      remote clock minus local clock
    delay  = (t4 - t1) - (t3 - t2)            network round trip

The estimator keeps the exchange with the smallest round trip in a sliding window: queueing only
ever adds delay, so the fastest exchange is the least distorted (the NTP clock filter's rule).
Its error is at most half that round trip, reported as `uncertainty_ns`.
"""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetEstimator"]


class OffsetEstimator:
    """Estimate remote-minus-local clock offset from (t1, t2, t3, t4) exchanges."""

    __slots__ = ("_window", "fixed")

    def __init__(self, window: int = 64, fixed_offset_ns: int | None = None) -> None:
        self._window: deque[tuple[int, int]] = deque(maxlen=window)
        self.fixed = fixed_offset_ns
        """A known offset (e.g. 0 when both ends share one clock); disables estimation."""

    def add(self, t1: int, t2: int, t3: int, t4: int) -> None:
        """Record one exchange."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0:
            return  # impossible with sane clocks: ignore rather than poison the estimate
        self._window.append((rtt, ((t2 - t1) + (t3 - t4)) // 2))

    @property
    def offset_ns(self) -> int | None:
        """Remote clock minus local clock, or None before the first exchange."""
        if self.fixed is not None:
            return self.fixed
        if not self._window:
            return None
        return min(self._window)[1]

    @property
    def uncertainty_ns(self) -> int | None:
        """Bound on the offset error (half the best round trip); 0 for a fixed offset."""
        if self.fixed is not None:
            return 0
        if not self._window:
            return None
        return min(self._window)[0] // 2
