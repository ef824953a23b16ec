"""Control-tick scheduling: the precise ticker and the phase alignment to the station."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from telepresence import aio
from telepresence.aio import PreciseTicker
from telepresence.apps import ALIGN_MARGIN_NS, alignment_shift

US = 1_000
PERIOD = 2_000 * US


def test_phase_locked_arrivals_move_ticks_to_just_after_them() -> None:
    rng = np.random.default_rng(1)
    tick = 10**12
    # commands arrive 700 µs after each tick, ±30 µs
    arrivals = [tick + k * PERIOD + 700 * US + int(rng.normal(0, 30 * US)) for k in range(64)]
    shift = alignment_shift(arrivals, tick, PERIOD)
    assert shift == pytest.approx(700 * US + ALIGN_MARGIN_NS, abs=15 * US)


def test_arrivals_just_before_a_tick_wrap_around() -> None:
    tick = 10**12
    arrivals = [tick + k * PERIOD - 100 * US for k in range(1, 65)]  # 100 µs before each tick
    shift = alignment_shift(arrivals, tick, PERIOD)
    assert shift == pytest.approx(-100 * US + ALIGN_MARGIN_NS, abs=1 * US)


def test_spread_or_few_arrivals_leave_the_schedule_alone() -> None:
    tick = 10**12
    uniform = [tick + k * 1_337 * US for k in range(200)]  # another rate: phases everywhere
    assert alignment_shift(uniform, tick, PERIOD) is None
    assert alignment_shift([tick + 500 * US] * 10, tick, PERIOD) is None


def test_ticker_keeps_its_period_and_shift_moves_the_phase() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        ticks: list[int] = []
        done = asyncio.Event()

        def on_tick(t: int) -> None:
            ticks.append(t)
            if len(ticks) == 50:
                ticker.shift(300 * US)
            if len(ticks) >= 100:
                done.set()

        ticker = PreciseTicker(loop, PERIOD, on_tick)
        ticker.start()
        await asyncio.wait_for(done.wait(), 5)
        ticker.stop()
        return ticks

    ticks = aio.run(main())
    gaps = np.diff(ticks)
    # scheduled times (not wall-clock): exactly one period apart, except one shifted gap
    # (ticks skipped under load show up as whole extra periods)
    assert all(g % PERIOD in (0, 300 * US) for g in gaps)
    assert sum(1 for g in gaps if g % PERIOD == 300 * US) == 1


def test_ticker_never_fires_before_its_time() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        early: list[int] = []
        done = asyncio.Event()

        def on_tick(t: int) -> None:
            early.append(t - time.monotonic_ns())
            if len(early) >= 200:
                done.set()

        ticker = PreciseTicker(loop, 1_000 * US, on_tick)
        ticker.start()
        await asyncio.wait_for(done.wait(), 5)
        ticker.stop()
        return early

    assert max(aio.run(main())) <= 0  # the callback runs at or after the scheduled time
