"""Message bodies and the table that maps each `MessageType` to its body codec.

Command and state bodies travel as the `robots.api` dataclasses themselves (the driver API is
the vocabulary; the wire only lays it out), so each type has a small codec object here rather
than `parse`/`__bytes__` on the dataclass: `robots` must not know about the wire.

Arrays travel as ``count u16 | element size u8 (4 = float32, 8 = float64) | reserved u8 = 0``
followed by ``count`` little-endian IEEE-754 values. Decoding returns read-only numpy views of
the datagram, never copies. Encoding keeps float32 arrays float32 and sends every other real
dtype as float64.

Every body has exactly one encoding: a decoder accepts only what an encoder produces (reserved
bytes and absent optional fields all zero), so decode-then-encode gives back the same bytes.
Parsers raise `DecodeError`; packers raise `LocalProtocolError` for what the wire cannot carry.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from math import copysign
from operator import attrgetter
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
    forged: int = 0
    """Datagrams that failed authentication (security on; always 0 without it)."""
    unknown_session: int = 0
    """Sealed datagrams of a session nobody opened on the control plane (security on)."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "received", "malformed", "duplicate", "stale", "dropped",
        "superseded", "rejected", "clamped", "applied", "forged", "unknown_session",
    )  # fmt: skip
    """The counters in wire order (the TELEMETRY body's last 11 fields)."""

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

_ROLES: dict[int, Role] = {int(r): r for r in Role}
_MODES: dict[int, RobotMode] = {int(m): m for m in RobotMode}
# Dict lookups, not `Role(value)`: an enum call costs ~300 ns.

# ---------------------------------------------------------------------------------------------
# Arrays and vectors

_ARRAY = struct.Struct("<HBB")
_ARRAY_SIZE = _ARRAY.size  # 4
_MAX_COUNT = 0xFFFF
_F4 = np.dtype("<f4")
_F8 = np.dtype("<f8")
_ELEMENT: dict[int, np.dtype[Any]] = {4: _F4, 8: _F8}
_ELEMENT_NAME = {4: "float32", 8: "float64"}
_REAL_KINDS = frozenset("fiu")
_unpack_array = _ARRAY.unpack_from
_pack_array_header = _ARRAY.pack_into
# Positional arguments: np.frombuffer with keywords costs twice as much (~430 ns vs ~200 ns).
_frombuffer = np.frombuffer


def _to_real_array(values: Any, what: str) -> FloatArray:
    """`values` as an ndarray of real numbers (slow path: conversions and errors)."""
    try:
        a = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"{what} is not an array of numbers: {exc}") from exc
    if a.dtype.kind not in _REAL_KINDS:
        raise LocalProtocolError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a


def _wire_array(values: Any, what: str) -> FloatArray:
    """`values` as it travels: a 1-D little-endian float32 or float64 array, at most 65535
    long. An array that already is one is returned as it is; float32 of the other byte order
    stays float32; any other real dtype becomes float64."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        dtype = values.dtype
        if dtype in (_F8, _F4):
            if values.size > _MAX_COUNT:
                raise LocalProtocolError(f"{what} length is invalid: {values.size} > {_MAX_COUNT}")
            return values
    a = _to_real_array(values, what)
    if a.ndim != 1:
        raise LocalProtocolError(f"{what} must be one-dimensional, got shape {a.shape}")
    return _wire_array(a.astype(_F4 if a.dtype.kind == "f" and a.itemsize == 4 else _F8), what)


def _array_size(values: Any, what: str) -> int:
    """Bytes `_pack_array` writes for `values`."""
    return _ARRAY_SIZE + _wire_array(values, what).nbytes


def _pack_array(a: FloatArray, buf: bytearray | memoryview, off: int) -> int:
    """Write `a` (already passed through `_wire_array`) at `off`; return the offset after it."""
    _pack_array_header(buf, off, a.size, a.itemsize, 0)
    off += _ARRAY_SIZE
    end = off + a.nbytes
    buf[off:end] = a.tobytes()
    return end


def _parse_array(view: memoryview, off: int, what: str) -> tuple[FloatArray, int]:
    """Read an array at `off` as a read-only view; return it and the offset after it."""
    left = len(view) - off - _ARRAY_SIZE
    if left < 0:
        raise DecodeError(f"{what} array header is truncated")
    n, size, reserved = _unpack_array(view, off)
    dtype = _ELEMENT.get(size)
    if dtype is None:
        raise DecodeError(f"{what} element size {size} is invalid (4 or 8)")
    if reserved:
        raise DecodeError(f"{what} array reserved byte is not zero")
    if n * size > left:
        raise DecodeError(
            f"{what} array length is invalid: {n} {_ELEMENT_NAME[size]} values need "
            f"{n * size} bytes, {left} left"
        )
    off += _ARRAY_SIZE
    return _frombuffer(view, dtype, n, off), off + n * size


def _vector(values: Any, n: int, what: str) -> FloatArray:
    """`values` as a float64 array of shape (n,), for the fixed-size vectors."""
    if isinstance(values, np.ndarray) and values.dtype == _F8:
        a: FloatArray = values
    else:
        a = _to_real_array(values, what).astype(_F8)
    if a.shape != (n,):
        raise LocalProtocolError(f"{what} must have {n} values, got shape {a.shape}")
    return a


def _gripper_is_zero(gripper: float) -> bool:
    """True if an absent gripper's 8 bytes are all zero (+0.0: not -0.0, not a NaN)."""
    return gripper == 0.0 and copysign(1.0, gripper) > 0.0


# ---------------------------------------------------------------------------------------------
# Body codecs


class BodyCodec(Generic[T]):
    """Lays one message class out as bytes. Subclasses set TYPE and MESSAGE.

    `pack_into` writes exactly `size(msg)` bytes at `off`; `buf` must have room for them.
    `parse` takes exactly the body (a one-byte-per-item memoryview) and raises `DecodeError`.
    """

    TYPE: ClassVar[MessageType]
    MESSAGE: ClassVar[type]

    def size(self, msg: T) -> int:
        raise NotImplementedError

    def pack_into(self, msg: T, buf: bytearray | memoryview, off: int) -> None:
        raise NotImplementedError

    def parse(self, view: memoryview) -> T:
        raise NotImplementedError


class _FixedCodec(BodyCodec[T]):
    """A body that is one fixed struct."""

    STRUCT: ClassVar[struct.Struct]

    def size(self, msg: T) -> int:
        return self.STRUCT.size

    def _check_length(self, view: memoryview) -> None:
        if len(view) != self.STRUCT.size:
            raise DecodeError(
                f"{self.TYPE.name} body length is invalid: {len(view)} != {self.STRUCT.size}"
            )


_PRESENT_VELOCITIES = 0x01
_PRESENT_EFFORTS = 0x02
_PRESENT_GRIPPER = 0x04
_JOINTS_PRESENT = _PRESENT_VELOCITIES | _PRESENT_EFFORTS | _PRESENT_GRIPPER
_JOINTS_PREFIX = struct.Struct("<BBHd")  # present, reserved u8, reserved u16, gripper
_JOINTS_PREFIX_SIZE = _JOINTS_PREFIX.size  # 12
_pack_joints_prefix = _JOINTS_PREFIX.pack_into
_unpack_joints_prefix = _JOINTS_PREFIX.unpack_from


class _JointsCodec(BodyCodec[T]):
    """``present u8 | reserved 3 | gripper f64 | positions | [velocities] | [efforts]``;
    shared by joint commands and joint states. Present bits: 0x01 velocities, 0x02 efforts,
    0x04 gripper; an absent gripper is sent as +0.0. All arrays have the same count."""

    def __init__(self) -> None:
        name = self.TYPE.name
        self._name = name
        self._what = (f"{name} positions", f"{name} velocities", f"{name} efforts")

    def size(self, msg: Any) -> int:
        what_p, what_v, what_e = self._what
        size = _JOINTS_PREFIX_SIZE + _array_size(msg.positions, what_p)
        if msg.velocities is not None:
            size += _array_size(msg.velocities, what_v)
        if msg.efforts is not None:
            size += _array_size(msg.efforts, what_e)
        return size

    def pack_into(self, msg: Any, buf: bytearray | memoryview, off: int) -> None:
        what_p, what_v, what_e = self._what
        positions = _wire_array(msg.positions, what_p)
        velocities, efforts, gripper = msg.velocities, msg.efforts, msg.gripper
        present = 0
        if velocities is not None:
            present = _PRESENT_VELOCITIES
            velocities = _wire_array(velocities, what_v)
            if velocities.size != positions.size:
                raise LocalProtocolError(
                    f"{what_v} must have {positions.size} values like positions, "
                    f"got {velocities.size}"
                )
        if efforts is not None:
            present |= _PRESENT_EFFORTS
            efforts = _wire_array(efforts, what_e)
            if efforts.size != positions.size:
                raise LocalProtocolError(
                    f"{what_e} must have {positions.size} values like positions, got {efforts.size}"
                )
        if gripper is None:
            gripper = 0.0
        else:
            present |= _PRESENT_GRIPPER
        _pack_joints_prefix(buf, off, present, 0, 0, gripper)
        off = _pack_array(positions, buf, off + _JOINTS_PREFIX_SIZE)
        if velocities is not None:
            off = _pack_array(velocities, buf, off)
        if efforts is not None:
            _pack_array(efforts, buf, off)

    def parse(self, view: memoryview) -> T:
        size = len(view)
        if size < _JOINTS_PREFIX_SIZE:
            raise DecodeError(
                f"{self._name} body length is invalid: {size} < {_JOINTS_PREFIX_SIZE}"
            )
        present, reserved8, reserved16, gripper = _unpack_joints_prefix(view)
        if reserved8 or reserved16:
            raise DecodeError(f"{self._name} reserved bytes are not zero")
        if present & ~_JOINTS_PRESENT:
            raise DecodeError(f"{self._name} present bits 0x{present:02x} are invalid")
        if not present & _PRESENT_GRIPPER:
            if not _gripper_is_zero(gripper):
                raise DecodeError(f"{self._name} gripper is set but not marked present")
            gripper = None
        what_p, what_v, what_e = self._what
        positions, off = _parse_array(view, _JOINTS_PREFIX_SIZE, what_p)
        velocities = efforts = None
        if present & _PRESENT_VELOCITIES:
            velocities, off = _parse_array(view, off, what_v)
            if velocities.size != positions.size:
                raise DecodeError(
                    f"{what_v} array length is invalid: {velocities.size} != "
                    f"{positions.size} positions"
                )
        if present & _PRESENT_EFFORTS:
            efforts, off = _parse_array(view, off, what_e)
            if efforts.size != positions.size:
                raise DecodeError(
                    f"{what_e} array length is invalid: {efforts.size} != "
                    f"{positions.size} positions"
                )
        if off != size:
            raise DecodeError(f"{self._name} body has {size - off} trailing bytes")
        return self.MESSAGE(  # type: ignore[no-any-return]
            positions=positions, velocities=velocities, efforts=efforts, gripper=gripper
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

    def pack_into(self, msg: Heartbeat, buf: bytearray | memoryview, off: int) -> None:
        if msg.role not in _ROLES:
            raise LocalProtocolError(f"Heartbeat.role {msg.role!r} is not a Role")
        if msg.mode not in _MODES:
            raise LocalProtocolError(f"Heartbeat.mode {msg.mode!r} is not a RobotMode")
        self.STRUCT.pack_into(buf, off, msg.role, msg.mode, 0)

    def parse(self, view: memoryview) -> Heartbeat:
        self._check_length(view)
        role, mode, reserved = self.STRUCT.unpack_from(view)
        if reserved:
            raise DecodeError("HEARTBEAT reserved field is not zero")
        the_role = _ROLES.get(role)
        if the_role is None:
            raise DecodeError(f"HEARTBEAT role {role} is invalid (1 station, 2 robot)")
        the_mode = _MODES.get(mode)
        if the_mode is None:
            raise DecodeError(f"HEARTBEAT mode {mode} is invalid (0, 1 or 2)")
        return Heartbeat(role=the_role, mode=the_mode)


_POSE_PREFIX = struct.Struct("<BBHd")  # present, frame, reserved, gripper


class PoseCommandCodec(_FixedCodec[PoseCommand]):
    """``present u8 | frame u8 (0 = base) | reserved u16 | gripper f64 | x y z f64 |
    qx qy qz qw f64``"""

    TYPE = MessageType.POSE_COMMAND
    MESSAGE = PoseCommand
    STRUCT = struct.Struct("<BBHd3d4d")

    def pack_into(self, msg: PoseCommand, buf: bytearray | memoryview, off: int) -> None:
        p = _vector(msg.position, 3, "PoseCommand.position").tolist()
        q = _vector(msg.orientation, 4, "PoseCommand.orientation").tolist()
        gripper = msg.gripper
        if gripper is None:
            self.STRUCT.pack_into(buf, off, 0, 0, 0, 0.0, *p, *q)
        else:
            self.STRUCT.pack_into(buf, off, _PRESENT_GRIPPER, 0, 0, gripper, *p, *q)

    def parse(self, view: memoryview) -> PoseCommand:
        self._check_length(view)
        present, frame, reserved, gripper = _POSE_PREFIX.unpack_from(view)
        if present & ~_PRESENT_GRIPPER:
            raise DecodeError(f"POSE_COMMAND present bits 0x{present:02x} are invalid")
        if frame != 0:
            raise DecodeError(f"POSE_COMMAND frame {frame} is unknown (0 = robot base)")
        if reserved:
            raise DecodeError("POSE_COMMAND reserved field is not zero")
        if not present:
            if not _gripper_is_zero(gripper):
                raise DecodeError("POSE_COMMAND gripper is set but not marked present")
            gripper = None
        return PoseCommand(
            position=_frombuffer(view, _F8, 3, 12),
            orientation=_frombuffer(view, _F8, 4, 36),
            gripper=gripper,
        )


class BaseVelocityCommandCodec(_FixedCodec[BaseVelocityCommand]):
    """``vx vy wz f64``"""

    TYPE = MessageType.BASE_VELOCITY_COMMAND
    MESSAGE = BaseVelocityCommand
    STRUCT = struct.Struct("<3d")

    def pack_into(self, msg: BaseVelocityCommand, buf: bytearray | memoryview, off: int) -> None:
        self.STRUCT.pack_into(buf, off, msg.vx, msg.vy, msg.wz)

    def parse(self, view: memoryview) -> BaseVelocityCommand:
        self._check_length(view)
        vx, vy, wz = self.STRUCT.unpack_from(view)
        return BaseVelocityCommand(vx=vx, vy=vy, wz=wz)


class BaseStateCodec(_FixedCodec[BaseState]):
    """``x y theta vx vy wz f64``"""

    TYPE = MessageType.BASE_STATE
    MESSAGE = BaseState
    STRUCT = struct.Struct("<6d")

    def pack_into(self, msg: BaseState, buf: bytearray | memoryview, off: int) -> None:
        self.STRUCT.pack_into(buf, off, msg.x, msg.y, msg.theta, msg.vx, msg.vy, msg.wz)

    def parse(self, view: memoryview) -> BaseState:
        self._check_length(view)
        x, y, theta, vx, vy, wz = self.STRUCT.unpack_from(view)
        return BaseState(x=x, y=y, theta=theta, vx=vx, vy=vy, wz=wz)


_FORCE_TORQUE_PREFIX = struct.Struct("<HHq")  # sensor, reserved, sample time


class ForceTorqueCodec(_FixedCodec[ForceTorque]):
    """``sensor u16 | reserved u16 | sample time i64 | fx fy fz tx ty tz f64``"""

    TYPE = MessageType.FORCE_TORQUE
    MESSAGE = ForceTorque
    STRUCT = struct.Struct("<HHq6d")

    def pack_into(self, msg: ForceTorque, buf: bytearray | memoryview, off: int) -> None:
        f = _vector(msg.force, 3, "ForceTorque.force").tolist()
        t = _vector(msg.torque, 3, "ForceTorque.torque").tolist()
        self.STRUCT.pack_into(buf, off, msg.sensor, 0, msg.time_ns, *f, *t)

    def parse(self, view: memoryview) -> ForceTorque:
        self._check_length(view)
        sensor, reserved, time_ns = _FORCE_TORQUE_PREFIX.unpack_from(view)
        if reserved:
            raise DecodeError("FORCE_TORQUE reserved field is not zero")
        return ForceTorque(
            sensor=sensor,
            time_ns=time_ns,
            force=_frombuffer(view, _F8, 3, 12),
            torque=_frombuffer(view, _F8, 3, 36),
        )


_TELEMETRY_FLAGS = TELEMETRY_HAS_COMMAND | TELEMETRY_ACTUATED_KNOWN
_counter_values = attrgetter(*Counters.FIELDS)


class TelemetryCodec(_FixedCodec[Telemetry]):
    """``command stream u16 | mode u8 | flags u8 | reserved u32 | command seq u64 |
    command sent, received, decoded, applied, actuated i64 | 11 counters u32`` (100 bytes;
    a 92-byte body, from a peer without the forged and unknown-session counters, is malformed)"""

    TYPE = MessageType.TELEMETRY
    MESSAGE = Telemetry
    STRUCT = struct.Struct("<HBBIQ5q11I")

    def pack_into(self, msg: Telemetry, buf: bytearray | memoryview, off: int) -> None:
        if msg.mode not in _MODES:
            raise LocalProtocolError(f"Telemetry.mode {msg.mode!r} is not a RobotMode")
        flags = (TELEMETRY_HAS_COMMAND if msg.command_seq else 0) | (
            TELEMETRY_ACTUATED_KNOWN if msg.actuated_known else 0
        )
        counters = [value & 0xFFFFFFFF for value in _counter_values(msg.counters)]
        self.STRUCT.pack_into(
            buf, off, msg.command_stream, msg.mode, flags, 0, msg.command_seq,
            msg.command_sent_ns, msg.received_ns, msg.decoded_ns, msg.applied_ns,
            msg.actuated_ns, *counters,
        )  # fmt: skip

    def parse(self, view: memoryview) -> Telemetry:
        self._check_length(view)
        stream, mode, flags, reserved, seq, sent, rcv, dec, app, act, *c = self.STRUCT.unpack_from(
            view
        )
        if reserved:
            raise DecodeError("TELEMETRY reserved field is not zero")
        if flags & ~_TELEMETRY_FLAGS:
            raise DecodeError(f"TELEMETRY flags 0x{flags:02x} has unknown bits set")
        if bool(flags & TELEMETRY_HAS_COMMAND) != bool(seq):
            raise DecodeError("TELEMETRY has-command flag disagrees with the command sequence")
        robot_mode = _MODES.get(mode)
        if robot_mode is None:
            raise DecodeError(f"TELEMETRY mode {mode} is invalid (0, 1 or 2)")
        return Telemetry(
            mode=robot_mode, command_stream=stream, command_seq=seq, command_sent_ns=sent,
            received_ns=rcv, decoded_ns=dec, applied_ns=app, actuated_ns=act,
            actuated_known=bool(flags & TELEMETRY_ACTUATED_KNOWN),
            counters=Counters(
                received=c[0], malformed=c[1], duplicate=c[2], stale=c[3], dropped=c[4],
                superseded=c[5], rejected=c[6], clamped=c[7], applied=c[8], forged=c[9],
                unknown_session=c[10],
            ),
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
