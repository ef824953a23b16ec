"""Encode messages to datagrams and decode datagrams to messages (sans-IO: bytes in, bytes out)."""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from telepresence.exceptions import DecodeError, LocalProtocolError
from telepresence.wire.header import HEADER_SIZE, MAX_BODY, Header
from telepresence.wire.messages import BODY_CODECS, Buffer, codec_for

__all__ = ["Datagram", "decode", "encode", "encode_into"]


class Datagram(NamedTuple):
    """A decoded datagram."""

    header: Header
    message: Any


def encoded_size(message: object) -> int:
    """Bytes that `encode` will produce for `message`."""
    return HEADER_SIZE + codec_for(message).size(message)


def encode_into(
    buf: bytearray, message: object, *, stream: int, session: int, seq: int, send_time_ns: int
) -> int:
    """Write one datagram at the start of `buf` (large enough) and return its length."""
    codec = codec_for(message)
    body = codec.size(message)
    if body > MAX_BODY:
        raise LocalProtocolError(f"body length is invalid: {body} > {MAX_BODY}")
    try:
        Header(codec.TYPE, stream, session, seq, send_time_ns).pack_into(buf, body)
        codec.pack_into(message, buf, HEADER_SIZE)
    except (struct.error, OverflowError, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc
    return HEADER_SIZE + body


def encode(message: object, *, stream: int, session: int, seq: int, send_time_ns: int) -> bytearray:
    """Encode one message as a datagram."""
    buf = bytearray(encoded_size(message))
    encode_into(buf, message, stream=stream, session=session, seq=seq, send_time_ns=send_time_ns)
    return buf


def decode(data: Buffer) -> Datagram:
    """Decode one datagram. Any malformed input raises `DecodeError`, and nothing else.

    Array fields of the result are read-only views of `data`: no payload is copied.
    """
    header, _ = Header.parse(data)
    body = memoryview(data)[HEADER_SIZE:]
    try:
        message = BODY_CODECS[header.type].parse(body)
    except DecodeError:
        raise
    except (struct.error, ValueError) as exc:  # a parser's own slip still counts as malformed
        raise DecodeError(f"{header.type.name} body is invalid: {exc}") from exc
    return Datagram(header, message)
