"""The fixed 32-byte datagram header (all fields little-endian).

======  ====  =====================================================================
offset  size  field
======  ====  =====================================================================
0       2     magic, the ASCII bytes ``TP``
2       1     version, 2 (`VERSION`)
3       1     message type (see `MessageType`)
4       2     flags (u16); bit 0 AUTHENTICATED (`FLAG_AUTHENTICATED`), every other bit 0
6       2     stream id (u16), chosen by the sender, one sequence space per stream
8       4     session id (u32), chosen by the station for one run
12      2     body length in bytes (u16); the datagram is exactly 32 + body length
14      2     reserved, 0
16      8     sequence number (u64), per (session, stream), first is 1, +1 per datagram
24      8     send time (i64), the sender's monotonic clock in nanoseconds
======  ====  =====================================================================

In an authenticated datagram (flags = `FLAG_AUTHENTICATED`) the body is the ChaCha20-Poly1305
ciphertext of the plain body followed by its `AUTH_TAG_SIZE`-byte tag, the header is the AEAD's
associated data and the body length counts ciphertext and tag (``telepresence.security``).
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from telepresence.exceptions import AuthenticationError, DecodeError, RemoteProtocolError

__all__ = [
    "AUTH_TAG_SIZE",
    "FLAG_AUTHENTICATED",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BODY",
    "VERSION",
    "Header",
    "MessageType",
]

MAGIC = b"TP"
VERSION = 2
"""The wire version this peer speaks, and the only one it accepts (``docs/protocol.md`` §2).

2: TELEMETRY counters gained ``forged`` and ``unknown_session`` (body 100 bytes); 1: the first
layout.
"""
HEADER = struct.Struct("<2sBBHHIHHQq")
HEADER_SIZE = HEADER.size  # 32
MAX_BODY = 0xFFFF
FLAG_AUTHENTICATED = 0x0001
"""Flag bit 0: the body is sealed (ChaCha20-Poly1305 ciphertext + tag, the header is the AAD)."""
FLAGS_KNOWN = FLAG_AUTHENTICATED
"""Flag bits this version understands; a datagram with any other bit set is malformed."""
AUTH_TAG_SIZE = 16
"""Bytes of the Poly1305 tag that ends the body of an authenticated datagram."""


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

_TYPE_OF: dict[int, MessageType] = {int(t): t for t in MessageType}
# A dict lookup, not `MessageType(value)`: the enum call costs ~300 ns on every datagram.
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack_into
_new_tuple = tuple.__new__  # builds a Header without NamedTuple's Python-level __new__ (~110 ns)


class Header(NamedTuple):
    """A parsed header. `body_length` is implied by the body when encoding.

    A named tuple rather than a frozen dataclass: it is built for every datagram decoded, and a
    frozen dataclass's ``__init__`` costs ~5 times as much.
    """

    type: MessageType
    """What the body is."""
    stream: int
    """Stream id (u16): one sequence space per (session, stream)."""
    session: int
    """Session id (u32), picked by the station for one run."""
    seq: int
    """Sequence number (u64) within the stream; the first datagram is 1."""
    send_time_ns: int
    """The sender's monotonic clock when it sent the datagram (i64, ns)."""
    flags: int = 0
    """Flag bits (u16): 0, or `FLAG_AUTHENTICATED` for a datagram that was sealed."""

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, flags_expected: int = 0
    ) -> tuple[Header, int]:
        """Parse and check the header of a whole datagram; return it and the body length.

        `data` is the whole datagram, one byte per item. `flags_expected` is the flags field the
        reader takes: 0 (plain, the default) or `FLAG_AUTHENTICATED` (an opener with the
        session's key). Raises `DecodeError` naming the first field that is wrong; a plain
        datagram where an authenticated one is expected raises `AuthenticationError`.
        """
        size = len(data)
        if size < HEADER_SIZE:
            raise DecodeError(f"datagram is truncated: {size} bytes < {HEADER_SIZE}-byte header")
        magic, version, mtype, flags, stream, session, length, reserved, seq, sent = _unpack_header(
            data
        )
        if magic != MAGIC:
            raise DecodeError(f"magic is invalid: {bytes(magic)!r} (expected {MAGIC!r})")
        if version != VERSION:
            raise DecodeError(f"version {version} is not supported (this peer speaks {VERSION})")
        message_type = _TYPE_OF.get(mtype)
        if message_type is None:
            raise DecodeError(f"message type 0x{mtype:02x} is unknown")
        if flags != flags_expected:
            raise _flags_error(flags)
        if reserved:
            raise DecodeError(f"reserved header field is not zero: 0x{reserved:04x}")
        if HEADER_SIZE + length != size:
            problem = "is truncated" if HEADER_SIZE + length > size else "has trailing bytes"
            raise DecodeError(
                f"datagram {problem}: header says body length {length}, "
                f"datagram has {size - HEADER_SIZE}"
            )
        return _new_tuple(cls, (message_type, stream, session, seq, sent, flags)), length

    def pack_into(self, buf: bytearray | memoryview, body_length: int) -> None:
        """Write the header at the start of `buf` (raises `struct.error` for out-of-range
        fields; `encode_into` translates that to `LocalProtocolError`)."""
        _pack_header(
            buf, 0, MAGIC, VERSION, self.type, self.flags, self.stream, self.session,
            body_length, 0, self.seq, self.send_time_ns,
        )  # fmt: skip


def _flags_error(flags: int) -> RemoteProtocolError:
    """The error for a flags field that is not what the reader takes (off the hot path)."""
    if flags & ~FLAGS_KNOWN:
        return DecodeError(f"flags 0x{flags:04x} has unknown bits set")
    if flags & FLAG_AUTHENTICATED:
        return DecodeError(
            f"flags 0x{flags:04x}: the datagram is authenticated, "
            "a session key is needed to open it (telepresence.security)"
        )
    return AuthenticationError(
        f"flags 0x{flags:04x}: the datagram is not authenticated "
        f"(flag 0x{FLAG_AUTHENTICATED:04x} clear) where the session requires it"
    )
