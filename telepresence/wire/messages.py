"""Message bodies and the table that maps each `MessageType` to its body codec.

Command and state bodies travel as the `robots.api` dataclasses themselves (the driver API is
the vocabulary; the wire only lays it out), so each type has a small codec object here rather
than `parse`/`__bytes__` on the dataclass: `robots` must not know about the wire.

Arrays travel as ``count u16 | element size u8 (4 = float32, 8 = float64) | reserved u8 = 0``
followed by ``count`` little-endian IEEE-754 values. Decoding returns read-only numpy views of
the datagram, never copies.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from robots.api import (
    BaseState,
    BaseVelocityCommand,
    FloatArray,
    ForceTorque,
    JointCommand,
    JointState,
    PoseCommand,
)
from telepresence.exceptions import DecodeError, LocalProtocolError
from telepresence.wire.header import MessageType

__all__ = [
    "BODY_CODECS",
    "Counters",
    "Heartbeat",
    "Message",
    "RobotMode",
    "Role",
    "Telemetry",
    "codec_for",
]

Buffer = bytes | bytearray | memoryview


class Role(enum.IntEnum):
    """Who sent a heartbeat."""

    STATION = 1
    ROBOT = 2


class RobotMode(enum.IntEnum):
    """The robot endpoint's safety state (the deadman)."""

    STOPPED = 0
    """No command yet, or none for longer than the stop deadline: the driver is stopped."""
    ACTIVE = 1
    """Fresh commands are arriving and being applied."""
    HOLDING = 2
    """No fresh command for longer than the hold deadline: the driver holds its pose."""


@dataclass(slots=True, kw_only=True)
class Heartbeat:
    """Liveness, and a robot's safety state. A station sends these to be sent telemetry."""

    role: Role
    """Who sends it."""
    mode: RobotMode = RobotMode.STOPPED
    """The robot's mode (a station sends STOPPED, 0)."""


@dataclass(slots=True, kw_only=True)
class Counters:
    """A robot endpoint's receive counters (each wraps at 2**32 on the wire)."""

    received: int = 0
    """Datagrams received, whatever became of them."""
    malformed: int = 0
    """Datagrams that failed to decode."""
    duplicate: int = 0
    """Datagrams whose (session, stream, sequence) was already received."""
    stale: int = 0
    """Commands older than the newest one received, or older than the age limit."""
    dropped: int = 0
    """Valid datagrams not used: another session holds control, or an unexpected type."""
    superseded: int = 0
    """Commands replaced by a newer one before a control tick could apply them."""
    rejected: int = 0
    """Commands refused by value: NaN or infinite values, wrong size, unsupported mode."""
    clamped: int = 0
    """Commands applied after at least one value was clamped into the manifest's limits."""
    applied: int = 0
    """Commands handed to the driver."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "received", "malformed", "duplicate", "stale", "dropped",
        "superseded", "rejected", "clamped", "applied",
    )  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.FIELDS}


TELEMETRY_HAS_COMMAND = 0x01
TELEMETRY_ACTUATED_KNOWN = 0x02


@dataclass(slots=True, kw_only=True)
class Telemetry:
    """The robot's report on the newest command that reached the actuators, with the stage
    timestamps taken on the robot (its monotonic clock, ns), and its counters."""

    mode: RobotMode
    """The robot's safety state."""
    command_stream: int = 0
    """Stream id of the reported command (0 if `command_seq` is 0)."""
    command_seq: int = 0
    """Sequence number of the reported command; 0 means no command has been applied yet."""
    command_sent_ns: int = 0
    """The command header's send time, copied (the station's clock)."""
    received_ns: int = 0
    """When the command's datagram was received."""
    decoded_ns: int = 0
    """When it had been decoded and checked."""
    applied_ns: int = 0
    """When the control loop handed it to the driver."""
    actuated_ns: int = 0
    """When the driver reported it reached the actuators (= applied if not known)."""
    actuated_known: bool = False
    """True if the driver reported the actuation time itself."""
    counters: Counters = field(default_factory=Counters)
    """The endpoint's counters at the time of sending."""


Message = (
    Heartbeat | JointCommand | PoseCommand | BaseVelocityCommand | JointState | BaseState
    | ForceTorque | Telemetry
)  # fmt: skip

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Arrays

_ARRAY = struct.Struct("<HBB")
_F4 = np.dtype("<f4")
_F8 = np.dtype("<f8")
_ELEMENT: dict[int, np.dtype[Any]] = {4: _F4, 8: _F8}


def _array_size(a: FloatArray | None) -> int:
    if a is None:
        return 0
    return _ARRAY.size + a.size * (4 if a.dtype == _F4 else 8)


def _pack_array(a: FloatArray, buf: bytearray, off: int) -> int:
    if a.ndim != 1:
        raise LocalProtocolError(f"arrays must be one-dimensional, got shape {a.shape}")
    n = int(a.shape[0])
    if n > 0xFFFF:
        raise LocalProtocolError(f"array length is invalid: {n} > 65535")
    dtype = _F4 if a.dtype == _F4 else _F8
    _ARRAY.pack_into(buf, off, n, dtype.itemsize, 0)
    off += _ARRAY.size
    np.frombuffer(buf, dtype=dtype, count=n, offset=off)[:] = a
    return off + n * int(dtype.itemsize)


def _parse_array(view: Buffer, off: int) -> tuple[FloatArray, int]:
    if off + _ARRAY.size > len(view):
        raise DecodeError("array header length is invalid")
    n, size, reserved = _ARRAY.unpack_from(view, off)
    dtype = _ELEMENT.get(size)
    if dtype is None:
        raise DecodeError(f"array element size {size} is invalid (4 or 8)")
    if reserved:
        raise DecodeError("array reserved byte is not zero")
    off += _ARRAY.size
    end = off + n * size
    if end > len(view):
        raise DecodeError("array length is invalid")
    return np.frombuffer(view, dtype=dtype, count=n, offset=off), end


def _as_vector(values: Any, n: int, what: str) -> FloatArray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise LocalProtocolError(f"{what} must have {n} values, got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------
# Body codecs


class BodyCodec(Generic[T]):
    """Lays one message class out as bytes. Subclasses set TYPE and MESSAGE."""

    TYPE: ClassVar[MessageType]
    MESSAGE: ClassVar[type]

    def size(self, msg: T) -> int:
        raise NotImplementedError

    def pack_into(self, msg: T, buf: bytearray, off: int) -> None:
        raise NotImplementedError

    def parse(self, view: Buffer) -> T:
        raise NotImplementedError


class _FixedCodec(BodyCodec[T]):
    """A body that is one fixed struct."""

    STRUCT: ClassVar[struct.Struct]

    def size(self, msg: T) -> int:
        return self.STRUCT.size

    def _check_length(self, view: Buffer) -> None:
        if len(view) != self.STRUCT.size:
            raise DecodeError(
                f"{self.TYPE.name} body length is invalid: {len(view)} != {self.STRUCT.size}"
            )


_PRESENT_VELOCITIES = 0x01
_PRESENT_EFFORTS = 0x02
_PRESENT_GRIPPER = 0x04


class _JointsCodec(BodyCodec[T]):
    """``present u8 | reserved 3 | gripper f64 | positions | [velocities] | [efforts]``;
    shared by joint commands and joint states."""

    PREFIX: ClassVar[struct.Struct] = struct.Struct("<B3xd")

    def size(self, msg: Any) -> int:
        return (
            self.PREFIX.size + _array_size(msg.positions) + _array_size(msg.velocities)
            + _array_size(msg.efforts)
        )  # fmt: skip

    def pack_into(self, msg: Any, buf: bytearray, off: int) -> None:
        present = (
            (_PRESENT_VELOCITIES if msg.velocities is not None else 0)
            | (_PRESENT_EFFORTS if msg.efforts is not None else 0)
            | (_PRESENT_GRIPPER if msg.gripper is not None else 0)
        )
        gripper = msg.gripper if msg.gripper is not None else 0.0
        self.PREFIX.pack_into(buf, off, present, gripper)
        off = _pack_array(msg.positions, buf, off + self.PREFIX.size)
        n = msg.positions.shape[0]
        for extra, what in ((msg.velocities, "velocities"), (msg.efforts, "efforts")):
            if extra is not None:
                if extra.shape != (n,):
                    raise LocalProtocolError(f"{what} must have {n} values like positions")
                off = _pack_array(extra, buf, off)

    def parse(self, view: Buffer) -> T:
        if len(view) < self.PREFIX.size:
            raise DecodeError(f"{self.TYPE.name} body length is invalid")
        if view[1] or view[2] or view[3]:
            raise DecodeError(f"{self.TYPE.name} reserved bytes are not zero")
        present, gripper = self.PREFIX.unpack_from(view)
        if present & ~(_PRESENT_VELOCITIES | _PRESENT_EFFORTS | _PRESENT_GRIPPER):
            raise DecodeError(f"{self.TYPE.name} present bits 0x{present:02x} are invalid")
        if not present & _PRESENT_GRIPPER and gripper != 0.0:
            raise DecodeError(f"{self.TYPE.name} gripper is set but not marked present")
        positions, off = _parse_array(view, self.PREFIX.size)
        velocities = efforts = None
        if present & _PRESENT_VELOCITIES:
            velocities, off = _parse_array(view, off)
            if velocities.shape != positions.shape:
                raise DecodeError(f"{self.TYPE.name} velocities length is invalid")
        if present & _PRESENT_EFFORTS:
            efforts, off = _parse_array(view, off)
            if efforts.shape != positions.shape:
                raise DecodeError(f"{self.TYPE.name} efforts length is invalid")
        if off != len(view):
            raise DecodeError(f"{self.TYPE.name} body length is invalid: trailing bytes")
        return self.MESSAGE(  # type: ignore[no-any-return]
            positions=positions,
            velocities=velocities,
            efforts=efforts,
            gripper=gripper if present & _PRESENT_GRIPPER else None,
        )


class JointCommandCodec(_JointsCodec[JointCommand]):
    TYPE = MessageType.JOINT_COMMAND
    MESSAGE = JointCommand


class JointStateCodec(_JointsCodec[JointState]):
    TYPE = MessageType.JOINT_STATE
    MESSAGE = JointState


class HeartbeatCodec(_FixedCodec[Heartbeat]):
    """``role u8 | mode u8 | reserved u16``"""

    TYPE = MessageType.HEARTBEAT
    MESSAGE = Heartbeat
    STRUCT = struct.Struct("<BBH")

    def pack_into(self, msg: Heartbeat, buf: bytearray, off: int) -> None:
        self.STRUCT.pack_into(buf, off, msg.role, msg.mode, 0)

    def parse(self, view: Buffer) -> Heartbeat:
        self._check_length(view)
        role, mode, reserved = self.STRUCT.unpack_from(view)
        if reserved:
            raise DecodeError("HEARTBEAT reserved field is not zero")
        try:
            return Heartbeat(role=Role(role), mode=RobotMode(mode))
        except ValueError as exc:
            raise DecodeError(f"HEARTBEAT role {role} or mode {mode} is invalid") from exc


class PoseCommandCodec(_FixedCodec[PoseCommand]):
    """``present u8 | frame u8 (0 = base) | reserved u16 | gripper f64 | x y z f64 |
    qx qy qz qw f64``"""

    TYPE = MessageType.POSE_COMMAND
    MESSAGE = PoseCommand
    STRUCT = struct.Struct("<BBHd3d4d")

    def pack_into(self, msg: PoseCommand, buf: bytearray, off: int) -> None:
        p = _as_vector(msg.position, 3, "PoseCommand.position")
        q = _as_vector(msg.orientation, 4, "PoseCommand.orientation")
        present = _PRESENT_GRIPPER if msg.gripper is not None else 0
        gripper = msg.gripper if msg.gripper is not None else 0.0
        self.STRUCT.pack_into(buf, off, present, 0, 0, gripper, *p, *q)

    def parse(self, view: Buffer) -> PoseCommand:
        self._check_length(view)
        present, frame, reserved, gripper = struct.unpack_from("<BBHd", view)
        if present & ~_PRESENT_GRIPPER:
            raise DecodeError(f"POSE_COMMAND present bits 0x{present:02x} are invalid")
        if frame != 0:
            raise DecodeError(f"POSE_COMMAND frame {frame} is unknown (0 = robot base)")
        if reserved:
            raise DecodeError("POSE_COMMAND reserved field is not zero")
        if not present & _PRESENT_GRIPPER and gripper != 0.0:
            raise DecodeError("POSE_COMMAND gripper is set but not marked present")
        return PoseCommand(
            position=np.frombuffer(view, dtype=_F8, count=3, offset=12),
            orientation=np.frombuffer(view, dtype=_F8, count=4, offset=36),
            gripper=gripper if present else None,
        )


class BaseVelocityCommandCodec(_FixedCodec[BaseVelocityCommand]):
    """``vx vy wz f64``"""

    TYPE = MessageType.BASE_VELOCITY_COMMAND
    MESSAGE = BaseVelocityCommand
    STRUCT = struct.Struct("<3d")

    def pack_into(self, msg: BaseVelocityCommand, buf: bytearray, off: int) -> None:
        self.STRUCT.pack_into(buf, off, msg.vx, msg.vy, msg.wz)

    def parse(self, view: Buffer) -> BaseVelocityCommand:
        self._check_length(view)
        vx, vy, wz = self.STRUCT.unpack_from(view)
        return BaseVelocityCommand(vx=vx, vy=vy, wz=wz)


class BaseStateCodec(_FixedCodec[BaseState]):
    """``x y theta vx vy wz f64``"""

    TYPE = MessageType.BASE_STATE
    MESSAGE = BaseState
    STRUCT = struct.Struct("<6d")

    def pack_into(self, msg: BaseState, buf: bytearray, off: int) -> None:
        self.STRUCT.pack_into(buf, off, msg.x, msg.y, msg.theta, msg.vx, msg.vy, msg.wz)

    def parse(self, view: Buffer) -> BaseState:
        self._check_length(view)
        x, y, theta, vx, vy, wz = self.STRUCT.unpack_from(view)
        return BaseState(x=x, y=y, theta=theta, vx=vx, vy=vy, wz=wz)


class ForceTorqueCodec(_FixedCodec[ForceTorque]):
    """``sensor u16 | reserved u16 | sample time i64 | fx fy fz tx ty tz f64``"""

    TYPE = MessageType.FORCE_TORQUE
    MESSAGE = ForceTorque
    STRUCT = struct.Struct("<HHq6d")

    def pack_into(self, msg: ForceTorque, buf: bytearray, off: int) -> None:
        f = _as_vector(msg.force, 3, "ForceTorque.force")
        t = _as_vector(msg.torque, 3, "ForceTorque.torque")
        self.STRUCT.pack_into(buf, off, msg.sensor, 0, msg.time_ns, *f, *t)

    def parse(self, view: Buffer) -> ForceTorque:
        self._check_length(view)
        sensor, reserved, time_ns = struct.unpack_from("<HHq", view)
        if reserved:
            raise DecodeError("FORCE_TORQUE reserved field is not zero")
        return ForceTorque(
            sensor=sensor,
            time_ns=time_ns,
            force=np.frombuffer(view, dtype=_F8, count=3, offset=12),
            torque=np.frombuffer(view, dtype=_F8, count=3, offset=36),
        )


class TelemetryCodec(_FixedCodec[Telemetry]):
    """``command stream u16 | mode u8 | flags u8 | reserved u32 | command seq u64 |
    command sent, received, decoded, applied, actuated i64 | 9 counters u32``"""

    TYPE = MessageType.TELEMETRY
    MESSAGE = Telemetry
    STRUCT = struct.Struct("<HBBIQ5q9I")

    def pack_into(self, msg: Telemetry, buf: bytearray, off: int) -> None:
        flags = (TELEMETRY_HAS_COMMAND if msg.command_seq else 0) | (
            TELEMETRY_ACTUATED_KNOWN if msg.actuated_known else 0
        )
        c = msg.counters
        counters = [getattr(c, name) & 0xFFFFFFFF for name in Counters.FIELDS]
        self.STRUCT.pack_into(
            buf, off, msg.command_stream, msg.mode, flags, 0, msg.command_seq,
            msg.command_sent_ns, msg.received_ns, msg.decoded_ns, msg.applied_ns,
            msg.actuated_ns, *counters,
        )  # fmt: skip

    def parse(self, view: Buffer) -> Telemetry:
        self._check_length(view)
        stream, mode, flags, reserved, seq, sent, rcv, dec, app, act, *counters = (
            self.STRUCT.unpack_from(view)
        )
        if reserved or flags & ~(TELEMETRY_HAS_COMMAND | TELEMETRY_ACTUATED_KNOWN):
            raise DecodeError("TELEMETRY reserved field or flags are not zero")
        if bool(flags & TELEMETRY_HAS_COMMAND) != bool(seq):
            raise DecodeError("TELEMETRY has-command flag disagrees with the command sequence")
        try:
            robot_mode = RobotMode(mode)
        except ValueError as exc:
            raise DecodeError(f"TELEMETRY mode {mode} is invalid") from exc
        return Telemetry(
            mode=robot_mode, command_stream=stream, command_seq=seq, command_sent_ns=sent,
            received_ns=rcv, decoded_ns=dec, applied_ns=app, actuated_ns=act,
            actuated_known=bool(flags & TELEMETRY_ACTUATED_KNOWN),
            counters=Counters(**dict(zip(Counters.FIELDS, counters, strict=True))),
        )  # fmt: skip


BODY_CODECS: dict[MessageType, BodyCodec[Any]] = {
    codec.TYPE: codec
    for codec in (
        HeartbeatCodec(),
        JointCommandCodec(),
        PoseCommandCodec(),
        BaseVelocityCommandCodec(),
        JointStateCodec(),
        BaseStateCodec(),
        ForceTorqueCodec(),
        TelemetryCodec(),
    )
}
"""The one table of message types and their bodies."""

_BY_CLASS: dict[type, BodyCodec[Any]] = {c.MESSAGE: c for c in BODY_CODECS.values()}


def codec_for(msg: object) -> BodyCodec[Any]:
    """The body codec for a message object."""
    try:
        return _BY_CLASS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"{type(msg).__name__} is not a wire message") from None
