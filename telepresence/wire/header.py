"""The fixed 32-byte datagram header (all fields little-endian).

======  ====  =====================================================================
offset  size  field
======  ====  =====================================================================
0       2     magic, the ASCII bytes ``TP``
2       1     version, 1
3       1     message type (see `MessageType`)
4       2     flags (u16); version 1 defines none, every bit must be 0
6       2     stream id (u16), chosen by the sender, one sequence space per stream
8       4     session id (u32), chosen by the station for one run
12      2     body length in bytes (u16); the datagram is exactly 32 + body length
14      2     reserved, 0
16      8     sequence number (u64), per (session, stream), first is 1, +1 per datagram
24      8     send time (i64), the sender's monotonic clock in nanoseconds
======  ====  =====================================================================
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from telepresence.exceptions import DecodeError

__all__ = ["HEADER", "HEADER_SIZE", "MAGIC", "MAX_BODY", "VERSION", "Header", "MessageType"]

MAGIC = b"TP"
VERSION = 1
HEADER = struct.Struct("<2sBBHHIHHQq")
HEADER_SIZE = HEADER.size  # 32
MAX_BODY = 0xFFFF
FLAGS_KNOWN = 0x0000
"""Flag bits this version understands; a datagram with any other bit set is malformed."""


class MessageType(enum.IntEnum):
    """Every message type, in one table; bodies are registered against these in `messages`."""

    HEARTBEAT = 0x01
    JOINT_COMMAND = 0x10
    POSE_COMMAND = 0x11
    BASE_VELOCITY_COMMAND = 0x12
    JOINT_STATE = 0x20
    BASE_STATE = 0x21
    FORCE_TORQUE = 0x22
    TELEMETRY = 0x30


COMMAND_TYPES = frozenset(
    {MessageType.JOINT_COMMAND, MessageType.POSE_COMMAND, MessageType.BASE_VELOCITY_COMMAND}
)
"""Message types that command motion: latest wins, stale ones are dropped, never applied."""

_TYPES = frozenset(int(t) for t in MessageType)


@dataclass(slots=True, frozen=True)
class Header:
    """A parsed header. `body_length` is implied by the body when encoding."""

    type: MessageType
    stream: int
    session: int
    seq: int
    send_time_ns: int
    flags: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> tuple[Header, int]:
        """Parse and check the header of a whole datagram; return it and the body length.

        Raises `DecodeError` naming the first field that is wrong.
        """
        if len(data) < HEADER_SIZE:
            raise DecodeError(f"datagram length is invalid: {len(data)} < {HEADER_SIZE}")
        magic, version, mtype, flags, stream, session, length, reserved, seq, sent = (
            HEADER.unpack_from(data)
        )
        if magic != MAGIC:
            raise DecodeError(f"magic is invalid: {bytes(magic)!r}")
        if version != VERSION:
            raise DecodeError(f"version {version} is not supported (this peer speaks {VERSION})")
        if mtype not in _TYPES:
            raise DecodeError(f"message type 0x{mtype:02x} is unknown")
        if flags & ~FLAGS_KNOWN:
            raise DecodeError(f"flags 0x{flags:04x} has unknown bits set")
        if reserved:
            raise DecodeError("reserved header field is not zero")
        if HEADER_SIZE + length != len(data):
            raise DecodeError(
                f"body length is invalid: header says {length}, datagram has "
                f"{len(data) - HEADER_SIZE}"
            )
        return cls(MessageType(mtype), stream, session, seq, sent, flags), length

    def pack_into(self, buf: bytearray | memoryview, body_length: int) -> None:
        """Write the header at the start of `buf`."""
        HEADER.pack_into(
            buf, 0, MAGIC, VERSION, self.type, self.flags, self.stream, self.session,
            body_length, 0, self.seq, self.send_time_ns,
        )  # fmt: skip
