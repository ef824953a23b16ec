"""What the built-in simulated drivers share: config range checks, the clock discipline and the
actuation delay line.

A simulated driver is a piecewise-exact model: between two *events* (a command taking effect
at ``apply time + actuation delay``) its dynamics have a closed form, so advancing it to ``now``
integrates segment by segment and the result does not depend on how often `read` is called.

State machine::

    created ──connect──► connected ──close──► closed ──connect──► connected ...
                           │  apply: queue (effective_ns, ref, target), advance to now
                           │  read:  advance to now, report
                           │  hold / stop: advance to now, drop the queue, subclass action
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import deque
from typing import Generic, TypeVar

from robots.api import Command, Driver, DriverConfig
from robots.exceptions import NotConnected, TimeWentBackwards

__all__ = ["SimulatedDriver", "check_range"]

logger = logging.getLogger(__name__)

TargetT = TypeVar("TargetT")


def check_range(
    owner: str,
    field: str,
    value: float,
    lo: float,
    hi: float,
    *,
    unit: str = "",
    lo_open: bool = False,
) -> None:
    """Raise ValueError naming ``owner.field`` and its range unless ``lo (<|<=) value <= hi``."""
    ok = isinstance(value, int | float) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        suffix = f" {unit}" if unit else ""
        raise ValueError(
            f"{owner}.{field} must be in {bracket}{lo:g}, {hi:g}]{suffix}, got {value!r}"
        )


class SimulatedDriver(Driver, Generic[TargetT]):
    """Base of the simulated drivers: connection state, monotonic time and the delay line.

    Subclasses implement `_integrate` (advance the model by a number of seconds with the current
    target), `_set_target` (a queued command takes effect) and `_target_from` (turn a command
    into a private target, copying arrays).
    """

    def __init__(self, config: DriverConfig | None, actuation_delay_ms: float) -> None:
        super().__init__(config)
        self._delay_ns = round(actuation_delay_ms * 1_000_000)
        self._connected = False
        self._t: int | None = None
        self._pending: deque[tuple[int, int, TargetT]] = deque()
        self._actuated_ref: int | None = None
        self._actuated_ns: int | None = None

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def actuation_delay_ns(self) -> int:
        """Time from `apply` to the command becoming the actuators' target, ns."""
        return self._delay_ns

    @property
    def time_ns(self) -> int | None:
        """The time the model has been advanced to, or None before the first `connect`."""
        return self._t

    def connect(self, now_ns: int) -> None:
        if self._t is not None and now_ns < self._t:
            raise TimeWentBackwards(f"connect: now_ns {now_ns} is before {self._t}")
        self._t = now_ns
        self._pending.clear()
        self._on_connect()
        self._connected = True
        logger.debug("%s connected at %d", type(self).__name__, now_ns)

    def apply(self, command: Command, now_ns: int) -> None:
        self._check_time("apply", now_ns)
        target = self._target_from(command)
        self._pending.append((now_ns + self._delay_ns, command.ref, target))
        self._advance(now_ns)

    def hold(self, now_ns: int) -> None:
        self._check_time("hold", now_ns)
        self._advance(now_ns)
        self._pending.clear()
        self._on_hold()

    def stop(self, now_ns: int) -> None:
        self._check_time("stop", now_ns)
        self._advance(now_ns)
        self._pending.clear()
        self._on_stop()

    def close(self) -> None:
        if self._connected:
            logger.debug("%s closed at %s", type(self).__name__, self._t)
        self._connected = False
        self._pending.clear()

    # -- for subclasses --------------------------------------------------------------------

    def _check_time(self, what: str, now_ns: int) -> None:
        if not self._connected:
            raise NotConnected(f"{type(self).__name__}.{what}() called before connect()")
        assert self._t is not None
        if now_ns < self._t:
            raise TimeWentBackwards(
                f"{type(self).__name__}.{what}(): now_ns {now_ns} is before the last time "
                f"given, {self._t} (now_ns must be monotonic)"
            )

    def _advance(self, now_ns: int) -> None:
        """Integrate to ``now_ns``, letting queued commands take effect at their exact times."""
        t = self._t
        assert t is not None
        pending = self._pending
        while pending and pending[0][0] <= now_ns:
            effective_ns, ref, target = pending.popleft()
            if effective_ns > t:
                self._integrate((effective_ns - t) * 1e-9)
                t = effective_ns
            self._set_target(target)
            self._actuated_ref = ref
            self._actuated_ns = effective_ns
        if now_ns > t:
            self._integrate((now_ns - t) * 1e-9)
        self._t = now_ns

    @abstractmethod
    def _on_connect(self) -> None:
        """Bring the model to a holding state (called with the clock already set)."""

    @abstractmethod
    def _on_hold(self) -> None:
        """Hold: the queue is already empty."""

    @abstractmethod
    def _on_stop(self) -> None:
        """Stop: the queue is already empty."""

    @abstractmethod
    def _target_from(self, command: Command) -> TargetT:
        """Check the command's type and copy what the model needs (arrays may be views)."""

    @abstractmethod
    def _set_target(self, target: TargetT) -> None:
        """A queued command takes effect now."""

    @abstractmethod
    def _integrate(self, dt_s: float) -> None:
        """Advance the model by ``dt_s`` > 0 seconds toward the current target."""
