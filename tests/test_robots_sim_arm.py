"""sim-arm: exact actuation delay, first-order lag, speed limit, determinism, hold/stop, kit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.api import BaseVelocityCommand, ControlMode, JointCommand, RobotState, SensorKind
from robots.conformance import ManualClock, assert_conforms, check_driver
from robots.exceptions import InvalidCommand, NotConnected, TimeWentBackwards
from robots.sim_arm import SimArm, SimArmConfig
from robots.sim_arm.driver import GRAVITY

MS = 1_000_000
T0 = 5_000_000_000


def quiet(**kw: Any) -> SimArmConfig:
    """A config without noise."""
    args: dict[str, Any] = {"force_noise": 0.0, "torque_noise": 0.0}
    args.update(kw)
    return SimArmConfig(**args)


def connected(config: SimArmConfig | None = None, t: int = T0) -> SimArm:
    arm = SimArm(config if config is not None else quiet())
    arm.connect(t)
    return arm


def joints(state: RobotState) -> tuple[np.ndarray, np.ndarray, float]:
    assert state.joints is not None
    assert state.joints.velocities is not None and state.joints.gripper is not None
    return state.joints.positions, state.joints.velocities, state.joints.gripper


def command(value: float | list[float], ref: int = 1, gripper: float | None = None) -> JointCommand:
    positions = np.full(6, value) if isinstance(value, float) else np.array(value)
    return JointCommand(positions=positions, gripper=gripper, ref=ref)


def test_manifest() -> None:
    m = SimArm(SimArmConfig(control_rate_hz=250.0, robot_id="arm-7")).manifest
    assert m.robot_id == "arm-7" and m.kind == "arm"
    assert m.control_modes == (ControlMode.JOINT_POSITION,)
    assert m.control_rate_hz == 250.0
    assert [j.name for j in m.joints] == ["j1", "j2", "j3", "j4", "j5", "j6"]
    assert [j.upper for j in m.joints] == [2.9, 1.8, 2.6, 3.0, 2.0, 3.0]
    assert all(j.lower == -j.upper and j.max_velocity == 3.0 for j in m.joints)
    assert m.gripper is not None and (m.gripper.lower, m.gripper.upper) == (0.0, 1.0)
    kinds = {s.kind: s for s in m.sensors}
    assert set(kinds) == {SensorKind.JOINT_ENCODERS, SensorKind.FORCE_TORQUE, SensorKind.CAMERA}
    camera = kinds[SensorKind.CAMERA]
    assert (camera.params["width"], camera.params["height"], camera.rate_hz) == (640, 480, 30.0)
    assert SimArm().manifest.control_rate_hz == 500.0


def test_use_before_connect_and_after_close_is_refused() -> None:
    assert not SimArm().is_connected
    arm = SimArm()
    for call in (
        lambda: arm.apply(command(0.1), T0),
        lambda: arm.read(T0),
        lambda: arm.hold(T0),
        lambda: arm.stop(T0),
    ):
        with pytest.raises(NotConnected, match="connect"):
            call()
    arm.connect(T0)
    seen = [arm.is_connected]
    arm.close()
    arm.close()
    seen.append(arm.is_connected)
    assert seen == [True, False]
    with pytest.raises(NotConnected):
        arm.read(T0)


def test_time_going_backwards_is_refused() -> None:
    arm = connected()
    arm.read(T0 + 10)
    for call in (
        lambda: arm.read(T0 + 9),
        lambda: arm.apply(command(0.1), T0 + 9),
        lambda: arm.hold(T0 + 9),
        lambda: arm.stop(T0 + 9),
    ):
        with pytest.raises(TimeWentBackwards, match="monotonic"):
            call()
    with pytest.raises(ValueError):
        arm.read(T0)
    arm.read(T0 + 10)  # the same time again is fine


def test_actuation_delay_is_exact() -> None:
    arm = connected(quiet(actuation_delay_ms=2.0, max_velocity=100.0))
    arm.apply(command(0.1, ref=11), T0)
    before = arm.read(T0 + 2 * MS - 1)
    assert before.actuated_ref is None and before.actuated_ns is None
    np.testing.assert_array_equal(joints(before)[0], np.zeros(6))
    at = arm.read(T0 + 2 * MS)
    assert at.actuated_ref == 11 and at.actuated_ns == T0 + 2 * MS
    np.testing.assert_array_equal(joints(at)[0], np.zeros(6))
    assert joints(at)[1] == pytest.approx(np.full(6, 0.1 / 0.02))
    after = arm.read(T0 + 3 * MS)
    assert joints(after)[0] == pytest.approx(np.full(6, 0.1 * (1 - math.exp(-1 / 20))), rel=1e-12)


def test_queued_commands_take_effect_in_order_at_their_own_times() -> None:
    arm = connected(quiet(actuation_delay_ms=2.0))
    arm.apply(command(0.1, ref=1), T0)
    arm.apply(command(0.2, ref=2), T0 + 1 * MS)
    states = [arm.read(T0 + d) for d in (2 * MS - 1, 2 * MS, 3 * MS - 1, 3 * MS)]
    assert [(s.actuated_ref, s.actuated_ns) for s in states] == [
        (None, None),
        (1, T0 + 2 * MS),
        (1, T0 + 2 * MS),
        (2, T0 + 3 * MS),
    ]


def test_zero_delay_takes_effect_at_apply_time() -> None:
    arm = connected(quiet(actuation_delay_ms=0.0))
    arm.apply(command(0.1, ref=4), T0 + 7)
    state = arm.read(T0 + 7)
    assert (state.actuated_ref, state.actuated_ns) == (4, T0 + 7)


@pytest.mark.parametrize("ms", [0.5, 5.0, 20.0, 60.0, 200.0])
def test_first_order_lag_matches_the_exponential(ms: float) -> None:
    arm = connected(quiet(actuation_delay_ms=2.0, time_constant_ms=20.0, max_velocity=100.0))
    target = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])
    arm.apply(command(list(target)), T0)
    t = T0 + 2 * MS + round(ms * MS)
    positions, velocities, _ = joints(arm.read(t))
    remaining = math.exp(-ms / 20.0)
    np.testing.assert_allclose(positions, target * (1 - remaining), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(velocities, target * remaining / 0.02, rtol=1e-12, atol=1e-15)


def test_speed_is_limited_then_the_lag_takes_over() -> None:
    arm = connected(quiet(actuation_delay_ms=2.0, time_constant_ms=20.0, max_velocity=3.0))
    arm.apply(command([1.5, 0, 0, 0, 0, 0]), T0)
    effective = T0 + 2 * MS
    positions, velocities, _ = joints(arm.read(effective + 200 * MS))
    assert positions[0] == pytest.approx(0.6, abs=1e-12)
    assert velocities[0] == pytest.approx(3.0, abs=1e-12)
    # The slew ends when the error is vmax * tau = 0.06 rad: after (1.5 - 0.06) / 3 = 0.48 s.
    positions, velocities, _ = joints(arm.read(effective + 530 * MS))
    error = 0.06 * math.exp(-0.05 / 0.02)
    assert positions[0] == pytest.approx(1.5 - error, abs=1e-12)
    assert velocities[0] == pytest.approx(error / 0.02, abs=1e-9)
    assert np.all(np.abs(velocities) <= 3.0)


def test_gripper_moves_at_its_own_speed() -> None:
    arm = connected(quiet(actuation_delay_ms=0.0, gripper_speed=2.0))
    arm.apply(command(0.0, gripper=1.0), T0)
    assert joints(arm.read(T0 + 100 * MS))[2] == pytest.approx(0.2, abs=1e-12)
    assert joints(arm.read(T0 + 2000 * MS))[2] == pytest.approx(1.0, abs=1e-9)


def test_targets_are_clamped_and_inputs_are_copied() -> None:
    arm = connected(quiet(actuation_delay_ms=1.0))
    positions = np.full(6, 10.0)
    arm.apply(JointCommand(positions=positions, gripper=3.0), T0)
    positions[:] = -10.0
    state = arm.read(T0 + 10_000 * MS)
    np.testing.assert_allclose(joints(state)[0], [2.9, 1.8, 2.6, 3.0, 2.0, 3.0], atol=1e-9)
    assert joints(state)[2] == pytest.approx(1.0)
    assert state.joints is not None
    state.joints.positions[:] = 0.0
    np.testing.assert_allclose(joints(arm.read(T0 + 10_001 * MS))[0][0], 2.9, atol=1e-9)


def test_other_command_types_and_bad_shapes_are_refused() -> None:
    arm = connected()
    with pytest.raises(InvalidCommand, match="joint_position"):
        arm.apply(BaseVelocityCommand(vx=1.0), T0)
    with pytest.raises(InvalidCommand, match="6 values"):
        arm.apply(JointCommand(positions=np.zeros(5)), T0)
    with pytest.raises(InvalidCommand, match="finite"):
        arm.apply(JointCommand(positions=np.full(6, math.nan)), T0)


def test_hold_drops_pending_commands_and_keeps_the_pose() -> None:
    arm = connected(quiet(actuation_delay_ms=2.0))
    arm.apply(command(1.0, ref=1), T0)
    arm.hold(T0 + 1 * MS)
    state = arm.read(T0 + 100 * MS)
    assert state.actuated_ref is None
    np.testing.assert_array_equal(joints(state)[0], np.zeros(6))


@pytest.mark.parametrize("action", ["hold", "stop"])
def test_hold_and_stop_freeze_a_moving_arm_and_apply_resumes(action: str) -> None:
    arm = connected(quiet(actuation_delay_ms=2.0))
    arm.apply(command(1.0, ref=1), T0)
    moving = joints(arm.read(T0 + 50 * MS))
    assert np.all(moving[1] > 0)
    getattr(arm, action)(T0 + 50 * MS)
    frozen = joints(arm.read(T0 + 50 * MS))
    np.testing.assert_array_equal(frozen[0], moving[0])
    np.testing.assert_array_equal(frozen[1], np.zeros(6))
    later = joints(arm.read(T0 + 500 * MS))
    np.testing.assert_array_equal(later[0], moving[0])
    arm.apply(command(1.0, ref=2), T0 + 500 * MS)
    resumed = arm.read(T0 + 600 * MS)
    assert resumed.actuated_ref == 2
    assert np.all(joints(resumed)[0] > moving[0])


def test_reconnect_keeps_the_pose() -> None:
    arm = connected(quiet(actuation_delay_ms=0.0))
    arm.apply(command(0.5), T0)
    pose = joints(arm.read(T0 + 1000 * MS))[0]
    arm.close()
    arm.connect(T0 + 2000 * MS)
    np.testing.assert_array_equal(joints(arm.read(T0 + 3000 * MS))[0], pose)


def test_initial_pose_from_config() -> None:
    initial = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    arm = connected(quiet(initial_positions=initial, initial_gripper=0.25))
    positions, velocities, gripper = joints(arm.read(T0 + 100 * MS))
    np.testing.assert_array_equal(positions, initial)
    np.testing.assert_array_equal(velocities, np.zeros(6))
    assert gripper == 0.25


def test_wrench_is_gravity_plus_squeeze() -> None:
    cfg = quiet(initial_positions=(0.0, 1.0, 0.5, 0.0, 0.0, 0.7), initial_gripper=0.25)
    arm = connected(cfg)
    state = arm.read(T0 + 1)
    assert len(state.wrenches) == 1
    w = state.wrenches[0]
    assert w.sensor == 0 and w.time_ns == T0 + 1
    squeeze = cfg.grip_force_n * 0.75
    gravity = w.force + np.array([0.0, 0.0, squeeze])
    assert np.linalg.norm(gravity) == pytest.approx(cfg.payload_kg * GRAVITY, rel=1e-12)
    assert gravity[2] == pytest.approx(-cfg.payload_kg * GRAVITY * math.cos(1.5), rel=1e-12)
    assert w.torque == pytest.approx([-0.08 * w.force[1], 0.08 * w.force[0], 0.0])


def test_wrench_noise_has_the_configured_spread() -> None:
    arm = connected(SimArmConfig(force_noise=0.5, torque_noise=0.0))
    forces = np.array([arm.read(T0 + i).wrenches[0].force for i in range(4000)])
    assert forces.std(axis=0) == pytest.approx([0.5] * 3, rel=0.1)


def test_position_noise_has_the_configured_spread_and_does_not_bias() -> None:
    arm = connected(quiet(position_noise=0.01))
    samples = np.array([joints(arm.read(T0 + i))[0] for i in range(4000)])
    assert samples.std(axis=0) == pytest.approx([0.01] * 6, rel=0.1)
    assert np.abs(samples.mean(axis=0)).max() < 0.002


def run_scripted(config: SimArmConfig) -> list[np.ndarray]:
    arm = connected(config)
    out = []
    for i in range(50):
        t = T0 + i * 2 * MS
        arm.apply(command(0.5 * math.sin(i / 10), ref=i), t)
        state = arm.read(t)
        out.append(np.concatenate([joints(state)[0], state.wrenches[0].force]))
    return out


def test_deterministic_given_the_seed() -> None:
    config = SimArmConfig(seed=123, position_noise=0.01, force_noise=0.1)
    a, b = run_scripted(config), run_scripted(config)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = run_scripted(SimArmConfig(seed=124, position_noise=0.01, force_noise=0.1))
    assert not np.array_equal(a[-1], c[-1])


SCRIPT = [(0, 0.8), (37 * MS, -0.5), (120 * MS, 1.2), (300 * MS, 0.1)]
"""(time after T0, target of every joint) of the commands in the read-rate test."""


@settings(max_examples=60, deadline=None)
@given(
    reads=st.lists(st.integers(1, 600 * MS), max_size=40),
    targets=st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4),
)
def test_state_does_not_depend_on_how_often_it_is_read(
    reads: list[int], targets: list[float]
) -> None:
    def run(read_times: list[int]) -> RobotState:
        arm = connected(quiet(actuation_delay_ms=3.3))
        events = sorted(
            [(t, 0, i) for i, (t, _) in enumerate(SCRIPT)] + [(t, 1, -1) for t in read_times]
        )
        for t, kind, i in events:
            if kind == 0:
                arm.apply(command([targets[i]] * 3 + [SCRIPT[i][1]] * 3, ref=i), T0 + t)
            else:
                arm.read(T0 + t)
        return arm.read(T0 + 700 * MS)

    sparse, dense = run([]), run(reads)
    np.testing.assert_allclose(joints(dense)[0], joints(sparse)[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(joints(dense)[1], joints(sparse)[1], rtol=0, atol=1e-9)
    assert (dense.actuated_ref, dense.actuated_ns) == (sparse.actuated_ref, sparse.actuated_ns)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"control_rate_hz": 0.0}, "control_rate_hz"),
        ({"actuation_delay_ms": -1.0}, "actuation_delay_ms"),
        ({"actuation_delay_ms": math.nan}, "actuation_delay_ms"),
        ({"time_constant_ms": 0.0}, "time_constant_ms"),
        ({"max_velocity": 0.0}, "max_velocity"),
        ({"gripper_speed": -1.0}, "gripper_speed"),
        ({"position_noise": -0.1}, "position_noise"),
        ({"force_noise": 1000.0}, "force_noise"),
        ({"payload_kg": -1.0}, "payload_kg"),
        ({"seed": -1}, "seed"),
        ({"initial_positions": (0.0,) * 5}, "initial_positions"),
        ({"initial_positions": (0.0, 2.0, 0.0, 0.0, 0.0, 0.0)}, r"initial_positions\[j2\]"),
        ({"initial_gripper": 1.5}, "initial_gripper"),
    ],
)
def test_config_errors_name_the_field_and_range(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"SimArmConfig\.{field} must"):
        SimArmConfig(**kw)


def test_conformance_kit_passes_with_a_hand_clock() -> None:
    clock = ManualClock(T0)
    report = assert_conforms(SimArm, clock=clock, sleep=clock.sleep)
    assert report.ok and [c.name for c in report.checks][-1] == "close"


def test_conformance_kit_passes_with_noise_and_a_slow_arm() -> None:
    clock = ManualClock()
    config = SimArmConfig(position_noise=1e-4, time_constant_ms=200.0, max_velocity=0.5)
    report = check_driver(SimArm, config, clock=clock, sleep=clock.sleep)
    assert report.ok, str(report)
