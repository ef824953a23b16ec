"""Operator input sources: where the station's commands come from.

Input sources are plugins, found under the entry-point group ``telepresence.inputs`` like
drivers are under ``telepresence.robots``. Built in: ``script``, a scripted trajectory. An input
source is made once the station knows what the robot is (`RobotView`, from its first state
datagram) and is then sampled once per control tick.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from robots.api import BaseState, BaseVelocityCommand, Command, JointCommand, JointState
from telepresence.exceptions import ConfigError

__all__ = ["INPUT_GROUP", "InputSource", "RobotView", "ScriptedInput"]

INPUT_GROUP = "telepresence.inputs"


@dataclass(frozen=True, slots=True)
class RobotView:
    """What the station knows of the robot: its first reported state."""

    joints: JointState | None = None
    """Joint state, if the robot reports joints."""
    base: BaseState | None = None
    """Base state, if the robot reports a mobile base."""


class InputSource(ABC):
    """An input plugin. Subclass, register under ``telepresence.inputs``.

    `options` are the station's ``--input-option KEY=VALUE`` pairs; reject unknown keys with a
    `ConfigError` naming the valid ones.
    """

    def __init__(self, robot: RobotView, options: dict[str, str], start_ns: int) -> None:
        self.robot = robot
        self.start_ns = start_ns

    @abstractmethod
    def sample(self, now_ns: int) -> Command | None:
        """The operator's command for this control tick, or None to send nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices; called once when the station stops."""


def _float_option(
    options: dict[str, str], name: str, default: float, lo: float, hi: float
) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"input option {name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"input option {name} must be within {lo:g}..{hi:g}, got {value:g}")
    return value


class ScriptedInput(InputSource):
    """A smooth scripted trajectory, starting exactly at the robot's current pose.

    Arm: every joint follows a sine of `amplitude` rad around its start position, phases shifted
    per joint, period `period` s; the gripper opens and closes with the same period.
    Mobile base: forward speed `speed` m/s and yaw rate `turn` rad/s, as slow sines.
    Options: amplitude (0-3.14, default 0.3), period (0.1-600 s, default 4), speed (0-5 m/s,
    default 0.3), turn (0-5 rad/s, default 0.5).
    """

    OPTIONS = ("amplitude", "period", "speed", "turn")

    def __init__(self, robot: RobotView, options: dict[str, str], start_ns: int) -> None:
        super().__init__(robot, options, start_ns)
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(
                f"unknown input option(s) {', '.join(unknown)} for 'script'; valid: "
                + ", ".join(self.OPTIONS)
            )
        self.amplitude = _float_option(options, "amplitude", 0.3, 0.0, math.pi)
        self.period = _float_option(options, "period", 4.0, 0.1, 600.0)
        self.speed = _float_option(options, "speed", 0.3, 0.0, 5.0)
        self.turn = _float_option(options, "turn", 0.5, 0.0, 5.0)
        if robot.joints is None and robot.base is None:
            raise ConfigError("the robot reported neither joints nor a base: nothing to script")
        if robot.joints is not None:
            n = robot.joints.positions.shape[0]
            self._start = np.array(robot.joints.positions, dtype=np.float64)
            self._phase = np.arange(n) * (math.pi / 3)
            self._sin_phase = np.sin(self._phase)
            self._gripper = robot.joints.gripper

    def sample(self, now_ns: int) -> Command:
        w = 2 * math.pi * (now_ns - self.start_ns) / 1e9 / self.period
        if self.robot.joints is not None:
            positions = self._start + self.amplitude * (np.sin(w + self._phase) - self._sin_phase)
            gripper = None if self._gripper is None else 0.5 - 0.5 * math.cos(w)
            return JointCommand(positions=positions, gripper=gripper)
        return BaseVelocityCommand(vx=self.speed * math.sin(w), wz=self.turn * math.sin(w / 2))
