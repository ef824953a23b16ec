"""The deadman: a robot holds, then stops, when fresh commands stop arriving (sans-IO).

State machine (time passed in, monotonic ns)::

    start -> STOPPED --feed--> ACTIVE --(quiet for hold_after)--> HOLDING
                ^                 ^                                  |
                |                 +---------------feed---------------+
                +--(quiet for stop_after)----------------------------+
    and from STOPPED, a feed goes straight back to ACTIVE.

The deadlines are measured from the arrival time of the last valid command, and are inclusive:
at exactly ``last + hold_after`` the robot holds.
"""

from __future__ import annotations

from telepresence.exceptions import ConfigError
from telepresence.wire import RobotMode

__all__ = ["Deadman"]


class Deadman:
    """Tracks the last valid command and says which safety mode the robot must be in."""

    __slots__ = ("_last", "hold_after_ns", "mode", "stop_after_ns")

    def __init__(self, hold_after_ns: int, stop_after_ns: int) -> None:
        if hold_after_ns <= 0:
            raise ConfigError(f"hold-after must be > 0, got {hold_after_ns / 1e6:g} ms")
        if stop_after_ns < hold_after_ns:
            raise ConfigError(
                f"stop-after ({stop_after_ns / 1e6:g} ms) must be >= hold-after "
                f"({hold_after_ns / 1e6:g} ms)"
            )
        self.hold_after_ns = hold_after_ns
        self.stop_after_ns = stop_after_ns
        self.mode = RobotMode.STOPPED
        self._last: int | None = None

    def feed(self, command_time_ns: int) -> None:
        """A valid command that arrived at `command_time_ns` was accepted."""
        if self._last is None or command_time_ns > self._last:
            self._last = command_time_ns

    def poll(self, now_ns: int) -> RobotMode | None:
        """Update the mode for `now_ns`; return the new mode if it changed, else None."""
        if self._last is None:
            mode = RobotMode.STOPPED
        else:
            quiet = now_ns - self._last
            if quiet >= self.stop_after_ns:
                mode = RobotMode.STOPPED
            elif quiet >= self.hold_after_ns:
                mode = RobotMode.HOLDING
            else:
                mode = RobotMode.ACTIVE
        if mode is self.mode:
            return None
        self.mode = mode
        return mode
