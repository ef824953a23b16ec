"""Encode messages to datagrams and decode datagrams to messages (sans-IO: bytes in, bytes out).

Both directions are on the hot path of every control tick, so the per-message work is looked
up once at import (`_ENCODERS`, `_PARSERS`) rather than per call.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from telepresence.exceptions import DecodeError, LocalProtocolError
from telepresence.wire.header import HEADER, HEADER_SIZE, MAGIC, MAX_BODY, VERSION, Header
from telepresence.wire.messages import BODY_CODECS, Buffer

__all__ = ["Datagram", "decode", "encode", "encode_into", "encoded_size"]


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
) -> None:
    mtype, _, pack_body = encoder
    try:
        _pack_header(buf, 0, MAGIC, VERSION, mtype, 0, stream, session, body, 0, seq, send_time_ns)
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
    buf: bytearray | memoryview,
    message: object,
    *,
    stream: int,
    session: int,
    seq: int,
    send_time_ns: int,
) -> int:
    """Write one datagram at the start of `buf` and return its length.

    `buf` is a bytearray or a writable one-byte-per-item memoryview; every byte of the datagram
    is written, so it may be reused dirty. Raises `LocalProtocolError` if `buf` is too small or
    the message or a header field cannot be encoded.
    """
    encoder = _lookup(message)
    body = _body_size(message, encoder[1])
    total = HEADER_SIZE + body
    if len(buf) < total:
        raise LocalProtocolError(f"buffer is too small: {len(buf)} < {total} bytes")
    _write(buf, message, encoder, body, stream, session, seq, send_time_ns)
    return total


def encode(message: object, *, stream: int, session: int, seq: int, send_time_ns: int) -> bytearray:
    """Encode one message as a datagram. Raises `LocalProtocolError` for what the wire cannot
    carry (an unknown message class, an out-of-range field, a malformed array)."""
    encoder = _lookup(message)
    body = _body_size(message, encoder[1])
    buf = bytearray(HEADER_SIZE + body)
    _write(buf, message, encoder, body, stream, session, seq, send_time_ns)
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


def decode(data: Buffer) -> Datagram:
    """Decode one datagram. Any malformed input raises `DecodeError`, and nothing else.

    `data` is any bytes-like object (a `TypeError` if it is not one). Array fields of the result
    are read-only views of `data`: no payload is copied, so copy them before reusing a receive
    buffer (`data` stays locked against resizing while they live).
    """
    # bytes (what recvfrom gives) are already read-only and flat; anything else is normalised
    view = memoryview(data) if type(data) is bytes else _byte_view(data)
    header, _ = _parse_header(view)
    try:
        message = _PARSERS[header.type](view[HEADER_SIZE:])
    except DecodeError:
        raise
    except _PARSE_SLIPS as exc:  # a parser's own slip still counts as malformed
        raise DecodeError(f"{header.type.name} body is invalid: {exc}") from exc
    return _new_tuple(Datagram, (header, message))
