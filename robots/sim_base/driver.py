"""A simulated differential-drive base (a unicycle) with acceleration limits.

Model: the forward speed ``v`` and the yaw rate ``w`` each ramp toward their target at their
acceleration limit and then stay there; the targets change only when a queued command takes
effect (``apply`` time + ``actuation_delay_ms``), on `hold` (both become 0, reached at the
acceleration limits) and on `stop` (speed, rate and targets become 0 at once). The pose follows
the unicycle equations ``x' = v cos(theta)``, ``y' = v sin(theta)``, ``theta' = w``.

`_integrate` splits each step where a ramp ends. On a segment where ``v`` and ``w`` are
constant the pose moves along an arc in closed form; on a ramp segment ``theta`` is a quadratic
in time and the position integrals are evaluated by 8-point Gauss-Legendre quadrature on pieces
that turn by at most 0.25 rad, which is exact to float precision. Either way the result does not
depend on how often `read` is called. The heading is reported wrapped to (-pi, pi].
"""

from __future__ import annotations

import logging
import math

import numpy as np

from robots._sim import SimulatedDriver
from robots.api import (
    BaseSpec,
    BaseState,
    BaseVelocityCommand,
    Command,
    ControlMode,
    Manifest,
    RobotState,
    SensorKind,
    SensorSpec,
)
from robots.exceptions import InvalidCommand
from robots.sim_base.config import SimBaseConfig

__all__ = ["SimBase", "wrap_angle"]

logger = logging.getLogger(__name__)

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_GL_FRACTIONS = (_GL_NODES + 1.0) / 2.0
_MAX_TURN_PER_PIECE = 0.25
"""rad; keeps the quadrature exact to float precision."""
_TWO_PI = 2.0 * math.pi


def wrap_angle(angle: float) -> float:
    """``angle`` wrapped to (-pi, pi]."""
    return angle - _TWO_PI * math.ceil((angle - math.pi) / _TWO_PI)


def _sinc(u: float) -> float:
    if abs(u) < 1e-4:
        return 1.0 - u * u / 6.0
    return math.sin(u) / u


def _toward(value: float, target: float, rate: float) -> tuple[float, float]:
    """(acceleration, seconds until ``value`` reaches ``target`` at ``rate``)."""
    if value < target:
        return rate, (target - value) / rate
    if value > target:
        return -rate, (value - target) / rate
    return 0.0, math.inf


class SimBase(SimulatedDriver[tuple[float, float]]):
    """The ``sim-base`` driver: base_velocity control of a differential drive."""

    config_class = SimBaseConfig
    reports_actuation = True
    config: SimBaseConfig

    def __init__(self, config: SimBaseConfig | None = None) -> None:
        cfg = config if config is not None else SimBaseConfig()
        if not isinstance(cfg, SimBaseConfig):
            raise TypeError(f"SimBase needs a SimBaseConfig, got {type(cfg).__name__}")
        super().__init__(cfg, cfg.actuation_delay_ms)
        self._manifest = _build_manifest(cfg)
        self._x = cfg.initial_x
        self._y = cfg.initial_y
        self._theta = wrap_angle(cfg.initial_theta)
        self._v = 0.0
        self._w = 0.0
        self._v_target = 0.0
        self._w_target = 0.0

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def read(self, now_ns: int) -> RobotState:
        self._check_time("read", now_ns)
        self._advance(now_ns)
        return RobotState(
            time_ns=now_ns,
            base=BaseState(x=self._x, y=self._y, theta=self._theta, vx=self._v, wz=self._w),
            actuated_ref=self._actuated_ref,
            actuated_ns=self._actuated_ns,
        )

    # -- SimulatedDriver hooks ----------------------------------------------------------------

    def _on_connect(self) -> None:
        self._v = self._w = self._v_target = self._w_target = 0.0

    def _on_hold(self) -> None:
        self._v_target = self._w_target = 0.0

    def _on_stop(self) -> None:
        self._v = self._w = self._v_target = self._w_target = 0.0

    def _target_from(self, command: Command) -> tuple[float, float]:
        if not isinstance(command, BaseVelocityCommand):
            raise InvalidCommand(
                f"sim-base accepts base_velocity commands only, got {type(command).__name__}"
            )
        vx, wz = float(command.vx), float(command.wz)
        if not (math.isfinite(vx) and math.isfinite(wz)):
            raise InvalidCommand("BaseVelocityCommand.vx and .wz must be finite")
        lin, ang = self.config.max_linear, self.config.max_angular
        return min(max(vx, -lin), lin), min(max(wz, -ang), ang)

    def _set_target(self, target: tuple[float, float]) -> None:
        self._v_target, self._w_target = target

    def _integrate(self, dt_s: float) -> None:
        cfg = self.config
        remaining = dt_s
        while remaining > 0.0:
            av, tv = _toward(self._v, self._v_target, cfg.linear_acceleration)
            aw, tw = _toward(self._w, self._w_target, cfg.angular_acceleration)
            h = min(remaining, tv, tw)
            self._move(h, av, aw)
            self._v = self._v_target if h == tv else self._v + av * h
            self._w = self._w_target if h == tw else self._w + aw * h
            remaining -= h

    def _move(self, h: float, av: float, aw: float) -> None:
        """Advance the pose by ``h`` seconds with v, w ramping at ``av``, ``aw`` from now."""
        theta0, v0, w0 = self._theta, self._v, self._w
        turn = w0 * h + 0.5 * aw * h * h
        if av == 0.0 and aw == 0.0:
            half = 0.5 * turn
            distance = v0 * h * _sinc(half)
            self._x += distance * math.cos(theta0 + half)
            self._y += distance * math.sin(theta0 + half)
        else:
            bound = abs(w0) * h + 0.5 * abs(aw) * h * h
            pieces = max(1, math.ceil(bound / _MAX_TURN_PER_PIECE))
            step = h / pieces
            s = (np.arange(pieces)[:, None] + _GL_FRACTIONS[None, :]).ravel() * step
            weights = np.tile(_GL_WEIGHTS, pieces) * (0.5 * step)
            speed = weights * (v0 + av * s)
            theta = theta0 + s * (w0 + 0.5 * aw * s)
            self._x += float(speed @ np.cos(theta))
            self._y += float(speed @ np.sin(theta))
        self._theta = wrap_angle(theta0 + turn)


def _build_manifest(cfg: SimBaseConfig) -> Manifest:
    return Manifest(
        robot_id=cfg.robot_id,
        kind="mobile-base",
        control_modes=(ControlMode.BASE_VELOCITY,),
        control_rate_hz=cfg.control_rate_hz,
        base=BaseSpec(max_linear=cfg.max_linear, max_angular=cfg.max_angular, holonomic=False),
        sensors=(
            SensorSpec(
                name="odometry",
                kind=SensorKind.ODOMETRY,
                rate_hz=cfg.control_rate_hz,
                params={"frame": "odom", "child_frame": "base_link"},
            ),
        ),
    )
