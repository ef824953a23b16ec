"""Control-plane messages: one table of typed messages, each sent as two ZeroMQ frames.

Frame 1 is the message name in ASCII (e.g. ``b"hello"``), frame 2 a UTF-8 JSON object with the
message's fields. Unknown names, missing or extra fields, and fields of the wrong JSON type are
a `RemoteProtocolError` naming the problem. Times are integers in nanoseconds of the sender's
monotonic clock; rates in bit/s; sizes in bytes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from telepresence.exceptions import RemoteProtocolError

__all__ = [
    "MESSAGES",
    "Bye",
    "ClockReply",
    "ClockRequest",
    "ControlMessage",
    "Error",
    "Grant",
    "Hello",
    "LeaseRelease",
    "LeaseState",
    "LeaseTake",
    "Refuse",
    "Release",
    "Reserve",
    "Welcome",
    "decode_message",
    "encode_message",
]

PROTOCOL = "telepresence-control/1"


@dataclass(kw_only=True)
class ControlMessage:
    NAME: ClassVar[str] = ""


@dataclass(kw_only=True)
class Hello(ControlMessage):
    """Station -> robot: open a session."""

    NAME = "hello"
    protocol: str = PROTOCOL
    """Must be ``telepresence-control/1``."""
    station: str = ""
    """A name for the operator's station, for logs and the audit trail."""
    role: str = "control"
    """``control`` (ask for the control lease right away) or ``observe``."""


@dataclass(kw_only=True)
class Welcome(ControlMessage):
    """Robot -> station: the session is open."""

    NAME = "welcome"
    session: int
    """Session id for the data plane (u32, non-zero)."""
    secret: str
    """32-byte data-plane session secret, hex; the AEAD keys are derived from it."""
    manifest: dict[str, Any]
    """The robot's capability manifest (`robots.api.Manifest.to_dict()`)."""
    data_addresses: list[str]
    """UDP HOST:PORT addresses of the robot's data plane (several = several paths)."""
    secure: bool = True
    """False only when the robot runs ``--insecure``: datagrams are then not sealed."""
    control_rate_hz: float = 500.0
    """The robot's control loop rate."""


@dataclass(kw_only=True)
class ClockRequest(ControlMessage):
    """Station -> robot: one clock-sync exchange; `t1` is the station's send time."""

    NAME = "clock"
    t1: int


@dataclass(kw_only=True)
class ClockReply(ControlMessage):
    """Robot -> station: `t2` received and `t3` sent, on the robot's clock."""

    NAME = "clock-reply"
    t1: int
    t2: int
    t3: int


@dataclass(kw_only=True)
class Reserve(ControlMessage):
    """Station -> robot: reserve bandwidth for one stream (see ``docs/qos.md``)."""

    NAME = "reserve"
    stream: int
    traffic_class: str
    rate_bps: float
    burst_bytes: int
    max_packet_bytes: int
    direction: str = "up"
    """``up`` (station -> robot) or ``down`` (robot -> station)."""


@dataclass(kw_only=True)
class Grant(ControlMessage):
    """Robot -> station: the reservation is admitted; mark packets with `dscp`."""

    NAME = "grant"
    stream: int
    traffic_class: str
    rate_bps: float
    burst_bytes: int
    max_packet_bytes: int
    dscp: int
    direction: str = "up"


@dataclass(kw_only=True)
class Refuse(ControlMessage):
    """Robot -> station: a request was refused; `reason` says why, for a person."""

    NAME = "refuse"
    request: str
    """The refused message's name."""
    reason: str
    code: str = ""
    """Machine-readable reason: ``lease_held``, ``observer``, ``protocol``, ``role``,
    ``not_yours``, ``invalid``, or a reservation refusal (``over capacity``, ``class share``,
    ``duplicate``, ``unknown stream``)."""


@dataclass(kw_only=True)
class Release(ControlMessage):
    """Station -> robot: release a stream's reservation."""

    NAME = "release"
    stream: int
    direction: str = "up"


@dataclass(kw_only=True)
class LeaseTake(ControlMessage):
    """Station -> robot: take (or renew) the control lease."""

    NAME = "lease-take"


@dataclass(kw_only=True)
class LeaseRelease(ControlMessage):
    """Station -> robot: give the control lease up."""

    NAME = "lease-release"


@dataclass(kw_only=True)
class LeaseState(ControlMessage):
    """Robot -> station: who holds the control lease (sent on every change and on request)."""

    NAME = "lease"
    holder: int | None
    """Session id holding control, or None."""
    holder_station: str | None = None
    you_hold: bool = False
    expires_in_ms: float | None = None
    """Time left before the lease lapses unless renewed."""


@dataclass(kw_only=True)
class Bye(ControlMessage):
    """Either side: the session ends (the lease and reservations are released)."""

    NAME = "bye"
    reason: str = ""


@dataclass(kw_only=True)
class Error(ControlMessage):
    """Robot -> station: a message could not be understood."""

    NAME = "error"
    reason: str


MESSAGES: dict[str, type[ControlMessage]] = {
    cls.NAME: cls
    for cls in (
        Hello, Welcome, ClockRequest, ClockReply, Reserve, Grant, Refuse, Release, LeaseTake,
        LeaseRelease, LeaseState, Bye, Error,
    )
}  # fmt: skip
"""The one table of control-plane messages."""


def encode_message(message: ControlMessage) -> list[bytes]:
    """The two frames of a message."""
    body = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return [message.NAME.encode(), json.dumps(body, separators=(",", ":")).encode()]


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def decode_message(frames: list[bytes]) -> ControlMessage:
    """Parse the two frames of a message; `RemoteProtocolError` names what is wrong."""
    if len(frames) != 2:
        raise RemoteProtocolError(f"control message must be 2 frames, got {len(frames)}")
    name = frames[0].decode("ascii", "replace")
    cls = MESSAGES.get(name)
    if cls is None:
        raise RemoteProtocolError(
            f"unknown control message {name!r}; known: {', '.join(sorted(MESSAGES))}"
        )
    try:
        body = json.loads(frames[1])
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"{name}: body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"{name}: body must be a JSON object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(body) - set(fields))
    if extra:
        raise RemoteProtocolError(f"{name}: unknown field(s) {', '.join(extra)}")
    for fname, f in fields.items():
        if fname not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RemoteProtocolError(f"{name}: missing field {fname!r}")
            continue
        if not _type_ok(body[fname], hints[fname]):
            raise RemoteProtocolError(
                f"{name}.{fname}: {body[fname]!r} is not of type {hints[fname]}"
            )
    return cls(**body)
