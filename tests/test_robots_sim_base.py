"""sim-base: exact actuation delay, acceleration ramps, exact unicycle pose, hold/stop, kit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.api import BaseState, BaseVelocityCommand, ControlMode, JointCommand, SensorKind
from robots.conformance import ManualClock, assert_conforms
from robots.exceptions import InvalidCommand, NotConnected, TimeWentBackwards
from robots.sim_base import SimBase, SimBaseConfig
from robots.sim_base.driver import wrap_angle

MS = 1_000_000
T0 = 3_000_000_000
DELAY = 5 * MS


def connected(**kw: Any) -> SimBase:
    base = SimBase(SimBaseConfig(**kw))
    base.connect(T0)
    return base


def pose(base: SimBase, t: int) -> BaseState:
    state = base.read(t)
    assert state.base is not None and state.joints is None
    return state.base


def go(vx: float = 0.0, wz: float = 0.0, ref: int = 1) -> BaseVelocityCommand:
    return BaseVelocityCommand(vx=vx, wz=wz, ref=ref)


def test_manifest() -> None:
    m = SimBase().manifest
    assert m.kind == "mobile-base" and m.robot_id == "sim-base-0"
    assert m.control_modes == (ControlMode.BASE_VELOCITY,)
    assert m.base is not None
    assert (m.base.max_linear, m.base.max_angular, m.base.holonomic) == (1.0, 2.0, False)
    assert [s.kind for s in m.sensors] == [SensorKind.ODOMETRY]
    assert m.joints == ()


def test_use_before_connect_and_time_going_backwards_are_refused() -> None:
    base = SimBase()
    with pytest.raises(NotConnected):
        base.apply(go(0.5), T0)
    base.connect(T0)
    base.read(T0 + 10)
    with pytest.raises(TimeWentBackwards):
        base.apply(go(0.5), T0 + 9)
    base.close()
    base.close()
    assert not base.is_connected
    with pytest.raises(NotConnected):
        base.read(T0 + 20)


def test_actuation_delay_is_exact() -> None:
    base = connected()
    base.apply(go(0.6, ref=8), T0)
    before = base.read(T0 + DELAY - 1)
    assert before.actuated_ref is None and before.base is not None and before.base.vx == 0.0
    at = base.read(T0 + DELAY)
    assert (at.actuated_ref, at.actuated_ns) == (8, T0 + DELAY)
    assert pose(base, T0 + DELAY + 100 * MS).vx == pytest.approx(0.15, abs=1e-12)


def test_straight_line_ramp_then_cruise() -> None:
    base = connected(linear_acceleration=1.5)
    base.apply(go(0.6), T0)
    start = T0 + DELAY
    half = pose(base, start + 200 * MS)
    assert (half.x, half.y, half.theta) == pytest.approx((0.5 * 1.5 * 0.2**2, 0.0, 0.0), abs=1e-12)
    assert half.vx == pytest.approx(0.3, abs=1e-12)
    cruise = pose(base, start + 1000 * MS)
    assert cruise.x == pytest.approx(0.12 + 0.6 * 0.6, abs=1e-12)
    assert cruise.vx == 0.6


def test_turn_in_place_ramp_then_constant_rate() -> None:
    base = connected(angular_acceleration=4.0)
    base.apply(go(wz=1.0), T0)
    start = T0 + DELAY
    assert pose(base, start + 100 * MS).theta == pytest.approx(0.02, abs=1e-12)
    later = pose(base, start + 1250 * MS)
    assert later.theta == pytest.approx(0.125 + 1.0, abs=1e-12)
    assert (later.x, later.y, later.wz) == (0.0, 0.0, 1.0)


def test_heading_is_wrapped() -> None:
    base = connected(angular_acceleration=4.0)
    base.apply(go(wz=2.0), T0)
    start = T0 + DELAY
    for ms in range(0, 10_000, 137):
        theta = pose(base, start + ms * MS).theta
        assert -math.pi < theta <= math.pi
        t = ms / 1000
        expected = 0.5 * 4.0 * t * t if t <= 0.5 else 0.5 + 2.0 * (t - 0.5)
        assert abs(wrap_angle(theta - expected)) < 1e-9


def test_steady_arc_is_a_circle() -> None:
    base = connected()
    base.apply(go(0.5, 1.0), T0)
    start = T0 + DELAY + 1000 * MS  # both ramps are over
    first = pose(base, start)
    radius = 0.5 / 1.0
    centre = (first.x - radius * math.sin(first.theta), first.y + radius * math.cos(first.theta))
    for ms in (1, 333, 1000, 5000, 12_345):
        p = pose(base, start + ms * MS)
        assert math.hypot(p.x - centre[0], p.y - centre[1]) == pytest.approx(radius, abs=1e-12)
        assert wrap_angle(p.theta - first.theta - ms / 1000) == pytest.approx(0.0, abs=1e-12)


def reference_pose(
    v_target: float, w_target: float, a: float, alpha: float, t: float
) -> tuple[float, float, float]:
    """Pose after ``t`` s from rest, by composite Simpson on a fine grid (independent check)."""
    n = 400_000
    s = np.linspace(0.0, t, n + 1)
    v = np.sign(v_target) * np.minimum(a * s, abs(v_target))
    tw = abs(w_target) / alpha
    theta = np.sign(w_target) * np.where(
        s <= tw, 0.5 * alpha * s**2, 0.5 * alpha * tw**2 + abs(w_target) * (s - tw)
    )
    weights = np.ones(n + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    h = t / n
    return (
        float(h / 3 * np.sum(weights * v * np.cos(theta))),
        float(h / 3 * np.sum(weights * v * np.sin(theta))),
        float(theta[-1]),
    )


@pytest.mark.parametrize(("vx", "wz"), [(0.8, 1.5), (-0.4, 2.0), (1.0, -0.3)])
def test_pose_during_ramps_matches_an_independent_integration(vx: float, wz: float) -> None:
    base = connected(linear_acceleration=1.5, angular_acceleration=4.0)
    base.apply(go(vx, wz), T0)
    for ms in (150, 420, 900):
        p = pose(base, T0 + DELAY + ms * MS)
        x, y, theta = reference_pose(vx, wz, 1.5, 4.0, ms / 1000)
        assert (p.x, p.y) == pytest.approx((x, y), abs=1e-10)
        assert wrap_angle(p.theta - theta) == pytest.approx(0.0, abs=1e-12)


def test_targets_are_clamped_to_the_manifest() -> None:
    base = connected()
    base.apply(go(5.0, -9.0), T0)
    p = pose(base, T0 + 5000 * MS)
    assert (p.vx, p.wz) == (1.0, -2.0)


def test_other_commands_are_refused() -> None:
    base = connected()
    with pytest.raises(InvalidCommand, match="base_velocity"):
        base.apply(JointCommand(positions=np.zeros(2)), T0)
    with pytest.raises(InvalidCommand, match="finite"):
        base.apply(go(math.nan), T0)


def test_hold_decelerates_at_the_limit_and_drops_pending() -> None:
    base = connected(linear_acceleration=1.5)
    base.apply(go(0.6, ref=1), T0)
    cruising = T0 + DELAY + 1000 * MS
    before = pose(base, cruising)
    base.apply(go(1.0, ref=2), cruising)
    base.hold(cruising + 1 * MS)
    assert pose(base, cruising + 201 * MS).vx == pytest.approx(0.3, abs=1e-12)
    rest = base.read(cruising + 2000 * MS)
    assert rest.actuated_ref == 1
    assert rest.base is not None and rest.base.vx == 0.0
    travelled = 0.6 * 0.001 + 0.6**2 / (2 * 1.5)
    assert rest.base.x - before.x == pytest.approx(travelled, abs=1e-12)


def test_stop_is_immediate_and_apply_resumes() -> None:
    base = connected()
    base.apply(go(0.6, 1.0, ref=1), T0)
    moving = pose(base, T0 + 500 * MS)
    assert moving.vx > 0 and moving.wz > 0
    base.stop(T0 + 500 * MS)
    stopped = pose(base, T0 + 500 * MS)
    assert (stopped.vx, stopped.wz) == (0.0, 0.0)
    assert (stopped.x, stopped.y, stopped.theta) == (moving.x, moving.y, moving.theta)
    assert pose(base, T0 + 3000 * MS) == stopped
    base.apply(go(0.6, ref=2), T0 + 3000 * MS)
    assert pose(base, T0 + 3100 * MS).vx > 0


SCRIPT = [0, 40 * MS, 333 * MS, 700 * MS]
"""Times after T0 of the commands in the read-rate test."""


@settings(max_examples=60, deadline=None)
@given(
    reads=st.lists(st.integers(1, 1500 * MS), max_size=40),
    vs=st.lists(st.floats(-1.2, 1.2), min_size=4, max_size=4),
    ws=st.lists(st.floats(-2.5, 2.5), min_size=4, max_size=4),
    hold_at=st.none() | st.integers(0, 1500 * MS),
)
def test_state_does_not_depend_on_how_often_it_is_read(
    reads: list[int], vs: list[float], ws: list[float], hold_at: int | None
) -> None:
    def run(read_times: list[int]) -> BaseState:
        base = connected(actuation_delay_ms=2.5)
        events = [(t, 0, i) for i, t in enumerate(SCRIPT)] + [(t, 2, -1) for t in read_times]
        if hold_at is not None:
            events.append((hold_at, 1, -1))
        for t, kind, i in sorted(events):
            if kind == 0:
                base.apply(go(vs[i], ws[i], ref=i), T0 + t)
            elif kind == 1:
                base.hold(T0 + t)
            else:
                base.read(T0 + t)
        return pose(base, T0 + 2000 * MS)

    sparse, dense = run([]), run(reads)
    assert (dense.x, dense.y) == pytest.approx((sparse.x, sparse.y), abs=1e-9)
    assert wrap_angle(dense.theta - sparse.theta) == pytest.approx(0.0, abs=1e-9)
    assert (dense.vx, dense.wz) == pytest.approx((sparse.vx, sparse.wz), abs=1e-9)


@given(st.floats(-1e4, 1e4))
def test_wrap_angle(angle: float) -> None:
    wrapped = wrap_angle(angle)
    assert -math.pi < wrapped <= math.pi
    assert math.cos(wrapped) == pytest.approx(math.cos(angle), abs=1e-9)
    assert math.sin(wrapped) == pytest.approx(math.sin(angle), abs=1e-9)


def test_wrap_angle_edges() -> None:
    assert wrap_angle(math.pi) == math.pi
    assert wrap_angle(-math.pi) == math.pi
    assert wrap_angle(0.0) == 0.0


def test_initial_pose_from_config() -> None:
    p = pose(connected(initial_x=1.0, initial_y=-2.0, initial_theta=-math.pi), T0 + 1)
    assert (p.x, p.y, p.theta) == (1.0, -2.0, math.pi)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"control_rate_hz": -1.0}, "control_rate_hz"),
        ({"actuation_delay_ms": 2000.0}, "actuation_delay_ms"),
        ({"max_linear": 0.0}, "max_linear"),
        ({"max_angular": math.inf}, "max_angular"),
        ({"linear_acceleration": 0.0}, "linear_acceleration"),
        ({"angular_acceleration": -1.0}, "angular_acceleration"),
        ({"initial_theta": 4.0}, "initial_theta"),
        ({"initial_x": math.nan}, "initial_x"),
    ],
)
def test_config_errors_name_the_field_and_range(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"SimBaseConfig\.{field} must be in"):
        SimBaseConfig(**kw)


def test_conformance_kit_passes_with_a_hand_clock() -> None:
    clock = ManualClock(T0)
    assert assert_conforms(SimBase, clock=clock, sleep=clock.sleep).ok
