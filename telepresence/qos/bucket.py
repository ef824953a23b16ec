"""A token bucket in exact integer arithmetic, for policing and pacing (sans-IO).

Tokens are counted in nanobits (1e-9 bit). A bucket of `rate_bps` gains exactly `rate_bps`
nanobits per nanosecond; a packet of `size` bytes costs exactly ``size * 8e9`` nanobits; the
bucket holds at most ``burst_bytes * 8e9``. There is no float anywhere, so a long run never
drifts and the tests can check the envelope to the nanosecond:

    over any interval of T ns, a bucket lets through at most burst_bytes + rate_bps * T / 8e9
    bytes (the bytes counted at the times they conform).

Three ways to use it:

- `conforms(size, now)`: policing. True and the tokens are spent, or False and nothing changes.
- `delay_until_conforming(size, now)`: pacing. How long until `size` would conform (0: now).
- `take(size, now, max_delay_ns)`: shaping with a bound. Spends the tokens now, letting the
  bucket go into debt, and says how long the packet must wait to conform (0: now), or None
  (nothing spent) when that would be longer than `max_delay_ns`. Packets taken one after
  another get non-decreasing release times, and those release times obey the envelope above.
  `charge(size, now)` spends unconditionally (debt unbounded); the scheduler uses it for the
  packets it lets bypass the pacer.

Time is monotonic ns passed in; a `now` earlier than the last one seen adds no tokens (the
bucket never runs backwards), so callers with slightly stale clocks are safe.
"""

from __future__ import annotations

from telepresence.exceptions import ConfigError
from telepresence.qos._validate import whole

__all__ = ["NANOBITS_PER_BYTE", "TokenBucket"]

NANOBITS_PER_BYTE = 8_000_000_000
"""Token units per byte: 8 bits, each 1e9 nanobits."""
MAX_RATE_BPS = 10**12
MAX_BURST_BYTES = 1 << 30


class TokenBucket:
    """Tokens for `rate_bps` with depth `burst_bytes`; starts full (or empty) at `now`."""

    __slots__ = ("_cap", "_last", "_tokens", "burst_bytes", "rate_bps")

    def __init__(self, rate_bps: int, burst_bytes: int, *, now: int = 0, full: bool = True) -> None:
        self.rate_bps = whole("rate_bps", rate_bps, 1, MAX_RATE_BPS, "bit/s")
        """Token rate, bit/s."""
        self.burst_bytes = whole("burst_bytes", burst_bytes, 1, MAX_BURST_BYTES, "bytes")
        """Bucket depth, bytes: the largest burst that passes back to back."""
        self._cap = self.burst_bytes * NANOBITS_PER_BYTE
        self._tokens = self._cap if full else 0
        self._last = now

    def _refill(self, now: int) -> int:
        if now > self._last:
            tokens = self._tokens + (now - self._last) * self.rate_bps
            self._tokens = tokens if tokens < self._cap else self._cap
            self._last = now
        return self._tokens

    def tokens(self, now: int) -> float:
        """Bytes' worth of tokens at `now` (negative: in debt), for display."""
        return self._refill(now) / NANOBITS_PER_BYTE

    def conforms(self, size: int, now: int) -> bool:
        """Police: spend `size` bytes of tokens and return True, or return False and spend none."""
        cost = size * NANOBITS_PER_BYTE
        if self._refill(now) >= cost:
            self._tokens -= cost
            return True
        return False

    def delay_until_conforming(self, size: int, now: int) -> int:
        """Pace: ns from `now` until `size` bytes would conform (0: they do now). Spends nothing.

        Raises ConfigError if `size` is larger than the burst: such a packet never conforms.
        """
        cost = self._cost(size)
        missing = cost - self._refill(now)
        return -(-missing // self.rate_bps) if missing > 0 else 0

    def conforming_at(self, size: int) -> int:
        """The earliest time (ns) `size` bytes conform, counting from the last time seen; a time
        at or before the caller's `now` means "now". Spends nothing."""
        missing = self._cost(size) - self._tokens
        return self._last + (-(-missing // self.rate_bps) if missing > 0 else 0)

    def take(self, size: int, now: int, max_delay_ns: int) -> int | None:
        """Shape: spend `size` bytes of tokens now (debt allowed) and return the ns the packet
        must wait to conform, or None, spending nothing, if that is more than `max_delay_ns`
        (or `size` is larger than the burst)."""
        cost = size * NANOBITS_PER_BYTE
        if cost > self._cap:
            return None
        tokens = self._refill(now)
        missing = cost - tokens
        if missing <= 0:
            self._tokens = tokens - cost
            return 0
        wait = -(-missing // self.rate_bps)
        if wait > max_delay_ns:
            return None
        self._tokens = tokens - cost
        return wait

    def charge(self, size: int, now: int) -> None:
        """Spend `size` bytes of tokens unconditionally (the bucket may go into debt)."""
        self._tokens = self._refill(now) - size * NANOBITS_PER_BYTE

    def resize(self, rate_bps: int, burst_bytes: int, now: int) -> None:
        """Change rate and depth at `now`, keeping the tokens (or debt) earned so far, capped at
        the new depth: a new grant does not hand out a fresh burst."""
        rate = whole("rate_bps", rate_bps, 1, MAX_RATE_BPS, "bit/s")
        burst = whole("burst_bytes", burst_bytes, 1, MAX_BURST_BYTES, "bytes")
        tokens = self._refill(now)
        self.rate_bps, self.burst_bytes = rate, burst
        self._cap = burst * NANOBITS_PER_BYTE
        self._tokens = min(tokens, self._cap)

    def _cost(self, size: int) -> int:
        cost = size * NANOBITS_PER_BYTE
        if cost > self._cap:
            raise ConfigError(
                f"a packet of {size} bytes never conforms to a bucket of {self.burst_bytes} bytes"
            )
        return cost

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate_bps={self.rate_bps}, burst_bytes={self.burst_bytes}, "
            f"tokens={self._tokens / NANOBITS_PER_BYTE:g} B at {self._last} ns)"
        )
