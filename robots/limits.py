"""`CommandGuard`: what the endpoint checks before a command reaches `Driver.apply`.

A command is *refused* (`InvalidCommand`) when no safe reading of it exists: a NaN or infinite
value anywhere, a control mode the manifest does not declare, arrays of the wrong length, a
gripper value for a robot without a gripper, or an orientation whose quaternion norm is off 1
by more than `QUATERNION_TOLERANCE`. Otherwise it is *clamped* into the manifest's limits:
positions into [lower, upper], velocities into ±max_velocity, efforts into ±max_effort, the
gripper into its range, a base's vx (and vy, if holonomic) into ±max_linear and wz into
±max_angular; vy on a non-holonomic base becomes 0. A quaternion within tolerance is normalised
(that alone does not count as clamping).

`check` never writes to the command's arrays (they may be read-only views of a datagram). When
nothing needs changing it returns the very same object, allocating nothing on the way: the fast
path compares plain Python floats, which for a handful of joints is several times cheaper than
a chain of numpy calls.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from robots.api import (
    BaseVelocityCommand,
    Command,
    ControlMode,
    FloatArray,
    JointCommand,
    Manifest,
    PoseCommand,
)
from robots.exceptions import InvalidCommand

__all__ = ["QUATERNION_TOLERANCE", "CommandGuard"]

logger = logging.getLogger(__name__)

QUATERNION_TOLERANCE = 1e-3
"""Largest accepted ``abs(norm(q) - 1)`` of a `PoseCommand` orientation."""
_RENORMALISE_ABOVE = 1e-12
"""``abs(norm(q)**2 - 1)`` above which an accepted quaternion is replaced by a normalised copy."""
_FLOAT_MAX = sys.float_info.max
_NUMPY_ABOVE = 32
"""Joint count above which the range test uses numpy instead of a Python loop."""
_NUMERIC_KINDS = frozenset("fiu")


def _finite_limit(value: float) -> float:
    """An infinite limit as the largest float, so that ``v <= limit`` still rejects inf."""
    return min(value, _FLOAT_MAX)


_F8 = np.dtype(np.float64)
"""The float64 dtype; numpy hands this very object to float64 arrays (fast paths test identity,
and anything else takes the full path)."""
_ndarray = np.ndarray


def _never(command: Any) -> bool:
    return False


def _joints_within(
    lower: tuple[float, ...], upper: tuple[float, ...], gripper: tuple[float, float] | None
) -> Callable[[Any], bool]:
    """The guard's fast path for one robot: a function that says whether a `JointCommand` is
    float64 positions of the right count, all within the limits, with no feed-forward and the
    gripper absent or within its limits, so that it passes unchanged. The limits are constants
    in its code (as `dataclasses` and `namedtuple` generate theirs): no loop and no lookups,
    which on the cold caches between datagrams costs 1.6 µs where a loop over the limits cost
    1.9 µs. It only ever accepts; anything it does not accept takes the full check.

    The limits must be finite Python floats: their repr is what the code holds, and it
    round-trips exactly (a numpy scalar's would read ``np.float64(...)``)."""
    for limit in (*lower, *upper, *(gripper or ())):
        if type(limit) is not float or not math.isfinite(limit):
            raise ValueError(f"limit {limit!r} is not a finite float")
    n = len(lower)
    values = ", ".join(f"v{i}" for i in range(n))
    within = " and ".join(
        f"{lo!r} <= v{i} <= {hi!r}" for i, (lo, hi) in enumerate(zip(lower, upper, strict=True))
    )
    grip = "g is None" if gripper is None else f"g is None or {gripper[0]!r} <= g <= {gripper[1]!r}"
    source = (
        "def joints_within(command):\n"
        "    positions = command.positions\n"
        "    if (command.velocities is None and command.efforts is None\n"
        "            and type(positions) is ndarray and positions.dtype is F8\n"
        "            and positions.shape == SHAPE):\n"
        f"        {values}, = positions.tolist()\n"
        f"        if {within}:\n"
        "            g = command.gripper\n"
        f"            return {grip}\n"
        "    return False\n"
    )
    namespace: dict[str, Any] = {"ndarray": _ndarray, "F8": _F8, "SHAPE": (n,)}
    exec(compile(source, f"<CommandGuard fast path, {n} joints>", "exec"), namespace)
    function: Callable[[Any], bool] = namespace["joints_within"]
    return function


class CommandGuard:
    """Validates and clamps commands against one robot's manifest.

    ``check(command)`` returns ``(command, clamped)``: the same object and False when the
    command is already within limits, otherwise a new command of the same type (same ``ref``)
    holding the changed values, with ``clamped`` True if any value was limited. It raises
    `InvalidCommand` for commands that cannot be made safe.
    """

    __slots__ = (
        "_base",
        "_checkers",
        "_effort_hi",
        "_effort_lo",
        "_gripper",
        "_joints_within",
        "_lower",
        "_n",
        "_robot",
        "_upper",
        "_velocity_hi",
        "_velocity_lo",
        "manifest",
    )

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._robot = manifest.robot_id
        self._n = len(manifest.joints)
        self._lower = _Limits([j.lower for j in manifest.joints])
        self._upper = _Limits([j.upper for j in manifest.joints])
        vmax = [_finite_limit(j.max_velocity) for j in manifest.joints]
        emax = [_finite_limit(j.max_effort) for j in manifest.joints]
        self._velocity_lo, self._velocity_hi = _Limits([-v for v in vmax]), _Limits(vmax)
        self._effort_lo, self._effort_hi = _Limits([-e for e in emax]), _Limits(emax)
        grip = manifest.gripper
        self._gripper = (float(grip.lower), float(grip.upper)) if grip is not None else None
        base = manifest.base
        self._base = (
            (_finite_limit(base.max_linear), _finite_limit(base.max_angular), base.holonomic)
            if base is not None
            else None
        )
        by_type: tuple[tuple[type, ControlMode, Callable[[Any], tuple[Command, bool]]], ...] = (
            (JointCommand, JointCommand.MODE, self._check_joint_fully),
            (PoseCommand, PoseCommand.MODE, self._check_pose),
            (BaseVelocityCommand, BaseVelocityCommand.MODE, self._check_base),
        )
        modes = set(manifest.control_modes)
        self._checkers = {t: c for t, mode, c in by_type if mode in modes}
        self._joints_within = (
            _joints_within(self._lower.values, self._upper.values, self._gripper)
            if JointCommand in self._checkers
            else _never
        )

    def check(self, command: Command) -> tuple[Command, bool]:
        """Validate ``command``; return it (or a clamped copy) and whether anything was clamped."""
        # Fast path, the common case at up to 1 kHz: float64 joint positions already in range,
        # no feed-forward, gripper absent or in range. It is here rather than behind the
        # dispatch because the data plane runs it on the cold caches between datagrams, where
        # every call and lookup costs 2-4x its warm time. Anything else takes the full path.
        if type(command) is JointCommand and self._joints_within(command):
            return command, False
        checker = self._checkers.get(type(command))
        if checker is None:
            return self._unsupported(command)
        return checker(command)

    # -- per command type ----------------------------------------------------------------------

    def _check_joint_fully(self, command: JointCommand) -> tuple[Command, bool]:
        changes: dict[str, Any] = {}
        clamped = False
        name = "JointCommand"
        positions, converted = self._vector(command.positions, self._n, name, "positions")
        new = self._limit(positions, self._lower, self._upper, name, "positions")
        if new is not None or converted:
            changes["positions"] = positions if new is None else new
            clamped = new is not None
        for attr, lo, hi in (
            ("velocities", self._velocity_lo, self._velocity_hi),
            ("efforts", self._effort_lo, self._effort_hi),
        ):
            values = getattr(command, attr)
            if values is None:
                continue
            values, converted = self._vector(values, self._n, name, attr)
            new = self._limit(values, lo, hi, name, attr)
            if new is not None or converted:
                changes[attr] = values if new is None else new
                clamped = clamped or new is not None
        if command.gripper is not None:
            gripper = self._check_gripper(command.gripper, name)
            if gripper is not None:
                changes["gripper"] = gripper
                clamped = True
        if not changes:
            return command, False
        return dataclasses.replace(command, **changes), clamped

    def _check_pose(self, command: PoseCommand) -> tuple[Command, bool]:
        changes: dict[str, Any] = {}
        clamped = False
        name = "PoseCommand"
        position, converted = self._vector(command.position, 3, name, "position")
        for i, v in enumerate(position.tolist()):
            if not math.isfinite(v):
                raise InvalidCommand(f"{name}.position[{i}] is {v}; every value must be finite")
        if converted:
            changes["position"] = position
        orientation, converted = self._vector(command.orientation, 4, name, "orientation")
        q = orientation.tolist()
        for i, v in enumerate(q):
            if not math.isfinite(v):
                raise InvalidCommand(f"{name}.orientation[{i}] is {v}; every value must be finite")
        norm2 = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]
        norm = math.sqrt(norm2)
        if abs(norm - 1.0) > QUATERNION_TOLERANCE:
            raise InvalidCommand(
                f"{name}.orientation is not a unit quaternion: norm {norm:.6g} differs from 1 by "
                f"more than {QUATERNION_TOLERANCE:g}"
            )
        if abs(norm2 - 1.0) > _RENORMALISE_ABOVE:
            changes["orientation"] = np.array(q, dtype=np.float64) / norm
        elif converted:
            changes["orientation"] = orientation
        if command.gripper is not None:
            gripper = self._check_gripper(command.gripper, name)
            if gripper is not None:
                changes["gripper"] = gripper
                clamped = True
        if not changes:
            return command, False
        return dataclasses.replace(command, **changes), clamped

    def _check_base(self, command: BaseVelocityCommand) -> tuple[Command, bool]:
        assert self._base is not None
        lin, ang, holonomic = self._base
        name = "BaseVelocityCommand"
        vx, vy, wz = command.vx, command.vy, command.wz
        if (
            -lin <= vx <= lin
            and -ang <= wz <= ang
            and (vy == 0.0 or (holonomic and -lin <= vy <= lin))
        ):
            return command, False
        for attr, v in (("vx", vx), ("vy", vy), ("wz", wz)):
            if not math.isfinite(v):
                raise InvalidCommand(f"{name}.{attr} is {v}; every value must be finite")
        vy_new = min(max(vy, -lin), lin) if holonomic else 0.0
        new = dataclasses.replace(
            command, vx=min(max(vx, -lin), lin), vy=vy_new, wz=min(max(wz, -ang), ang)
        )
        return new, True

    # -- helpers -------------------------------------------------------------------------------

    def _unsupported(self, command: object) -> tuple[Command, bool]:
        supported = ", ".join(m.value for m in self.manifest.control_modes)
        mode = getattr(type(command), "MODE", None)
        if mode is None:
            raise InvalidCommand(
                f"{type(command).__name__} is not a command type; robot {self._robot!r} accepts "
                f"control modes: {supported}"
            )
        for cls, checker in self._checkers.items():
            if isinstance(command, cls):
                return checker(command)
        raise InvalidCommand(
            f"control mode {getattr(mode, 'value', mode)!r} is not supported by robot "
            f"{self._robot!r}; supported control modes: {supported}"
        )

    def _vector(self, values: Any, n: int, name: str, attr: str) -> tuple[FloatArray, bool]:
        """``values`` as a 1-D numeric array of length n, and whether it had to be converted."""
        converted = False
        if not isinstance(values, np.ndarray) or values.dtype.kind not in _NUMERIC_KINDS:
            try:
                values = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidCommand(f"{name}.{attr} is not an array of numbers: {exc}") from exc
            converted = True
        if values.shape != (n,):
            what = f"{values.shape[0]} values" if values.ndim == 1 else f"shape {values.shape}"
            if attr in ("positions", "velocities", "efforts"):
                raise InvalidCommand(
                    f"{name}.{attr} has {what}, but robot {self._robot!r} has {n} joints"
                )
            raise InvalidCommand(f"{name}.{attr} has {what}; it must have {n} values")
        return values, converted

    @staticmethod
    def _limit(
        values: FloatArray, lo: _Limits, hi: _Limits, name: str, attr: str
    ) -> FloatArray | None:
        """None if every value is within [lo, hi]; else a clamped copy (InvalidCommand if any
        value is not finite)."""
        if len(lo.values) <= _NUMPY_ABOVE:
            for v, low, high in zip(values.tolist(), lo.values, hi.values, strict=False):
                if not low <= v <= high:
                    break
            else:
                return None
        elif bool(((values >= lo.array) & (values <= hi.array)).all()):
            return None
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InvalidCommand(f"{name}.{attr}[{i}] is {values[i]}; every value must be finite")
        return np.minimum(np.maximum(values, lo.array), hi.array)

    def _check_gripper(self, gripper: float, name: str) -> float | None:
        """None if the gripper value is within range, else the clamped value."""
        if self._gripper is None:
            raise InvalidCommand(
                f"{name}.gripper is set but robot {self._robot!r} has no gripper; leave it None"
            )
        lo, hi = self._gripper
        if lo <= gripper <= hi:
            return None
        if not math.isfinite(gripper):
            raise InvalidCommand(f"{name}.gripper is {gripper}; every value must be finite")
        return min(max(float(gripper), lo), hi)


class _Limits:
    """One limit per joint, as a tuple of floats (fast path) and as an array (clamping)."""

    __slots__ = ("array", "values")

    def __init__(self, values: Sequence[float]) -> None:
        self.values = tuple(float(v) for v in values)
        self.array = np.array(self.values, dtype=np.float64)
