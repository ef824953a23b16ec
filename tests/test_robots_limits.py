"""`CommandGuard`: refusals, clamping, no mutation, identity when nothing changes, and speed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robots.api import (
    BaseSpec,
    BaseVelocityCommand,
    ControlMode,
    GripperSpec,
    JointCommand,
    JointSpec,
    Manifest,
    PoseCommand,
)
from robots.exceptions import InvalidCommand
from robots.limits import QUATERNION_TOLERANCE, CommandGuard

LOWER = np.array([-2.9, -1.8, -2.6, -3.0, -2.0, -3.0])
UPPER = -LOWER
VMAX = 3.0
EMAX = 50.0


def arm_manifest(*modes: ControlMode, gripper: bool = True) -> Manifest:
    return Manifest(
        robot_id="arm-under-test",
        kind="arm",
        control_modes=modes or (ControlMode.JOINT_POSITION,),
        control_rate_hz=500.0,
        joints=tuple(
            JointSpec(name=f"j{i}", lower=lo, upper=hi, max_velocity=VMAX, max_effort=EMAX)
            for i, (lo, hi) in enumerate(zip(LOWER, UPPER, strict=True))
        ),
        gripper=GripperSpec(lower=0.0, upper=1.0) if gripper else None,
    )


def base_manifest(holonomic: bool = False) -> Manifest:
    return Manifest(
        robot_id="base-under-test",
        kind="mobile-base",
        control_modes=(ControlMode.BASE_VELOCITY,),
        control_rate_hz=100.0,
        base=BaseSpec(max_linear=1.0, max_angular=2.0, holonomic=holonomic),
    )


def view(values: Any, dtype: str = "<f8") -> np.ndarray:
    """A read-only array over bytes, like a decoded datagram."""
    return np.frombuffer(np.asarray(values, dtype=dtype).tobytes(), dtype=dtype)


GUARD = CommandGuard(arm_manifest())


def test_command_within_limits_is_returned_as_is() -> None:
    cmd = JointCommand(
        positions=view([0.1, -0.2, 0.3, 0.0, 1.0, -1.0]),
        velocities=view([0.5] * 6),
        efforts=view([1.0] * 6),
        gripper=0.5,
        ref=42,
    )
    out, clamped = GUARD.check(cmd)
    assert out is cmd
    assert clamped is False


def test_decoded_and_built_commands_in_range_take_the_fast_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The fast path tests the dtype by identity: if numpy ever handed out another float64
    # dtype object, every command would silently take the slower full path.
    from telepresence.wire import decode, encode

    def full_path(command: Any) -> None:
        raise AssertionError(f"full path taken for {command}")

    guard = CommandGuard(arm_manifest())
    monkeypatch.setitem(guard._checkers, JointCommand, full_path)
    built = JointCommand(positions=np.linspace(-0.5, 0.5, 6), gripper=0.5)
    decoded = decode(encode(built, stream=1, session=1, seq=1, send_time_ns=0)).message
    for cmd in (built, decoded, JointCommand(positions=view(UPPER))):
        assert guard.check(cmd) == (cmd, False)
    # ... and anything out of the fast path's reach still gets the full check.
    with pytest.raises(AssertionError, match="full path"):
        guard.check(JointCommand(positions=view([9.0] * 6)))


def test_limits_are_inclusive() -> None:
    cmd = JointCommand(positions=view(UPPER), velocities=view([-VMAX] * 6), gripper=1.0)
    assert GUARD.check(cmd) == (cmd, False)


def test_positions_are_clamped_into_a_new_command_without_touching_the_input() -> None:
    raw = [5.0, -5.0, 0.0, 0.0, 0.0, 0.0]
    cmd = JointCommand(positions=view(raw), gripper=0.5, ref=7)
    out, clamped = GUARD.check(cmd)
    assert clamped is True
    assert out is not cmd and isinstance(out, JointCommand)
    assert out.ref == 7 and out.gripper == 0.5
    np.testing.assert_array_equal(out.positions, [2.9, -1.8, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(cmd.positions, raw)


def test_velocities_efforts_and_gripper_are_clamped() -> None:
    cmd = JointCommand(
        positions=view(np.zeros(6)),
        velocities=view([10.0, -10.0, 1.0, 0, 0, 0]),
        efforts=view([100.0, 0, 0, 0, 0, -100.0]),
        gripper=1.5,
        ref=3,
    )
    out, clamped = GUARD.check(cmd)
    assert clamped and isinstance(out, JointCommand)
    assert out.positions is cmd.positions
    assert out.velocities is not None and out.efforts is not None
    np.testing.assert_array_equal(out.velocities, [3.0, -3.0, 1.0, 0, 0, 0])
    np.testing.assert_array_equal(out.efforts, [50.0, 0, 0, 0, 0, -50.0])
    assert out.gripper == 1.0
    low, clamped = GUARD.check(JointCommand(positions=view(np.zeros(6)), gripper=-0.1))
    assert clamped and isinstance(low, JointCommand) and low.gripper == 0.0


def test_float32_views_are_accepted() -> None:
    cmd = JointCommand(positions=view([0.1] * 6, "<f4"))
    assert GUARD.check(cmd) == (cmd, False)
    out, clamped = GUARD.check(JointCommand(positions=view([9.0] * 6, "<f4")))
    assert clamped and isinstance(out, JointCommand)
    np.testing.assert_array_equal(out.positions, UPPER)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["positions", "velocities", "efforts"])
def test_non_finite_arrays_are_refused(field: str, bad: float) -> None:
    values = np.zeros(6)
    values[3] = bad
    kw: dict[str, Any] = {"positions": view(np.zeros(6)), field: view(values)}
    with pytest.raises(InvalidCommand, match=rf"{field}\[3\].*finite"):
        GUARD.check(JointCommand(**kw))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_gripper_is_refused(bad: float) -> None:
    with pytest.raises(InvalidCommand, match="gripper"):
        GUARD.check(JointCommand(positions=view(np.zeros(6)), gripper=bad))


@pytest.mark.parametrize("field", ["positions", "velocities", "efforts"])
@pytest.mark.parametrize("n", [0, 5, 7])
def test_wrong_sizes_are_refused(field: str, n: int) -> None:
    kw: dict[str, Any] = {"positions": view(np.zeros(6)), field: view(np.zeros(n))}
    with pytest.raises(InvalidCommand, match=rf"{field} has {n} values.*6 joints"):
        GUARD.check(JointCommand(**kw))


def test_two_dimensional_positions_are_refused() -> None:
    with pytest.raises(InvalidCommand, match="shape"):
        GUARD.check(JointCommand(positions=np.zeros((2, 3))))


def test_non_numeric_positions_are_refused() -> None:
    with pytest.raises(InvalidCommand, match="positions"):
        GUARD.check(JointCommand(positions=np.array(["a"] * 6)))


def test_list_positions_are_converted_to_an_array() -> None:
    cmd = JointCommand(positions=[0.0] * 6)  # type: ignore[arg-type]
    out, clamped = GUARD.check(cmd)
    assert not clamped and isinstance(out, JointCommand)
    assert isinstance(out.positions, np.ndarray)


def test_gripper_on_a_robot_without_one_is_refused() -> None:
    guard = CommandGuard(arm_manifest(gripper=False))
    with pytest.raises(InvalidCommand, match="no gripper"):
        guard.check(JointCommand(positions=np.zeros(6), gripper=0.5))


def test_unsupported_mode_names_the_mode_and_the_supported_ones() -> None:
    pose = PoseCommand(position=np.zeros(3), orientation=np.array([0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(InvalidCommand, match=r"'ee_pose'.*supported control modes: joint_position"):
        GUARD.check(pose)
    with pytest.raises(InvalidCommand, match="base_velocity"):
        GUARD.check(BaseVelocityCommand(vx=0.1))


def test_non_command_is_refused() -> None:
    with pytest.raises(InvalidCommand, match="not a command"):
        GUARD.check("go left")  # type: ignore[arg-type]


def test_command_subclasses_are_checked_like_their_base() -> None:
    class TaggedCommand(JointCommand):
        __slots__ = ()

    cmd = TaggedCommand(positions=np.full(6, 9.0))
    out, clamped = GUARD.check(cmd)
    assert clamped and isinstance(out, TaggedCommand)


# -- poses ----------------------------------------------------------------------------------

POSE_GUARD = CommandGuard(arm_manifest(ControlMode.EE_POSE))


def pose(q: list[float], **kw: Any) -> PoseCommand:
    return PoseCommand(position=view([0.3, 0.0, 0.2]), orientation=view(q), **kw)


def test_unit_quaternion_is_accepted_unchanged() -> None:
    cmd = pose([0.0, 0.0, 0.0, 1.0], ref=5)
    assert POSE_GUARD.check(cmd) == (cmd, False)


def test_nearly_unit_quaternion_is_normalised_without_counting_as_clamped() -> None:
    cmd = pose([0.0, 0.0, 0.0, 1.0 + 0.5 * QUATERNION_TOLERANCE], ref=5)
    out, clamped = POSE_GUARD.check(cmd)
    assert clamped is False
    assert out is not cmd and isinstance(out, PoseCommand) and out.ref == 5
    assert np.linalg.norm(out.orientation) == pytest.approx(1.0, abs=1e-15)
    assert cmd.orientation[3] == 1.0 + 0.5 * QUATERNION_TOLERANCE


@pytest.mark.parametrize("w", [1.0 + 2 * QUATERNION_TOLERANCE, 0.5, 0.0])
def test_non_unit_quaternion_is_refused(w: float) -> None:
    with pytest.raises(InvalidCommand, match="unit quaternion"):
        POSE_GUARD.check(pose([0.0, 0.0, 0.0, w]))


@pytest.mark.parametrize("field", ["position", "orientation"])
def test_non_finite_pose_is_refused(field: str) -> None:
    cmd = pose([0.0, 0.0, 0.0, 1.0])
    bad = np.array(getattr(cmd, field))
    bad[0] = math.nan
    setattr(cmd, field, bad)
    with pytest.raises(InvalidCommand, match=field):
        POSE_GUARD.check(cmd)


def test_pose_sizes_and_gripper() -> None:
    with pytest.raises(InvalidCommand, match="position has 2 values"):
        POSE_GUARD.check(PoseCommand(position=np.zeros(2), orientation=np.array([0, 0, 0, 1.0])))
    out, clamped = POSE_GUARD.check(pose([0.0, 0.0, 0.0, 1.0], gripper=2.0))
    assert clamped and isinstance(out, PoseCommand) and out.gripper == 1.0


# -- bases ----------------------------------------------------------------------------------

BASE_GUARD = CommandGuard(base_manifest())


def test_base_command_within_limits_is_returned_as_is() -> None:
    cmd = BaseVelocityCommand(vx=-1.0, wz=2.0, ref=9)
    assert BASE_GUARD.check(cmd) == (cmd, False)


def test_base_velocities_are_clamped() -> None:
    out, clamped = BASE_GUARD.check(BaseVelocityCommand(vx=3.0, wz=-5.0, ref=9))
    assert clamped
    assert out == BaseVelocityCommand(vx=1.0, vy=0.0, wz=-2.0, ref=9)


def test_sideways_velocity_on_a_differential_drive_becomes_zero() -> None:
    out, clamped = BASE_GUARD.check(BaseVelocityCommand(vx=0.5, vy=0.2, wz=0.1, ref=1))
    assert clamped and out == BaseVelocityCommand(vx=0.5, vy=0.0, wz=0.1, ref=1)


def test_holonomic_base_keeps_and_clamps_vy() -> None:
    guard = CommandGuard(base_manifest(holonomic=True))
    cmd = BaseVelocityCommand(vx=0.5, vy=0.2)
    assert guard.check(cmd) == (cmd, False)
    out, clamped = guard.check(BaseVelocityCommand(vx=0.5, vy=-3.0))
    assert clamped and isinstance(out, BaseVelocityCommand) and out.vy == -1.0


@pytest.mark.parametrize("field", ["vx", "vy", "wz"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_base_command_is_refused(field: str, bad: float) -> None:
    kw: dict[str, Any] = {"vx": 0.0, field: bad}
    with pytest.raises(InvalidCommand, match=field):
        BASE_GUARD.check(BaseVelocityCommand(**kw))


def test_base_guard_refuses_joint_commands() -> None:
    with pytest.raises(InvalidCommand, match=r"'joint_position'.*base_velocity"):
        BASE_GUARD.check(JointCommand(positions=np.zeros(6)))


# -- properties -----------------------------------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False)
six = st.lists(finite, min_size=6, max_size=6)


@given(positions=six, velocities=six, gripper=st.floats(-10, 10))
def test_clamped_output_is_within_limits_and_idempotent(
    positions: list[float], velocities: list[float], gripper: float
) -> None:
    cmd = JointCommand(positions=view(positions), velocities=view(velocities), gripper=gripper)
    out, clamped = GUARD.check(cmd)
    assert isinstance(out, JointCommand) and out.velocities is not None
    assert out.gripper is not None
    assert np.all(out.positions >= LOWER) and np.all(out.positions <= UPPER)
    assert np.all(np.abs(out.velocities) <= VMAX)
    assert 0.0 <= out.gripper <= 1.0
    outside = (
        np.any(np.asarray(positions) < LOWER)
        or np.any(np.asarray(positions) > UPPER)
        or np.any(np.abs(velocities) > VMAX)
        or not 0.0 <= gripper <= 1.0
    )
    assert clamped == bool(outside)
    assert (out is cmd) == (not outside)
    assert GUARD.check(out) == (out, False)
    np.testing.assert_array_equal(cmd.positions, positions)


@given(vx=finite, vy=finite, wz=finite)
def test_base_output_is_within_limits(vx: float, vy: float, wz: float) -> None:
    out, clamped = BASE_GUARD.check(BaseVelocityCommand(vx=vx, vy=vy, wz=wz))
    assert isinstance(out, BaseVelocityCommand)
    assert abs(out.vx) <= 1.0 and out.vy == 0.0 and abs(out.wz) <= 2.0
    assert clamped == (abs(vx) > 1.0 or vy != 0.0 or abs(wz) > 2.0)


near_limits = st.one_of(
    st.sampled_from([-3.0, -2.9, -1.8, 0.0, -0.0, 1.8, 2.6, 2.9, 3.0, math.nan, math.inf,
                     -math.inf, np.nextafter(2.9, 3.0), np.nextafter(-2.9, -3.0)]),
    st.floats(-4.0, 4.0),
)  # fmt: skip


@given(
    positions=st.lists(near_limits, min_size=5, max_size=7),
    gripper=st.one_of(st.none(), st.sampled_from([0.0, 1.0, -0.0, 1.5, math.nan]), st.floats()),
    dtype=st.sampled_from(["<f8", "<f4", ">f8"]),
    feed_forward=st.booleans(),
)
def test_the_fast_path_accepts_exactly_what_passes_unchanged(
    positions: list[float], gripper: float | None, dtype: str, feed_forward: bool
) -> None:
    # The generated fast path only ever accepts; it must accept a command exactly when it is
    # float64 positions of the joint count, in limits, no feed-forward, gripper None or in limits.
    array = view(positions, dtype)
    cmd = JointCommand(
        positions=array, velocities=view([0.0] * len(positions)) if feed_forward else None,
        gripper=gripper,
    )  # fmt: skip
    values = np.asarray(positions, dtype=np.float64)
    expected = (
        dtype == "<f8" and not feed_forward and len(positions) == 6
        and bool(np.all((values >= LOWER[: len(values)]) & (values <= UPPER[: len(values)])))
        and (gripper is None or 0.0 <= gripper <= 1.0)
    )  # fmt: skip
    assert GUARD._joints_within(cmd) is expected
    if expected:
        assert GUARD.check(cmd) == (cmd, False)
        assert GUARD._check_joint_fully(cmd) == (cmd, False)  # the full check agrees


def test_the_fast_path_refuses_non_finite_limits() -> None:
    from robots.limits import _joints_within

    with pytest.raises(ValueError, match="not a finite float"):
        _joints_within((0.0,), (math.inf,), None)
    with pytest.raises(ValueError, match="not a finite float"):
        _joints_within((0.0,), (1.0,), (np.float64(0), 1.0))


def test_limits_given_as_numpy_scalars_work_in_the_fast_path() -> None:
    manifest = Manifest(
        robot_id="np-0", kind="arm", control_modes=(ControlMode.JOINT_POSITION,),
        control_rate_hz=500.0,
        joints=tuple(JointSpec(name=f"j{i}", lower=np.float64(-1), upper=np.float32(1),
                               max_velocity=np.float64(2)) for i in range(3)),
        gripper=GripperSpec(lower=np.float64(0), upper=np.float64(1)),
    )  # fmt: skip
    guard = CommandGuard(manifest)
    inside = JointCommand(positions=view([0.5, -0.5, 1.0]), gripper=np.float64(0.5))
    assert guard._joints_within(inside) and guard.check(inside) == (inside, False)
    outside = JointCommand(positions=view([0.5, -0.5, 1.5]), gripper=0.5)
    assert not guard._joints_within(outside) and guard.check(outside)[1] is True
