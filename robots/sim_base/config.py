"""Configuration of the simulated differential-drive base."""

from __future__ import annotations

import math
from dataclasses import dataclass

from robots._sim import check_range
from robots.api import DriverConfig

__all__ = ["SimBaseConfig"]


@dataclass(kw_only=True)
class SimBaseConfig(DriverConfig):
    """Options of the ``sim-base`` driver (``--driver-config KEY=VALUE``)."""

    robot_id: str = "sim-base-0"
    """Identifies this robot instance in manifests, telemetry and recordings."""
    control_rate_hz: float = 100.0
    """Rate at which the endpoint should call apply/read, Hz, in (0, 10000]."""
    actuation_delay_ms: float = 5.0
    """Time from apply() to the command becoming the wheels' target, ms, in [0, 1000]."""
    max_linear: float = 1.0
    """Forward/backward speed limit, m/s, in (0, 20]."""
    max_angular: float = 2.0
    """Yaw rate limit, rad/s, in (0, 20]."""
    linear_acceleration: float = 1.5
    """Forward acceleration and braking limit, m/s², in (0, 100]."""
    angular_acceleration: float = 4.0
    """Yaw acceleration limit, rad/s², in (0, 100]."""
    initial_x: float = 0.0
    """x of the pose at the first connect, m, in [-1e6, 1e6]."""
    initial_y: float = 0.0
    """y of the pose at the first connect, m, in [-1e6, 1e6]."""
    initial_theta: float = 0.0
    """Heading at the first connect, rad, in [-pi, pi]."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_range(
            name, "control_rate_hz", self.control_rate_hz, 0, 10_000, unit="Hz", lo_open=True
        )
        check_range(name, "actuation_delay_ms", self.actuation_delay_ms, 0, 1000, unit="ms")
        check_range(name, "max_linear", self.max_linear, 0, 20, unit="m/s", lo_open=True)
        check_range(name, "max_angular", self.max_angular, 0, 20, unit="rad/s", lo_open=True)
        check_range(
            name, "linear_acceleration", self.linear_acceleration, 0, 100, unit="m/s²", lo_open=True
        )
        check_range(
            name,
            "angular_acceleration",
            self.angular_acceleration,
            0,
            100,
            unit="rad/s²",
            lo_open=True,
        )
        check_range(name, "initial_x", self.initial_x, -1e6, 1e6, unit="m")
        check_range(name, "initial_y", self.initial_y, -1e6, 1e6, unit="m")
        check_range(name, "initial_theta", self.initial_theta, -math.pi, math.pi, unit="rad")
