"""The control lease: exactly one session may command the robot at a time (sans-IO).

State machine (time passed in, monotonic ns)::

    FREE --take(s)--> HELD(s) --release(s) / expire--> FREE
    HELD(s) --take(s)--> HELD(s), renewed          HELD(s) --take(o)--> refused (held by s)

A lease lapses `ttl_ns` after its last renewal; a holder renews it by taking it again or by
sending valid commands (`touch`). Observers never hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ControlLease", "LeaseDecision"]


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    granted: bool
    holder: int | None
    reason: str = ""


class ControlLease:
    """Who may command the robot."""

    __slots__ = ("_expires", "holder", "ttl_ns")

    def __init__(self, ttl_ns: int) -> None:
        if ttl_ns <= 0:
            raise ValueError(f"lease ttl must be > 0 ns, got {ttl_ns}")
        self.ttl_ns = ttl_ns
        self.holder: int | None = None
        """Session id holding the lease, or None."""
        self._expires = 0

    def expire(self, now: int) -> int | None:
        """Drop a lapsed lease; return the session that lost it, if any."""
        if self.holder is not None and now >= self._expires:
            lost, self.holder = self.holder, None
            return lost
        return None

    def take(self, session: int, now: int) -> LeaseDecision:
        """Take or renew the lease for `session`."""
        self.expire(now)
        if self.holder is not None and self.holder != session:
            return LeaseDecision(
                False, self.holder, f"control is held by session {self.holder:08x}"
            )
        self.holder = session
        self._expires = now + self.ttl_ns
        return LeaseDecision(True, session)

    def holds(self, session: int, now: int) -> bool:
        """True if `session` holds a lease that has not lapsed (nothing is renewed)."""
        return self.holder == session and now < self._expires

    def touch(self, session: int, now: int) -> bool:
        """Renew if `session` holds the lease (a valid command from it); True if it does."""
        if self.holder == session and now < self._expires:
            self._expires = now + self.ttl_ns
            return True
        return False

    def release(self, session: int) -> bool:
        """Give the lease up; True if `session` held it."""
        if self.holder == session:
            self.holder = None
            return True
        return False

    def remaining_ns(self, now: int) -> int | None:
        return None if self.holder is None else max(0, self._expires - now)
