"""Event-loop selection and a precise periodic ticker for asyncio.

Event-loop timers on Linux round to about 1 ms (epoll and libuv take millisecond timeouts; uvloop
may even fire 0.5 ms early), too coarse for a 500 Hz-1 kHz control loop. `PreciseTicker` keeps
the schedule in a helper thread that sleeps with nanosecond timer slack and wakes early by the
wake-up latency it has learned (so it lands on the schedule, not ~50 µs after it), then hands
each tick to the event loop with `call_soon_threadsafe`, so the tick runs on the loop thread like
any other callback.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from telepresence.exceptions import ConfigError

__all__ = ["LOOP_CHOICES", "PreciseTicker", "loop_factory", "run"]

log = logging.getLogger(__name__)
T = TypeVar("T")

LOOP_CHOICES = ("auto", "uvloop", "asyncio")
_PR_SET_TIMERSLACK = 29


def loop_factory(kind: str = "auto") -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """Return an event-loop factory and the name of the loop it makes.

    ``auto`` takes uvloop when it is installed (the default asyncio loop drops most datagrams
    above ~50k/s), ``asyncio`` forces the standard loop.
    """
    if kind not in LOOP_CHOICES:
        raise ConfigError(f"unknown event loop {kind!r}; choose one of {', '.join(LOOP_CHOICES)}")
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if kind == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from exc
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def run(main: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """Run `main` to completion on the chosen event loop."""
    factory, _ = loop_factory(kind)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _reduce_timer_slack() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: keep the default slack
        log.debug("could not reduce timer slack; ticks may be late by ~50 µs more")


class PreciseTicker:
    """Call ``callback(tick_ns)`` on `loop` every `period_ns`, on schedule to tens of µs.

    `tick_ns` is the scheduled time of the tick. A tick that would be more than one period late
    is skipped and counted in `overruns` instead of firing in a burst.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        period_ns: int,
        callback: Callable[[int], None],
        *,
        start_ns: int | None = None,
        name: str = "ticker",
    ) -> None:
        if period_ns <= 0:
            raise ConfigError(f"tick period must be > 0 ns, got {period_ns}")
        self.period_ns = period_ns
        self.overruns = 0
        self.ticks = 0
        self._loop = loop
        self._callback = callback
        self._next = start_ns if start_ns is not None else time.monotonic_ns() + period_ns
        self._stop = threading.Event()
        self._early_ns = 50_000  # learned: how early to wake to absorb wake-up latency
        self._shift_ns = 0
        self._shift_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shift(self, ns: int) -> None:
        """Move the schedule by `ns` (negative: earlier) from the next tick on; the period is
        unchanged. Safe to call from any thread."""
        with self._shift_lock:
            self._shift_ns += ns

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _fire(self, tick_ns: int) -> None:
        if not self._stop.is_set():
            self._callback(tick_ns)

    def _run(self) -> None:
        _reduce_timer_slack()
        monotonic_ns = time.monotonic_ns
        while not self._stop.is_set():
            target = self._next
            wake_at = target - self._early_ns
            wait = wake_at - monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
                # Learn the wake-up latency (EWMA) so the next wake lands on the target.
                overshoot = monotonic_ns() - wake_at
                self._early_ns += (min(overshoot, 500_000) - self._early_ns) // 8
            while monotonic_ns() < target:  # woke early: never fire before the schedule
                time.sleep(0)  # releases the GIL while it waits
            now = monotonic_ns()
            if now - target > self.period_ns:
                missed = (now - target) // self.period_ns
                self.overruns += missed
                target += missed * self.period_ns
            self.ticks += 1
            try:
                self._loop.call_soon_threadsafe(self._fire, target)
            except RuntimeError:  # the loop closed under us
                return
            with self._shift_lock:
                shift, self._shift_ns = self._shift_ns, 0
            self._next = target + self.period_ns + shift
