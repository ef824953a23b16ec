"""The bridge's wire format (sans-IO): message types, framing and the JSON of manifests, commands
and states. Specified for implementers in other languages in ``docs/drivers.md``, section
"Out-of-process drivers: the bridge".

Every message is a ZeroMQ multipart message of two frames, seen from the endpoint's DEALER::

    frame 0: the message type, ASCII, e.g. b"apply"
    frame 1: a JSON object, UTF-8 (``{}`` when there is nothing to say)

The driver process's ROUTER sees one more frame in front, the endpoint's routing id, and puts it
back in front of every message it sends to that endpoint. Numbers are JSON numbers (times and
``ref`` are integers; NaN and infinities are never sent, and a message carrying them is refused),
arrays of numbers are JSON arrays, a field with no value is ``null`` or left out.

Nothing here touches a socket or a clock: `encode` returns frames, `decode` takes them.
"""

from __future__ import annotations

import enum
import json
import math
import sys
from typing import Any

import numpy as np

from robots.api import (
    BaseSpec,
    BaseState,
    BaseVelocityCommand,
    Command,
    ControlMode,
    FloatArray,
    ForceTorque,
    GripperSpec,
    JointCommand,
    JointSpec,
    JointState,
    Manifest,
    PoseCommand,
    RobotState,
    SensorKind,
    SensorSpec,
)
from robots.bridge.exceptions import BridgeProtocolError

__all__ = [
    "FROM_DRIVER",
    "MAX_SILENCE_MS",
    "PROTOCOL_VERSION",
    "TO_DRIVER",
    "ErrorCode",
    "MessageType",
    "command_from_json",
    "command_to_json",
    "decode",
    "encode",
    "manifest_from_json",
    "state_from_json",
    "state_to_json",
]

PROTOCOL_VERSION = 1
"""Sent in ``hello`` and ``manifest``; a driver process answers another version with an error."""

MAX_SILENCE_MS = 50
"""While an endpoint is connected, the driver process sends a message at least this often
(``state``, or ``heartbeat`` when it has no new state)."""


class MessageType(enum.StrEnum):
    """Frame 0 of every message."""

    HELLO = "hello"
    """endpoint -> driver: which protocol, and please send your manifest."""
    MANIFEST = "manifest"
    """driver -> endpoint: reply to ``hello``."""
    CONNECT = "connect"
    """endpoint -> driver: connect the robot (safe and still) and make me the one in control."""
    CONNECTED = "connected"
    """driver -> endpoint: reply to ``connect``, with the current state."""
    APPLY = "apply"
    """endpoint -> driver: one command (fire and forget)."""
    HOLD = "hold"
    """endpoint -> driver: keep the current pose."""
    STOP = "stop"
    """endpoint -> driver: stop safely."""
    PING = "ping"
    """endpoint -> driver: I am alive (sent when nothing else was sent for ``heartbeat_ms``)."""
    CLOSE = "close"
    """endpoint -> driver: I am leaving; stop the robot and forget me."""
    STATE = "state"
    """driver -> endpoint: the latest measured state, pushed at the driver's rate."""
    HEARTBEAT = "heartbeat"
    """driver -> endpoint: I am alive (when there is no new state to push)."""
    ERROR = "error"
    """driver -> endpoint: something went wrong; ``code`` says what."""


TO_DRIVER = frozenset(
    {
        MessageType.HELLO,
        MessageType.CONNECT,
        MessageType.APPLY,
        MessageType.HOLD,
        MessageType.STOP,
        MessageType.PING,
        MessageType.CLOSE,
    }
)
"""Types the endpoint sends."""

FROM_DRIVER = frozenset(
    {
        MessageType.MANIFEST,
        MessageType.CONNECTED,
        MessageType.STATE,
        MessageType.HEARTBEAT,
        MessageType.ERROR,
    }
)
"""Types the driver process sends."""


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` message."""

    NOT_CONNECTED = "not_connected"
    """The sender is not the endpoint in control (e.g. the driver process restarted): the bridge
    re-syncs with ``hello`` and ``connect``."""
    BUSY = "busy"
    """``connect`` refused: another endpoint is in control and still alive."""
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    """``hello`` asked for a protocol version the driver process does not speak."""
    BAD_MESSAGE = "bad_message"
    """The driver process could not parse a message (framing, JSON, fields)."""
    INVALID_COMMAND = "invalid_command"
    """``apply`` refused by value (wrong size, mode not in the manifest, ...)."""
    STALE_COMMAND = "stale_command"
    """``apply`` dropped because its ``now_ns`` was too old when it arrived."""
    DRIVER_ERROR = "driver_error"
    """The robot failed the operation (``op`` names it); after a failed apply it holds."""


def encode(mtype: MessageType, body: dict[str, Any] | None = None) -> list[bytes]:
    """The two frames of a message. Raises ValueError if ``body`` holds NaN or infinity."""
    text = json.dumps(body or {}, separators=(",", ":"), allow_nan=False)
    return [mtype.value.encode("ascii"), text.encode()]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def decode(
    frames: list[bytes], allowed: frozenset[MessageType] = FROM_DRIVER
) -> tuple[MessageType, dict[str, Any]]:
    """Parse the two frames of a message whose type is in ``allowed``.

    Raises `BridgeProtocolError` saying what is wrong.
    """
    if len(frames) != 2:
        raise BridgeProtocolError(f"a message has 2 frames (type, JSON), got {len(frames)}")
    try:
        mtype = MessageType(bytes(frames[0]).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BridgeProtocolError(f"unknown message type {bytes(frames[0])[:32]!r}") from None
    if mtype not in allowed:
        raise BridgeProtocolError(f"message type {mtype.value!r} is not sent in this direction")
    try:
        body = json.loads(frames[1], parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BridgeProtocolError(f"{mtype.value}: body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BridgeProtocolError(f"{mtype.value}: body must be a JSON object")
    return mtype, body


# -- field helpers ------------------------------------------------------------------------------

_FLOAT_MAX = sys.float_info.max


def _number(value: Any, where: str) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
    elif type(value) is int and abs(value) <= _FLOAT_MAX:
        return float(value)
    raise BridgeProtocolError(f"{where} must be a finite number, got {value!r}")


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _integer(value: Any, where: str) -> int:
    if type(value) is not int:
        raise BridgeProtocolError(f"{where} must be an integer, got {value!r}")
    return value


def _optional_integer(value: Any, where: str) -> int | None:
    return None if value is None else _integer(value, where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BridgeProtocolError(f"{where} must be a string, got {value!r}")
    return value


def _array(value: Any, size: int | None, where: str) -> FloatArray:
    if not isinstance(value, list):
        raise BridgeProtocolError(f"{where} must be an array of numbers, got {value!r}")
    if size is not None and len(value) != size:
        raise BridgeProtocolError(f"{where} must have {size} values, got {len(value)}")
    for v in value:
        if type(v) is not float and (type(v) is not int or abs(v) > _FLOAT_MAX):
            raise BridgeProtocolError(f"{where} must hold finite numbers only, got {v!r}")
    array = np.array(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise BridgeProtocolError(f"{where} must hold finite numbers only")
    return array


def _optional_array(value: Any, size: int | None, where: str) -> FloatArray | None:
    return None if value is None else _array(value, size, where)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BridgeProtocolError(f"{where} must be an array, got {value!r}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BridgeProtocolError(f"{where} must be a JSON object, got {value!r}")
    return value


def _floats(array: FloatArray | None) -> list[float] | None:
    return None if array is None else [float(v) for v in array.tolist()]


# -- manifest -----------------------------------------------------------------------------------


def _max_effort(value: Any) -> float:
    effort = _optional_number(value, "joint max_effort")
    return math.inf if effort is None else effort  # to_dict() writes infinity as null


def manifest_from_json(data: Any) -> Manifest:
    """The `Manifest` described by ``data``, in the form of `Manifest.to_dict()`.

    Raises `BridgeProtocolError` if a field is missing, has the wrong type, or the manifest is
    invalid (the message of the `ValueError` from `Manifest` is kept).
    """
    d = _object(data, "manifest")
    try:
        joints = tuple(
            JointSpec(
                name=_text(j.get("name"), "joint name"),
                lower=_number(j.get("lower"), "joint lower"),
                upper=_number(j.get("upper"), "joint upper"),
                max_velocity=_number(j.get("max_velocity"), "joint max_velocity"),
                max_effort=_max_effort(j.get("max_effort")),
            )
            for j in (_object(j, "joint") for j in _list(d.get("joints"), "joints"))
        )
        gripper = d.get("gripper")
        base = d.get("base")
        sensors = tuple(
            SensorSpec(
                name=_text(s.get("name"), "sensor name"),
                kind=SensorKind(_text(s.get("kind"), "sensor kind")),
                rate_hz=_number(s.get("rate_hz", 0.0), "sensor rate_hz"),
                params=_object(s.get("params") or {}, "sensor params"),
            )
            for s in (_object(s, "sensor") for s in _list(d.get("sensors"), "sensors"))
        )
        return Manifest(
            robot_id=_text(d.get("robot_id"), "robot_id"),
            kind=_text(d.get("kind"), "kind"),
            control_modes=tuple(
                ControlMode(_text(m, "control mode"))
                for m in _list(d.get("control_modes"), "control_modes")
            ),
            control_rate_hz=_number(d.get("control_rate_hz"), "control_rate_hz"),
            joints=joints,
            gripper=None
            if gripper is None
            else GripperSpec(
                lower=_number(_object(gripper, "gripper").get("lower"), "gripper lower"),
                upper=_number(gripper.get("upper"), "gripper upper"),
            ),
            base=None
            if base is None
            else BaseSpec(
                max_linear=_number(_object(base, "base").get("max_linear"), "base max_linear"),
                max_angular=_number(base.get("max_angular"), "base max_angular"),
                holonomic=bool(base.get("holonomic", False)),
            ),
            sensors=sensors,
        )
    except BridgeProtocolError as exc:
        raise BridgeProtocolError(f"manifest: {exc}") from None
    except ValueError as exc:
        raise BridgeProtocolError(f"manifest is invalid: {exc}") from None


# -- commands -----------------------------------------------------------------------------------


def command_to_json(command: Command, now_ns: int) -> dict[str, Any]:
    """The body of an ``apply`` message."""
    if isinstance(command, JointCommand):
        return {
            "now_ns": now_ns,
            "mode": ControlMode.JOINT_POSITION.value,
            "ref": command.ref,
            "positions": _floats(command.positions),
            "velocities": _floats(command.velocities),
            "efforts": _floats(command.efforts),
            "gripper": command.gripper,
        }
    if isinstance(command, PoseCommand):
        return {
            "now_ns": now_ns,
            "mode": ControlMode.EE_POSE.value,
            "ref": command.ref,
            "position": _floats(command.position),
            "orientation": _floats(command.orientation),
            "gripper": command.gripper,
        }
    if isinstance(command, BaseVelocityCommand):
        return {
            "now_ns": now_ns,
            "mode": ControlMode.BASE_VELOCITY.value,
            "ref": command.ref,
            "vx": command.vx,
            "vy": command.vy,
            "wz": command.wz,
        }
    raise TypeError(f"not a command: {type(command).__name__}")


def command_from_json(d: dict[str, Any]) -> tuple[Command, int]:
    """The command of an ``apply`` body and its ``now_ns``; sizes are checked by the caller's
    `robots.limits.CommandGuard`. Raises `BridgeProtocolError`."""
    now_ns = _integer(d.get("now_ns"), "now_ns")
    ref = _integer(d.get("ref", 0), "ref")
    mode = d.get("mode")
    command: Command
    if mode == ControlMode.JOINT_POSITION:
        command = JointCommand(
            positions=_array(d.get("positions"), None, "positions"),
            velocities=_optional_array(d.get("velocities"), None, "velocities"),
            efforts=_optional_array(d.get("efforts"), None, "efforts"),
            gripper=_optional_number(d.get("gripper"), "gripper"),
            ref=ref,
        )
    elif mode == ControlMode.EE_POSE:
        command = PoseCommand(
            position=_array(d.get("position"), 3, "position"),
            orientation=_array(d.get("orientation"), 4, "orientation"),
            gripper=_optional_number(d.get("gripper"), "gripper"),
            ref=ref,
        )
    elif mode == ControlMode.BASE_VELOCITY:
        command = BaseVelocityCommand(
            vx=_number(d.get("vx"), "vx"),
            vy=_number(d.get("vy", 0.0), "vy"),
            wz=_number(d.get("wz", 0.0), "wz"),
            ref=ref,
        )
    else:
        raise BridgeProtocolError(f"unknown command mode {mode!r}")
    return command, now_ns


# -- states -------------------------------------------------------------------------------------


def state_to_json(state: RobotState) -> dict[str, Any]:
    """The body of a ``state`` message (also the ``state`` field of ``connected``)."""
    joints = state.joints
    base = state.base
    return {
        "time_ns": state.time_ns,
        "joints": None
        if joints is None
        else {
            "positions": _floats(joints.positions),
            "velocities": _floats(joints.velocities),
            "efforts": _floats(joints.efforts),
            "gripper": joints.gripper,
        },
        "base": None
        if base is None
        else {
            "x": base.x,
            "y": base.y,
            "theta": base.theta,
            "vx": base.vx,
            "vy": base.vy,
            "wz": base.wz,
        },
        "wrenches": [
            {
                "sensor": w.sensor,
                "time_ns": w.time_ns,
                "force": _floats(w.force),
                "torque": _floats(w.torque),
            }
            for w in state.wrenches
        ],
        "actuated_ref": state.actuated_ref,
        "actuated_ns": state.actuated_ns,
    }


def state_from_json(data: Any, manifest: Manifest) -> RobotState:
    """The `RobotState` of a ``state`` body, checked against ``manifest``: joints (and a gripper)
    if and only if the manifest has them, arrays of the joint count, a base if and only if the
    manifest has one, wrenches naming a declared force/torque sensor. Raises
    `BridgeProtocolError`."""
    d = _object(data, "state")
    n = len(manifest.joints)
    joints = None
    raw_joints = d.get("joints")
    if n:
        j = _object(raw_joints, "state.joints")
        gripper = _optional_number(j.get("gripper"), "state.joints.gripper")
        if (gripper is None) != (manifest.gripper is None):
            raise BridgeProtocolError(
                "state.joints.gripper must be set if and only if the manifest has a gripper"
            )
        joints = JointState(
            positions=_array(j.get("positions"), n, "state.joints.positions"),
            velocities=_optional_array(j.get("velocities"), n, "state.joints.velocities"),
            efforts=_optional_array(j.get("efforts"), n, "state.joints.efforts"),
            gripper=gripper,
        )
    elif raw_joints is not None:
        raise BridgeProtocolError("state.joints is set but the manifest has no joints")
    base = None
    raw_base = d.get("base")
    if manifest.base is not None:
        b = _object(raw_base, "state.base")
        theta = _number(b.get("theta"), "state.base.theta")
        if not -math.pi < theta <= math.pi:
            raise BridgeProtocolError(f"state.base.theta {theta} is not in (-pi, pi]")
        base = BaseState(
            x=_number(b.get("x"), "state.base.x"),
            y=_number(b.get("y"), "state.base.y"),
            theta=theta,
            vx=_number(b.get("vx", 0.0), "state.base.vx"),
            vy=_number(b.get("vy", 0.0), "state.base.vy"),
            wz=_number(b.get("wz", 0.0), "state.base.wz"),
        )
    elif raw_base is not None:
        raise BridgeProtocolError("state.base is set but the manifest has no base")
    n_ft = sum(1 for s in manifest.sensors if s.kind is SensorKind.FORCE_TORQUE)
    wrenches = []
    for w in _list(d.get("wrenches"), "state.wrenches"):
        w = _object(w, "state.wrenches[]")
        sensor = _integer(w.get("sensor"), "wrench sensor")
        if not 0 <= sensor < n_ft:
            raise BridgeProtocolError(
                f"wrench sensor {sensor}, but the manifest has {n_ft} force_torque sensors"
            )
        wrenches.append(
            ForceTorque(
                sensor=sensor,
                time_ns=_integer(w.get("time_ns"), "wrench time_ns"),
                force=_array(w.get("force"), 3, "wrench force"),
                torque=_array(w.get("torque"), 3, "wrench torque"),
            )
        )
    return RobotState(
        time_ns=_integer(d.get("time_ns"), "state.time_ns"),
        joints=joints,
        base=base,
        wrenches=wrenches,
        actuated_ref=_optional_integer(d.get("actuated_ref"), "state.actuated_ref"),
        actuated_ns=_optional_integer(d.get("actuated_ns"), "state.actuated_ns"),
    )
