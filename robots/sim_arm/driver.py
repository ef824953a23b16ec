"""A simulated 6-joint arm with a gripper, a wrist force/torque sensor and a wrist camera.

Model, per axis (six joints and the gripper), toward a target ``g`` that changes only when a
queued command takes effect (``apply`` time + ``actuation_delay_ms``)::

    dx/dt = clip((g - x) / tau, -vmax, +vmax)

While ``|g - x| > vmax * tau`` the axis slews at ``vmax``; inside that band it decays as
``g - x(t) = (g - x0) * exp(-t / tau)``. Both phases have closed forms, so `_integrate` is exact
for any step and the state does not depend on how often `read` is called.

The wrist wrench is gravity acting on ``payload_kg`` (tilted by the pitch joints j2, j3, j5 and
turned by j6) with its centre of mass 8 cm out along the tool axis, plus a squeeze along the
tool axis proportional to how far the gripper is closed, plus seeded Gaussian noise. Velocity
and effort feed-forward in a `JointCommand` are accepted and ignored.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from robots._sim import SimulatedDriver
from robots.api import (
    Command,
    ControlMode,
    FloatArray,
    ForceTorque,
    GripperSpec,
    JointCommand,
    JointSpec,
    JointState,
    Manifest,
    RobotState,
    SensorKind,
    SensorSpec,
)
from robots.exceptions import InvalidCommand
from robots.sim_arm.config import JOINT_EFFORTS, JOINT_LIMITS, JOINT_NAMES, SimArmConfig

__all__ = ["SimArm"]

logger = logging.getLogger(__name__)

GRAVITY = 9.81
"""m/s²."""
COM_OFFSET_M = 0.08
"""Distance of the payload's centre of mass from the sensor along the tool axis, m."""
N_JOINTS = len(JOINT_NAMES)


class SimArm(SimulatedDriver[tuple[FloatArray, float | None]]):
    """The ``sim-arm`` driver: joint_position control of 6 joints plus a 0..1 gripper."""

    config_class = SimArmConfig
    reports_actuation = True
    config: SimArmConfig

    def __init__(self, config: SimArmConfig | None = None) -> None:
        cfg = config if config is not None else SimArmConfig()
        if not isinstance(cfg, SimArmConfig):
            raise TypeError(f"SimArm needs a SimArmConfig, got {type(cfg).__name__}")
        super().__init__(cfg, cfg.actuation_delay_ms)
        self._manifest = _build_manifest(cfg)
        self._lower = self._manifest.lower
        self._upper = self._manifest.upper
        self._tau = cfg.time_constant_ms * 1e-3
        self._vmax = np.array([cfg.max_velocity] * N_JOINTS + [cfg.gripper_speed])
        self._neg_vmax = -self._vmax
        self._band = self._vmax * self._tau
        self._wrench_noise = np.array([cfg.force_noise] * 3 + [cfg.torque_noise] * 3)
        self._rng = np.random.default_rng(cfg.seed)
        initial = cfg.initial_positions if cfg.initial_positions is not None else (0.0,) * 6
        self._x = np.array([*initial, cfg.initial_gripper], dtype=np.float64)
        """Positions of the six joints and the gripper."""
        self._v = np.zeros(N_JOINTS + 1)
        self._g = self._x.copy()
        """Target of each axis."""

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def read(self, now_ns: int) -> RobotState:
        self._check_time("read", now_ns)
        self._advance(now_ns)
        cfg = self.config
        positions = self._x[:N_JOINTS].copy()
        if cfg.position_noise > 0.0:
            positions += self._rng.normal(0.0, cfg.position_noise, N_JOINTS)
        return RobotState(
            time_ns=now_ns,
            joints=JointState(
                positions=positions,
                velocities=self._v[:N_JOINTS].copy(),
                gripper=float(self._x[N_JOINTS]),
            ),
            wrenches=[self._wrench(now_ns)],
            actuated_ref=self._actuated_ref,
            actuated_ns=self._actuated_ns,
        )

    # -- SimulatedDriver hooks ----------------------------------------------------------------

    def _on_connect(self) -> None:
        self._g[:] = self._x
        self._v[:] = 0.0

    def _on_hold(self) -> None:
        self._g[:] = self._x
        self._v[:] = 0.0

    def _on_stop(self) -> None:
        self._g[:] = self._x
        self._v[:] = 0.0

    def _target_from(self, command: Command) -> tuple[FloatArray, float | None]:
        if not isinstance(command, JointCommand):
            raise InvalidCommand(
                f"sim-arm accepts joint_position commands only, got {type(command).__name__}"
            )
        positions = command.positions
        if np.shape(positions) != (N_JOINTS,):
            raise InvalidCommand(
                f"JointCommand.positions must have {N_JOINTS} values, got shape "
                f"{np.shape(positions)}"
            )
        target = np.minimum(
            np.maximum(np.asarray(positions, dtype=np.float64), self._lower), self._upper
        )
        if not np.isfinite(target).all():
            raise InvalidCommand("JointCommand.positions must be finite")
        gripper = command.gripper
        if gripper is not None:
            if not math.isfinite(gripper):
                raise InvalidCommand("JointCommand.gripper must be finite")
            gripper = min(max(float(gripper), 0.0), 1.0)
        return target, gripper

    def _set_target(self, target: tuple[FloatArray, float | None]) -> None:
        positions, gripper = target
        self._g[:N_JOINTS] = positions
        if gripper is not None:
            self._g[N_JOINTS] = gripper
        self._set_velocity(self._g - self._x)

    def _integrate(self, dt_s: float) -> None:
        x, g, vmax, tau = self._x, self._g, self._vmax, self._tau
        error = g - x
        # Time spent slewing at vmax before the error enters the linear band, capped at dt.
        slew = np.abs(error)
        slew -= self._band
        slew /= vmax
        np.maximum(slew, 0.0, out=slew)
        np.minimum(slew, dt_s, out=slew)
        error -= np.copysign(vmax * slew, error)
        slew -= dt_s
        slew /= tau
        error *= np.exp(slew)
        np.subtract(g, error, out=x)
        self._set_velocity(error)

    def _set_velocity(self, error: FloatArray) -> None:
        """Velocity of the lag for a given error: clip(error / tau, -vmax, vmax)."""
        v = self._v
        np.divide(error, self._tau, out=v)
        np.maximum(v, self._neg_vmax, out=v)
        np.minimum(v, self._vmax, out=v)

    def _wrench(self, now_ns: int) -> ForceTorque:
        cfg = self.config
        _, q2, q3, _, q5, q6, gripper = self._x.tolist()
        pitch = q2 + q3 + q5
        load = cfg.payload_kg * GRAVITY
        sp = math.sin(pitch)
        fx = load * sp * math.cos(q6)
        fy = -load * sp * math.sin(q6)
        fz = -load * math.cos(pitch) - cfg.grip_force_n * (1.0 - gripper)
        wrench = np.array([fx, fy, fz, -COM_OFFSET_M * fy, COM_OFFSET_M * fx, 0.0])
        if cfg.force_noise > 0.0 or cfg.torque_noise > 0.0:
            wrench += self._rng.standard_normal(6) * self._wrench_noise
        return ForceTorque(sensor=0, time_ns=now_ns, force=wrench[:3], torque=wrench[3:])


def _build_manifest(cfg: SimArmConfig) -> Manifest:
    joints = tuple(
        JointSpec(name=name, lower=lo, upper=hi, max_velocity=cfg.max_velocity, max_effort=effort)
        for name, (lo, hi), effort in zip(JOINT_NAMES, JOINT_LIMITS, JOINT_EFFORTS, strict=True)
    )
    rate = cfg.control_rate_hz
    return Manifest(
        robot_id=cfg.robot_id,
        kind="arm",
        control_modes=(ControlMode.JOINT_POSITION,),
        control_rate_hz=rate,
        joints=joints,
        gripper=GripperSpec(lower=0.0, upper=1.0),
        sensors=(
            SensorSpec(
                name="joint_encoders",
                kind=SensorKind.JOINT_ENCODERS,
                rate_hz=rate,
                params={"joints": list(JOINT_NAMES), "resolution_rad": 1e-5},
            ),
            SensorSpec(
                name="wrist_ft",
                kind=SensorKind.FORCE_TORQUE,
                rate_hz=rate,
                params={"frame": "tool", "force_range_n": 200.0, "torque_range_nm": 10.0},
            ),
            SensorSpec(
                name="wrist_camera",
                kind=SensorKind.CAMERA,
                rate_hz=30.0,
                params={"width": 640, "height": 480, "pixel_format": "rgb24", "fov_deg": 70.0},
            ),
        ),
    )
