"""The conformance kit passes good drivers and names what is wrong with bad ones."""

from __future__ import annotations

import numpy as np
import pytest

from robots.api import (
    Command,
    ControlMode,
    JointSpec,
    JointState,
    Manifest,
    PoseCommand,
    RobotState,
    SensorKind,
    SensorSpec,
)
from robots.conformance import CHECKS, ManualClock, assert_conforms, check_driver
from robots.exceptions import ConformanceError
from robots.sim_arm import SimArm
from robots.sim_base import SimBase


def run(driver_cls: type[SimArm] | type[SimBase], **kw: object) -> dict[str, tuple[bool, str]]:
    clock = ManualClock(1_000_000_000)
    report = check_driver(driver_cls, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]
    assert [c.name for c in report.checks] == list(CHECKS)
    return {c.name: (c.passed, c.message) for c in report.checks}


def failed(results: dict[str, tuple[bool, str]]) -> set[str]:
    return {name for name, (passed, _) in results.items() if not passed}


class LazyArm(SimArm):
    """Accepts commands and ignores them."""

    def apply(self, command: Command, now_ns: int) -> None:
        pass


class RestlessBase(SimBase):
    """Ignores hold and stop."""

    def hold(self, now_ns: int) -> None:
        pass

    def stop(self, now_ns: int) -> None:
        pass


class FragileArm(SimArm):
    """Raises when closed twice and stays connected."""

    closes = 0

    def close(self) -> None:
        self.closes += 1
        if self.closes > 1:
            raise RuntimeError("already closed")


class ShortArm(SimArm):
    """Reports one joint too few."""

    def read(self, now_ns: int) -> RobotState:
        state = super().read(now_ns)
        assert state.joints is not None
        state.joints = JointState(positions=state.joints.positions[:5], gripper=0.0)
        return state


class UnserialisableArm(SimArm):
    """Its manifest cannot be written as JSON."""

    @property
    def manifest(self) -> Manifest:
        sensor = SensorSpec(name="odd", kind=SensorKind.IMU, params={"handle": object()})
        return Manifest(
            robot_id="odd",
            kind="arm",
            control_modes=(ControlMode.JOINT_POSITION,),
            control_rate_hz=100.0,
            joints=(JointSpec(name="j", lower=-1, upper=1, max_velocity=1),),
            sensors=(sensor,),
        )


class PoseArm(SimArm):
    """Declares ee_pose first; its state has no pose to compare against."""

    @property
    def manifest(self) -> Manifest:
        m = super().manifest
        return Manifest(
            robot_id=m.robot_id,
            kind=m.kind,
            control_modes=(ControlMode.EE_POSE, ControlMode.JOINT_POSITION),
            control_rate_hz=m.control_rate_hz,
            joints=m.joints,
            gripper=m.gripper,
            sensors=m.sensors,
        )

    def apply(self, command: Command, now_ns: int) -> None:
        if not isinstance(command, PoseCommand):
            super().apply(command, now_ns)


class SilentArm(SimArm):
    """Claims to report actuation but never does."""

    def read(self, now_ns: int) -> RobotState:
        state = super().read(now_ns)
        state.actuated_ref = state.actuated_ns = None
        return state


def test_the_sims_pass() -> None:
    assert failed(run(SimArm)) == set()
    assert failed(run(SimBase)) == set()


def test_a_driver_that_does_not_move_fails_apply_moves_and_actuation() -> None:
    results = run(LazyArm)
    assert failed(results) == {"apply_moves", "actuation_report"}
    assert "still" in results["apply_moves"][1]
    assert "reports_actuation is True" in results["actuation_report"][1]


def test_a_driver_that_keeps_moving_after_stop_fails_stop() -> None:
    results = run(RestlessBase, timeout_s=0.5)
    assert failed(results) == {"stop"}
    assert "still moving" in results["stop"][1]


def test_close_must_be_idempotent() -> None:
    results = run(FragileArm)
    assert failed(results) == {"close"}
    assert "already closed" in results["close"][1]


def test_wrong_state_shapes_fail_read_state_and_skip_the_rest() -> None:
    results = run(ShortArm)
    assert "shape (5,), expected (6,)" in results["read_state"][1]
    assert failed(results) == {"read_state", "apply_moves", "actuation_report", "hold", "stop"} | {
        "apply_after_stop"
    }
    assert "not run" in results["hold"][1]
    assert results["close"][0]


def test_manifest_must_be_json() -> None:
    results = run(UnserialisableArm)
    assert not results["manifest"][0] and "TypeError" in results["manifest"][1]
    assert results["construct"][0] and results["close"][0]
    assert failed(results) == set(CHECKS) - {"construct", "close"}


def test_constructor_failure() -> None:
    class Broken(SimArm):
        def __init__(self) -> None:
            raise OSError("no such device")

    clock = ManualClock()
    report = check_driver(Broken, clock=clock, sleep=clock.sleep)
    assert not report.ok
    assert "no such device" in report.checks[0].message
    assert [c.name for c in report.checks] == list(CHECKS)


def test_modes_without_comparable_state_are_accepted_without_motion_check() -> None:
    results = run(PoseArm)
    assert results["apply_moves"] == (
        True,
        "command accepted; motion not checked (no comparable state for this mode)",
    )


def test_claiming_actuation_without_reporting_it_fails() -> None:
    assert failed(run(SilentArm)) == {"actuation_report"}


def test_user_command_replaces_the_generated_one() -> None:
    from robots.api import JointCommand

    command = JointCommand(positions=np.full(6, 0.4), gripper=0.2)
    assert failed(run(SimArm, command=command)) == set()


def test_raise_for_failures_and_report_text() -> None:
    clock = ManualClock()
    with pytest.raises(ConformanceError, match=r"LazyArm failed 2 check\(s\)") as info:
        assert_conforms(LazyArm, clock=clock, sleep=clock.sleep)
    assert "apply_moves" in str(info.value)
    assert isinstance(info.value, AssertionError)
    report = check_driver(SimArm, clock=clock, sleep=clock.sleep)
    text = str(report)
    assert text.splitlines()[0].endswith(": ok")
    assert "[pass] stop" in text
