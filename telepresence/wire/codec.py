"""Encode messages to datagrams and decode datagrams to messages (sans-IO: bytes in, bytes out).

Both directions are on the hot path of every control tick, so the per-message work is looked
up once at import (`_ENCODERS`, `_PARSERS`) rather than per call.

The joint fast paths (`_decode_joints`, `_encode_joints`) are C functions where the extension
is built (`telepresence.native`), the Python ones here otherwise; both give the same results.

`encode_parts` and `decode_body` are the halves ``telepresence.security`` seals and opens
authenticated datagrams with: the header and the plain body apart (associated data and
plaintext of the AEAD), and a body parsed on its own once decrypted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from robots.api import JointCommand
from telepresence.exceptions import DecodeError, LocalProtocolError
from telepresence.native import module as _native
from telepresence.wire.header import (
    _TYPE_OF,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_BODY,
    VERSION,
    Header,
    MessageType,
)
from telepresence.wire.messages import BODY_CODECS, Buffer

__all__ = [
    "Datagram",
    "decode",
    "decode_body",
    "encode",
    "encode_into",
    "encode_parts",
    "encoded_size",
]


class Datagram(NamedTuple):
    """A decoded datagram."""

    header: Header
    message: Any


_Encoder = tuple[int, Callable[[Any], int], Callable[[Any, Any, int], None]]
"""A message class's type code, body `size` and body `pack_into`."""

_PARSERS: dict[int, Callable[[memoryview], Any]] = {t: c.parse for t, c in BODY_CODECS.items()}
_ENCODERS: dict[type, _Encoder] = {
    c.MESSAGE: (int(c.TYPE), c.size, c.pack_into) for c in BODY_CODECS.values()
}
_pack_header = HEADER.pack_into
_parse_header = Header.parse
_new_tuple = tuple.__new__  # builds a Datagram without NamedTuple's Python-level __new__

_ENCODE_ERRORS = (struct.error, OverflowError, TypeError, ValueError, AttributeError)
"""What packing raises for a field the wire cannot carry (out of range, wrong type)."""
_PARSE_SLIPS = (struct.error, ValueError, TypeError, IndexError, OverflowError)
"""What a body parser could raise past its own checks; still the peer's fault: DecodeError."""


# Fast path for the hottest datagrams: a joint command or state with float64 positions and no
# velocities or efforts. One unpack covers the header, the joints prefix and the array header;
# anything unusual falls through to the general parser, which also words the errors.
_FUSED = struct.Struct("<2sBBHHIHHQqBBHdHBB")
_FUSED_SIZE = _FUSED.size  # 48
_unpack_fused = _FUSED.unpack_from
_pack_fused = _FUSED.pack_into
_FUSED_TYPES = {
    int(t): (t, BODY_CODECS[t].MESSAGE)
    for t in (MessageType.JOINT_COMMAND, MessageType.JOINT_STATE)
}
_FUSED_CLASSES = {cls: mtype for mtype, (_, cls) in _FUSED_TYPES.items()}
# The same layout for a body on its own (the plaintext of an authenticated datagram).
_FUSED_BODY = struct.Struct("<BBHdHBB")
_FUSED_BODY_SIZE = _FUSED_BODY.size  # 16
_unpack_fused_body = _FUSED_BODY.unpack_from
_JOINT_CLASSES = {t: c for t, (_, c) in _FUSED_TYPES.items()}
_ZERO8 = bytes(8)
_F8 = np.dtype("<f8")
_frombuffer = np.frombuffer
_new_object = object.__new__


def encoded_size(message: object) -> int:
    """Bytes that `encode` will produce for `message` (`LocalProtocolError` if it cannot)."""
    return HEADER_SIZE + _body_size(message, _lookup(message)[1])


def _lookup(message: object) -> _Encoder:
    try:
        return _ENCODERS[type(message)]
    except KeyError:
        raise LocalProtocolError(f"{type(message).__name__} is not a wire message") from None


def _write(
    buf: bytearray | memoryview,
    message: object,
    encoder: _Encoder,
    body: int,
    stream: int,
    session: int,
    seq: int,
    send_time_ns: int,
    flags: int = 0,
    trailer: int = 0,
) -> None:
    mtype, _, pack_body = encoder
    try:
        _pack_header(
            buf, 0, MAGIC, VERSION, mtype, flags, stream, session, body + trailer, 0, seq,
            send_time_ns,
        )  # fmt: skip
        pack_body(message, buf, HEADER_SIZE)
    except LocalProtocolError:
        raise
    except _ENCODE_ERRORS as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc


def _body_size(message: object, size: Callable[[Any], int]) -> int:
    try:
        body = size(message)
    except LocalProtocolError:
        raise
    except _ENCODE_ERRORS as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc
    if body > MAX_BODY:
        raise LocalProtocolError(f"body length is invalid: {body} > {MAX_BODY}")
    return body


def encode_into(
    buf: Any,
    message: object,
    *,
    stream: int,
    session: int,
    seq: int,
    send_time_ns: int,
    flags: int = 0,
    trailer: int = 0,
) -> int:
    """Write one datagram at the start of `buf` and return its length.

    `buf` is a bytearray, a writable one-byte-per-item memoryview or any writable buffer that
    takes slice assignment of bytes; every byte of the datagram is written, so it may be reused
    dirty. `flags` and `trailer` are as in `encode_parts`: the header carries `flags` and a body
    length `trailer` bytes longer than the body, and `buf` must have room for the trailer after
    the returned length (a sealer writes its tag there). Raises `LocalProtocolError` if `buf` is
    too small or the message or a header field cannot be encoded.
    """
    kind = _FUSED_CLASSES.get(type(message))
    if kind is not None:
        fast = _encode_joints_into(
            buf, message, kind, stream, session, seq, send_time_ns, flags, trailer
        )
        if fast is not None:
            return fast
    encoder = _lookup(message)
    body = _body_size(message, encoder[1])
    if body + trailer > MAX_BODY:
        raise LocalProtocolError(f"body length is invalid: {body} + {trailer} > {MAX_BODY}")
    total = HEADER_SIZE + body
    if len(buf) < total + trailer:
        raise LocalProtocolError(f"buffer is too small: {len(buf)} < {total + trailer} bytes")
    _write(buf, message, encoder, body, stream, session, seq, send_time_ns, flags, trailer)
    return total


def encode(message: object, *, stream: int, session: int, seq: int, send_time_ns: int) -> bytearray:
    """Encode one message as a datagram. Raises `LocalProtocolError` for what the wire cannot
    carry (an unknown message class, an out-of-range field, a malformed array)."""
    kind = _FUSED_CLASSES.get(type(message))
    if kind is not None:
        fast = _encode_joints(message, kind, stream, session, seq, send_time_ns)
        if fast is not None:
            return fast
    encoder = _lookup(message)
    body = _body_size(message, encoder[1])
    buf = bytearray(HEADER_SIZE + body)
    _write(buf, message, encoder, body, stream, session, seq, send_time_ns)
    return buf


def encode_parts(
    message: object,
    *,
    stream: int,
    session: int,
    seq: int,
    send_time_ns: int,
    flags: int,
    trailer: int,
) -> tuple[bytes, bytes | bytearray]:
    """The header and the body of the datagram `encode` gives, apart, except that the header
    carries `flags` and a body length `trailer` bytes longer than the body: what a sealer needs
    (the header is its associated data, the body its plaintext, the trailer its tag; see
    ``telepresence.security``). Raises `LocalProtocolError` as `encode` does, also when body +
    trailer does not fit the u16 body length."""
    buf = bytearray(encoded_size(message) + trailer)
    size = encode_into(
        buf, message, stream=stream, session=session, seq=seq, send_time_ns=send_time_ns,
        flags=flags, trailer=trailer,
    )  # fmt: skip
    return bytes(buf[:HEADER_SIZE]), buf[HEADER_SIZE:size]


def _encode_joints_into(
    buf: Any,
    message: Any,
    mtype: int,
    stream: int,
    session: int,
    seq: int,
    send_time_ns: int,
    flags: int,
    trailer: int,
) -> int | None:
    """`encode_into` for the layout of the fused fast path, when the message fits it."""
    positions = message.positions
    if (
        message.velocities is not None or message.efforts is not None
        or type(positions) is not np.ndarray or positions.dtype != _F8 or positions.ndim != 1
    ):  # fmt: skip
        return None
    n: int = positions.shape[0]
    total = _FUSED_SIZE + 8 * n
    if len(buf) < total + trailer:
        return None  # the general path says what is wrong
    gripper = message.gripper
    try:
        _pack_fused(
            buf, 0, MAGIC, VERSION, mtype, flags, stream, session, 16 + 8 * n + trailer, 0, seq,
            send_time_ns, 0 if gripper is None else 4, 0, 0, 0.0 if gripper is None else gripper,
            n, 8, 0,
        )  # fmt: skip
    except _ENCODE_ERRORS:
        return None
    buf[_FUSED_SIZE:total] = positions.tobytes()
    return total


def _encode_joints_fast(
    message: Any, mtype: int, stream: int, session: int, seq: int, send_time_ns: int
) -> bytearray | None:
    """The fused layout of `_decode_joints_fast`, when the message fits it: `encode`'s own copy
    of `_encode_joints_into`, sized exactly and without a buffer check (0.65 vs 0.8 µs warm: plain
    commands are the insecure data plane's hot path)."""
    positions = message.positions
    if (
        message.velocities is not None or message.efforts is not None
        or type(positions) is not np.ndarray or positions.dtype != _F8 or positions.ndim != 1
    ):  # fmt: skip
        return None
    n = positions.shape[0]
    gripper = message.gripper
    try:
        buf = bytearray(_FUSED_SIZE + 8 * n)
        _pack_fused(
            buf, 0, MAGIC, VERSION, mtype, 0, stream, session, 16 + 8 * n, 0, seq, send_time_ns,
            0 if gripper is None else 4, 0, 0, 0.0 if gripper is None else gripper, n, 8, 0,
        )  # fmt: skip
    except _ENCODE_ERRORS:
        return None  # the general path says what is wrong
    buf[_FUSED_SIZE:] = positions.tobytes()
    return buf


def _byte_view(data: Buffer) -> memoryview:
    """`data` as a read-only, one-dimensional memoryview of unsigned bytes."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
        try:
            view = view.cast("B")  # C-contiguous: the same memory, seen as bytes
        except (TypeError, ValueError):
            view = memoryview(view.tobytes())  # not contiguous: the only case that copies
    return view.toreadonly()


def _decode_joints_fast(data: bytes) -> Datagram | None:
    (magic, version, mtype, flags, stream, session, length, reserved, seq, sent, present,
     res8, res16, gripper, n, size, res_a) = _unpack_fused(data)  # fmt: skip
    kind = _FUSED_TYPES.get(mtype)
    if (
        kind is None or magic != MAGIC or version != VERSION or flags or reserved or res8
        or res16 or res_a or size != 8 or length + HEADER_SIZE != len(data)
        or _FUSED_SIZE + 8 * n != len(data)
    ):  # fmt: skip
        return None
    if present == 4:
        grip: float | None = gripper
    elif present == 0 and data[36:44] == _ZERO8:
        grip = None
    else:
        return None
    header = _new_tuple(Header, (kind[0], stream, session, seq, sent, flags))
    cls = kind[1]
    if cls is JointCommand:  # every field set here, without the dataclass __init__ (0.4 µs cold)
        message = _new_object(cls)
        message.positions = _frombuffer(data, _F8, n, _FUSED_SIZE)
        message.velocities = message.efforts = None
        message.gripper = grip
        message.ref = 0
    else:
        message = cls(positions=_frombuffer(data, _F8, n, _FUSED_SIZE), gripper=grip)
    return _new_tuple(Datagram, (header, message))


def _decode_joints_py(data: bytes) -> Datagram | None:
    """`decode`'s fast path for bytes: the fused layout, or None for anything else."""
    if len(data) >= _FUSED_SIZE and data[3] in _FUSED_TYPES:
        return _decode_joints_fast(data)
    return None


# The fast paths `decode` and `encode` call: the C versions when the extension is there
# (``telepresence.native``), the Python ones above otherwise. Same results, same None cases.
_decode_joints: Callable[[bytes], Datagram | None] = _decode_joints_py
_encode_joints: Callable[..., bytearray | None] = _encode_joints_fast
if _native is not None:
    _native.configure_codec(
        Header, Datagram, np.ndarray, _F8, _frombuffer, _new_object, dict(_TYPE_OF),
        {t: (member, cls, cls is JointCommand) for t, (member, cls) in _FUSED_TYPES.items()},
    )  # fmt: skip
    _decode_joints, _encode_joints = _native.decode_joints, _native.encode_joints


def decode(data: Buffer) -> Datagram:
    """Decode one datagram. Any malformed input raises `DecodeError`, and nothing else.

    `data` is any bytes-like object (a `TypeError` if it is not one). Array fields of the result
    are read-only views of `data`: no payload is copied, so copy them before reusing a receive
    buffer (`data` stays locked against resizing while they live).
    """
    # bytes (what recvfrom gives) are already read-only and flat; anything else is normalised
    if type(data) is bytes:
        fast = _decode_joints(data)
        if fast is not None:
            return fast
        view = memoryview(data)
    else:
        view = _byte_view(data)
    header, _ = _parse_header(view)
    try:
        message = _PARSERS[header.type](view[HEADER_SIZE:])
    except DecodeError:
        raise
    except _PARSE_SLIPS as exc:  # a parser's own slip still counts as malformed
        raise DecodeError(f"{header.type.name} body is invalid: {exc}") from exc
    return _new_tuple(Datagram, (header, message))


def decode_body(mtype: MessageType, body: Buffer) -> Any:
    """Parse the body of a datagram whose header (of type `mtype`) was checked apart, such as
    the decrypted plaintext of an authenticated one. Raises `DecodeError`, and nothing else, for
    any body bytes. Arrays in the result are read-only views of `body` (bytes are taken as they
    are; anything else as `decode` takes it)."""
    view = memoryview(body) if type(body) is bytes else _byte_view(body)
    parse = _PARSERS.get(mtype)
    if parse is None:
        raise DecodeError(f"message type {mtype!r} is unknown")
    try:
        return parse(view)
    except DecodeError:
        raise
    except _PARSE_SLIPS as exc:  # a parser's own slip still counts as malformed
        raise DecodeError(f"{MessageType(mtype).name} body is invalid: {exc}") from exc
