"""The deadman, driven by a hand clock: hold exactly at the deadline, stop later, resume."""

import pytest

from telepresence.deadman import Deadman
from telepresence.exceptions import ConfigError
from telepresence.wire import RobotMode

MS = 1_000_000
HOLD, STOP = 50 * MS, 500 * MS


def test_starts_stopped_and_stays_stopped_without_commands() -> None:
    d = Deadman(HOLD, STOP)
    assert d.mode is RobotMode.STOPPED
    assert d.poll(10 * STOP) is None
    assert d.mode is RobotMode.STOPPED


def test_hold_exactly_at_deadline_then_stop_then_resume() -> None:
    d = Deadman(HOLD, STOP)
    t0 = 1_000 * MS
    d.feed(t0)
    assert d.poll(t0) is RobotMode.ACTIVE
    assert d.poll(t0 + HOLD - 1) is None
    assert d.mode is RobotMode.ACTIVE
    assert d.poll(t0 + HOLD) is RobotMode.HOLDING  # inclusive deadline
    assert d.poll(t0 + STOP - 1) is None
    assert d.mode is RobotMode.HOLDING
    assert d.poll(t0 + STOP) is RobotMode.STOPPED
    assert d.poll(t0 + 10 * STOP) is None
    d.feed(t0 + 11 * STOP)
    assert d.poll(t0 + 11 * STOP + 1) is RobotMode.ACTIVE


def test_resume_from_hold_restarts_both_deadlines() -> None:
    d = Deadman(HOLD, STOP)
    d.feed(0)
    d.poll(0)
    assert d.poll(HOLD + MS) is RobotMode.HOLDING
    d.feed(HOLD + 2 * MS)
    assert d.poll(HOLD + 2 * MS) is RobotMode.ACTIVE
    assert d.poll(2 * HOLD + 2 * MS - 1) is None
    assert d.poll(2 * HOLD + 2 * MS) is RobotMode.HOLDING


def test_older_feed_does_not_move_deadline_back() -> None:
    d = Deadman(HOLD, STOP)
    d.feed(100 * MS)
    d.feed(90 * MS)
    d.poll(100 * MS)
    assert d.poll(100 * MS + HOLD - 1) is None
    assert d.mode is RobotMode.ACTIVE


@pytest.mark.parametrize(
    ("hold", "stop", "match"), [(0, STOP, "hold-after"), (HOLD, HOLD - 1, "stop-after")]
)
def test_bad_deadlines_name_the_option(hold: int, stop: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Deadman(hold, stop)
