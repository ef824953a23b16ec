"""Configuration of the simulated 6-joint arm, and its fixed geometry (joint names and limits)."""

from __future__ import annotations

from dataclasses import dataclass

from robots._sim import check_range
from robots.api import DriverConfig

__all__ = ["JOINT_EFFORTS", "JOINT_LIMITS", "JOINT_NAMES", "SimArmConfig"]

JOINT_NAMES = ("j1", "j2", "j3", "j4", "j5", "j6")
"""Joint names, base to wrist."""

JOINT_LIMITS = ((-2.9, 2.9), (-1.8, 1.8), (-2.6, 2.6), (-3.0, 3.0), (-2.0, 2.0), (-3.0, 3.0))
"""(lower, upper) position limit per joint, rad."""

JOINT_EFFORTS = (150.0, 150.0, 80.0, 30.0, 30.0, 20.0)
"""Maximum absolute torque per joint, N·m."""


@dataclass(kw_only=True)
class SimArmConfig(DriverConfig):
    """Options of the ``sim-arm`` driver (``--driver-config KEY=VALUE``)."""

    robot_id: str = "sim-arm-0"
    """Identifies this robot instance in manifests, telemetry and recordings."""
    control_rate_hz: float = 500.0
    """Rate at which the endpoint should call apply/read, Hz, in (0, 10000]."""
    actuation_delay_ms: float = 2.0
    """Time from apply() to the command becoming the actuators' target, ms, in [0, 1000]."""
    time_constant_ms: float = 20.0
    """Time constant of the first-order lag toward the target, ms, in (0, 10000]."""
    max_velocity: float = 3.0
    """Speed limit of every joint, rad/s, in (0, 100]."""
    gripper_speed: float = 2.0
    """Speed limit of the gripper, full range (0..1) per second, in (0, 100]."""
    position_noise: float = 0.0
    """Standard deviation of Gaussian noise on measured joint positions, rad, in [0, 1]."""
    force_noise: float = 0.05
    """Standard deviation of Gaussian noise on each force component, N, in [0, 100]."""
    torque_noise: float = 0.005
    """Standard deviation of Gaussian noise on each torque component, N·m, in [0, 100]."""
    payload_kg: float = 0.8
    """Mass below the wrist force/torque sensor (tool and payload), kg, in [0, 100]."""
    grip_force_n: float = 10.0
    """Squeeze force along the tool axis when the gripper is fully closed, N, in [0, 1000]."""
    seed: int | None = 0
    """Seed of the noise generator; None draws a fresh seed from the OS."""
    initial_positions: tuple[float, ...] | None = None
    """Joint positions at the first connect, rad, 6 values within the joint limits (given on
    the command line as comma-separated numbers); None for all zeros."""
    initial_gripper: float = 0.0
    """Gripper opening at the first connect, in [0, 1] (0 closed)."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_range(
            name, "control_rate_hz", self.control_rate_hz, 0, 10_000, unit="Hz", lo_open=True
        )
        check_range(name, "actuation_delay_ms", self.actuation_delay_ms, 0, 1000, unit="ms")
        check_range(
            name, "time_constant_ms", self.time_constant_ms, 0, 10_000, unit="ms", lo_open=True
        )
        check_range(name, "max_velocity", self.max_velocity, 0, 100, unit="rad/s", lo_open=True)
        check_range(name, "gripper_speed", self.gripper_speed, 0, 100, unit="1/s", lo_open=True)
        check_range(name, "position_noise", self.position_noise, 0, 1, unit="rad")
        check_range(name, "force_noise", self.force_noise, 0, 100, unit="N")
        check_range(name, "torque_noise", self.torque_noise, 0, 100, unit="N·m")
        check_range(name, "payload_kg", self.payload_kg, 0, 100, unit="kg")
        check_range(name, "grip_force_n", self.grip_force_n, 0, 1000, unit="N")
        check_range(name, "initial_gripper", self.initial_gripper, 0, 1)
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"{name}.seed must be None or an integer >= 0, got {self.seed!r}")
        if self.initial_positions is not None:
            if len(self.initial_positions) != len(JOINT_NAMES):
                raise ValueError(
                    f"{name}.initial_positions must have {len(JOINT_NAMES)} values, got "
                    f"{len(self.initial_positions)}"
                )
            for joint, (lo, hi), q in zip(
                JOINT_NAMES, JOINT_LIMITS, self.initial_positions, strict=True
            ):
                check_range(name, f"initial_positions[{joint}]", q, lo, hi, unit="rad")
