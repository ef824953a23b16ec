"""Data-plane security: sealing and opening authenticated datagrams (sans-IO).

An authenticated datagram is ``header (32 bytes, in clear) | ciphertext | tag (16 bytes)``: the
header has `FLAG_AUTHENTICATED` set and a body length that counts ciphertext + tag; the body is
ChaCha20-Poly1305 (RFC 8439) with the 32 header bytes as associated data, so the header cannot
be altered either. The nonce is ``stream id (u32 LE) | sequence number (u64 LE)``: unique per key
because each (stream, seq) is sent once per direction per session, and each direction of a
session has its own key (`SessionKeys`, HKDF-SHA256 from the session secret the control plane
hands over). ``docs/protocol.md`` §12 gives the exact parameters and test vectors.

A `Sealer` (one per session and direction) encodes and encrypts; an `Opener` checks the header,
the session, decrypts and verifies, then parses the body. Neither touches a socket or a clock.

Receiver order: header -> session known -> AEAD -> sequence window -> body. Replay protection is
the caller's `SequenceWindow`, applied only to a datagram that authenticated: the sequence
number is read from a header no one could have altered, so a forgery never advances the window,
and a replayed datagram authenticates and is then caught by the window as a DUPLICATE. `open`
parses the body straight after the AEAD (then the caller applies the window); `unseal` +
`decode_body` let a caller put the window before the body parse.

Hot path: joint messages (the commands and joint states sent at the control rate) are sealed
and opened in one function each with libsodium's in-place interface (`telepresence.aead.InPlace`):
every call and lookup costs 2-4x its warm time on the cold caches between datagrams, and the
secure round trip must stay within 1.3x of a bare UDP echo (docs/benchmarks.md §5). The fused
joint layout is parsed here for sealed bodies, as ``telepresence.wire.codec`` parses it for
plain datagrams; everything else takes the general paths, and the tests check that the two
ciphers (one with these paths, one without) give the same bytes and messages. Where the C
extension is built (`telepresence.native`), those two functions run in C (`_seal_joints`,
`_open_fast`), calling libsodium directly: 1-3 µs less per seal or open in situ, with the
same results (tests/test_native.py runs both).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from robots.api import JointCommand
from telepresence.aead import cipher, sodium_function_addresses
from telepresence.exceptions import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    LocalProtocolError,
    UnknownSessionError,
)
from telepresence.native import module as _native
from telepresence.wire import (
    AUTH_TAG_SIZE,
    FLAG_AUTHENTICATED,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Datagram,
    Header,
    Role,
    decode_body,
    encode_into,
)
from telepresence.wire.codec import (
    _ENCODE_ERRORS,
    _F8,
    _FUSED_BODY_SIZE,
    _FUSED_CLASSES,
    _FUSED_SIZE,
    _JOINT_CLASSES,
    _ZERO8,
    _encode_joints_into,
    _frombuffer,
    _new_object,
    _pack_fused,
    _unpack_fused_body,
)
from telepresence.wire.header import _TYPE_OF, HEADER

__all__ = [
    "INFO_ROBOT_TO_STATION",
    "INFO_STATION_TO_ROBOT",
    "KDF_SALT",
    "KEY_SIZE",
    "NONCE_SIZE",
    "SECRET_SIZE",
    "Opener",
    "Sealer",
    "SessionKeys",
    "derive_key",
    "new_session_secret",
    "nonce",
    "open_datagram",
]

SECRET_SIZE = 32
"""Bytes of the session secret the robot generates and sends over the control plane."""
KEY_SIZE = 32
"""Bytes of a ChaCha20-Poly1305 key."""
NONCE_SIZE = 12
"""Bytes of a ChaCha20-Poly1305 nonce: stream id u32 LE, then sequence number u64 LE."""
KDF_SALT = b"telepresence data plane v1"
"""HKDF salt, ASCII, 26 bytes (a fixed protocol label)."""
INFO_STATION_TO_ROBOT = b"station->robot"
"""HKDF info prefix of the key for datagrams the station sends (then the session id, u32 LE)."""
INFO_ROBOT_TO_STATION = b"robot->station"
"""HKDF info prefix of the key for datagrams the robot sends (then the session id, u32 LE)."""

_SESSION = struct.Struct("<I")
_NONCE = struct.Struct("<IQ")
_pack_nonce = _NONCE.pack
_parse_header = Header.parse
_unpack_header = HEADER.unpack_from
_type_of = _TYPE_OF.get
_decode_body = decode_body
_encode_into = encode_into
_fused_type = _FUSED_CLASSES.get
_joint_class = _JOINT_CLASSES.get
_ndarray = np.ndarray
_new_tuple = tuple.__new__  # a Datagram without NamedTuple's Python-level __new__
_TAG = AUTH_TAG_SIZE
_MIN_SEALED = HEADER_SIZE + AUTH_TAG_SIZE
_seal_joints: Callable[..., bytes | None] | None = None
"""The C joint seal (`telepresence.native`), set at the end of the module when it is there."""

Buffer = bytes | bytearray | memoryview


# ---------------------------------------------------------------------------------------------
# Keys


def new_session_secret() -> bytes:
    """A fresh random session secret (what the robot sends the station over the control plane)."""
    return secrets.token_bytes(SECRET_SIZE)


def _check_session(session: int) -> None:
    if not isinstance(session, int) or not 0 < session < 2**32:
        raise ConfigError(f"session must be an int in 1..2**32-1, got {session!r}")


def derive_key(secret: bytes, session: int, info: bytes) -> bytes:
    """One 32-byte key: HKDF-SHA256(IKM = `secret`, salt = `KDF_SALT`, info = `info` followed by
    the session id as u32 little-endian, L = 32)."""
    if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
        size = len(secret) if isinstance(secret, bytes) else type(secret).__name__
        raise ConfigError(f"session secret must be {SECRET_SIZE} bytes, got {size}")
    _check_session(session)
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=KDF_SALT,
        info=info + _SESSION.pack(session),
    )
    return hkdf.derive(secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionKeys:
    """The two data-plane keys of one session, one per direction, so that the same (stream,
    seq) sent both ways never reuses a nonce under one key. Keys are left out of ``repr``."""

    session: int
    """The session id (u32, non-zero) the keys belong to; it is bound into both keys."""
    station_to_robot: bytes = field(repr=False)
    """Key of the datagrams the station sends (commands, heartbeats)."""
    robot_to_station: bytes = field(repr=False)
    """Key of the datagrams the robot sends (state, telemetry)."""

    def __post_init__(self) -> None:
        _check_session(self.session)
        for name in ("station_to_robot", "robot_to_station"):
            key = getattr(self, name)
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise ConfigError(f"SessionKeys.{name} must be {KEY_SIZE} bytes")

    @classmethod
    def derive(cls, secret: bytes, session: int) -> SessionKeys:
        """Both keys from the 32-byte session secret and the session id (HKDF-SHA256)."""
        return cls(
            session=session,
            station_to_robot=derive_key(secret, session, INFO_STATION_TO_ROBOT),
            robot_to_station=derive_key(secret, session, INFO_ROBOT_TO_STATION),
        )

    def sending_key(self, role: Role) -> bytes:
        """The key `role` (this end: station or robot) seals with."""
        if role == Role.STATION:
            return self.station_to_robot
        if role == Role.ROBOT:
            return self.robot_to_station
        raise ConfigError(f"role must be Role.STATION or Role.ROBOT, got {role!r}")

    def receiving_key(self, role: Role) -> bytes:
        """The key `role` (this end) opens with: its peer's sending key."""
        if role == Role.STATION:
            return self.robot_to_station
        if role == Role.ROBOT:
            return self.station_to_robot
        raise ConfigError(f"role must be Role.STATION or Role.ROBOT, got {role!r}")

    def sealer(self, role: Role) -> Sealer:
        """A `Sealer` for what `role` (this end: station or robot) sends in this session."""
        return Sealer(self.sending_key(role), self.session)

    def opener(self, role: Role) -> Opener:
        """An `Opener` for what `role` (this end) receives from its peer in this session."""
        return Opener(self.receiving_key(role), self.session)


def nonce(stream: int, seq: int) -> bytes:
    """The 12-byte nonce of the datagram (`stream`, `seq`): stream u32 LE, seq u64 LE."""
    return _pack_nonce(stream, seq)


# ---------------------------------------------------------------------------------------------
# Sealing


class Sealer:
    """Seals one session's datagrams in one direction (holds the key's cipher, built once).

    A nonce must never repeat under a key, so a sealer refuses a sequence number that is not
    higher than the last one it sealed on the same stream (`LocalProtocolError`): restarting
    sequence numbers in a session needs new keys (a new session secret).
    """

    __slots__ = ("_body", "_buffer", "_cipher", "_in_place", "_key", "_last", "session")

    def __init__(self, key: bytes, session: int, *, backend: str | None = None) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ConfigError(f"key must be {KEY_SIZE} bytes")
        _check_session(session)
        self.session = session
        """The session id every datagram sealed here carries."""
        self._cipher = c = cipher(key, backend)  # backend: `telepresence.aead.BACKENDS`
        self._buffer = c.buffer
        self._in_place = c.in_place
        self._body = None if c.in_place is None else c.in_place.out + HEADER_SIZE
        self._key = None if c.in_place is None or _seal_joints is None else key  # C seals
        self._last: dict[int, int] = {}

    def seal(self, message: object, *, stream: int, seq: int, send_time_ns: int) -> bytes:
        """Encode `message` as an authenticated datagram of this session: the header (flag
        AUTHENTICATED, body length = body + 16) in clear, then the encrypted body and the tag.

        Raises `LocalProtocolError` for what `encode` cannot carry, and for a `seq` not higher
        than the last one sealed on `stream`.
        """
        kind = _fused_type(type(message))
        key = self._key
        if kind is not None and key is not None:
            # The hot path in C (`telepresence.native`): what the branch below does, in one call.
            try:
                last = self._last.get(stream, 0)
            except TypeError:  # an unhashable stream: the general path says what is wrong
                last = None
            if last is not None and _seal_joints is not None:
                out = _seal_joints(
                    message, kind, stream, self.session, seq, last, send_time_ns, key
                )
                if out is not None:
                    self._last[stream] = seq
                    return out
        raw = self._in_place
        if kind is not None and raw is not None and key is None:
            # The hot path (module docstring): a joint message of the fused layout, float64
            # positions only, sealed in place. Anything else, or anything the layout cannot
            # carry, takes the general path below, which encodes or refuses it as `encode` does.
            positions = message.positions  # type: ignore[attr-defined]
            if (
                message.velocities is None  # type: ignore[attr-defined]
                and message.efforts is None  # type: ignore[attr-defined]
                and type(positions) is _ndarray
                and positions.dtype is _F8
                and positions.ndim == 1
            ):
                n = positions.shape[0]
                body = _FUSED_BODY_SIZE + 8 * n
                g = message.gripper  # type: ignore[attr-defined]
                buf = self._buffer
                try:
                    if seq <= self._last.get(stream, 0):  # (also a TypeError for a non-number)
                        raise ValueError("not a fresh sequence number")  # refused below
                    _pack_fused(
                        buf, 0, MAGIC, VERSION, kind, FLAG_AUTHENTICATED, stream, self.session,
                        body + _TAG, 0, seq, send_time_ns, 0 if g is None else 4, 0, 0,
                        0.0 if g is None else g, n, 8, 0,
                    )  # fmt: skip
                except _ENCODE_ERRORS:
                    pass  # not a fresh seq, or out of range: the general path says what is wrong
                else:
                    buf[_FUSED_SIZE : HEADER_SIZE + body] = positions.tobytes()
                    self._last[stream] = seq
                    at = self._body  # the body, encrypted where it lies; the tag after it
                    raw.encrypt(at, raw.null, at, body, raw.out, HEADER_SIZE, raw.null,
                                _pack_nonce(stream, seq), raw.key)  # fmt: skip
                    sealed: bytes = buf[: HEADER_SIZE + body + _TAG]
                    return sealed
        cipher = self._cipher
        size = None if kind is None else _encode_joints_into(
            cipher.buffer, message, kind, stream, self.session, seq, send_time_ns,
            FLAG_AUTHENTICATED, _TAG,
        )  # fmt: skip
        if size is None:
            size = _encode_into(
                cipher.buffer, message, stream=stream, session=self.session, seq=seq,
                send_time_ns=send_time_ns, flags=FLAG_AUTHENTICATED, trailer=_TAG,
            )  # fmt: skip
        last = self._last.get(stream, 0)
        if seq <= last:
            raise LocalProtocolError(
                f"sequence number {seq} on stream {stream} is not above the last sealed ({last}): "
                "its nonce would repeat (restarting sequence numbers needs a new session secret)"
            )
        self._last[stream] = seq
        return cipher.seal_buffer(_pack_nonce(stream, seq), HEADER_SIZE, size - HEADER_SIZE)


# ---------------------------------------------------------------------------------------------
# Opening


def _as_bytes(data: Any) -> bytes:
    """`data` as bytes (anything but bytes is copied once; the datagram is small)."""
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not {type(data).__name__}") from None


def _too_short(length: int) -> DecodeError:
    return DecodeError(f"authenticated body length {length} is shorter than the {_TAG}-byte tag")


def _forged(header: Header) -> AuthenticationError:
    return AuthenticationError(
        f"{header.type.name} on stream {header.stream} seq {header.seq}: "
        "the tag does not verify (forged, corrupted, or sealed with another key)"
    )


class Opener:
    """Opens one session's datagrams from the peer (holds the peer's key's cipher, built once).

    Stateless: replay protection is the caller's `SequenceWindow`, applied only to a datagram
    that opened (so only authenticated sequence numbers ever move it).
    """

    __slots__ = ("_buffer", "_in_place", "_key", "_open", "session")

    def __init__(self, key: bytes, session: int, *, backend: str | None = None) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ConfigError(f"key must be {KEY_SIZE} bytes")
        _check_session(session)
        self.session = session
        """The session whose datagrams this opener takes."""
        c = cipher(key, backend)  # backend: `telepresence.aead.BACKENDS`
        self._open, self._buffer, self._in_place = c.open, c.buffer, c.in_place
        self._key = None if c.in_place is None else key  # read by the C open (libsodium only)

    def unseal(self, data: Buffer) -> tuple[Header, bytes]:
        """Check the header and the session, verify and decrypt: the header and the plaintext
        body, not parsed yet (`decode_body` parses it).

        `data` is any bytes-like object (a `TypeError` if it is not one). Raises `DecodeError`
        for a malformed header or a body shorter than the tag, `AuthenticationError` for a plain
        datagram or a tag that does not verify, `UnknownSessionError` for another session's
        datagram; nothing else, whatever the bytes.
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        header, length = _parse_header(data, FLAG_AUTHENTICATED)
        return header, self._unseal(header, length, data)

    def _unseal(self, header: Header, length: int, data: bytes) -> bytes:
        """The rest of `unseal`, once the header of `data` has been parsed and checked."""
        if length < _TAG:
            raise _too_short(length)
        if header.session != self.session:
            raise UnknownSessionError(
                f"session {header.session:08x} is not this opener's ({self.session:08x})",
                header.session,
            )
        plain = self._open(_pack_nonce(header.stream, header.seq), data, HEADER_SIZE)
        if plain is None:
            raise _forged(header)
        return plain

    def open(self, data: Buffer) -> Datagram:
        """`unseal`, then parse the body: the datagram, as `decode` gives a plain one.

        Raises what `unseal` raises, and `DecodeError` for a malformed body (which only a key
        holder can have sent). Arrays in the message are read-only views of the decrypted
        plaintext (a fresh bytes object), never of `data`.
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        opened = _open_fast(data, self, None)
        if opened is not None:
            return opened
        header, plain = self.unseal(data)
        return _new_tuple(Datagram, (header, _decode_body(header.type, plain)))


def _open_well_formed(
    data: bytes, opener: Opener | None, openers: Mapping[int, Opener] | None
) -> Datagram | None:
    """Open a datagram whose header is well formed and whose session has an opener (`opener`
    if its session is the datagram's, else the one in `openers`), in one pass; None for
    anything else, which the callers hand to the general path (`Header.parse`,
    `Opener.unseal`) that words the error. The checks are `Header.parse`'s."""
    size = len(data)
    if size < _MIN_SEALED:
        return None
    magic, version, mtype, flags, stream, session, length, reserved, seq, sent = _unpack_header(
        data
    )
    kind = _type_of(mtype)
    if (
        kind is None or magic != MAGIC or version != VERSION or flags != FLAG_AUTHENTICATED
        or reserved or length + HEADER_SIZE != size
    ):  # fmt: skip
        return None
    if openers is not None:
        opener = openers.get(session)
    if opener is None or session != opener.session:
        return None
    header = _new_tuple(Header, (kind, stream, session, seq, sent, flags))
    raw = opener._in_place
    if raw is None:
        plain = opener._open(_pack_nonce(stream, seq), data, HEADER_SIZE)
        if plain is None:
            raise _forged(header)
    else:  # libsodium, called here: one frame less on the hot path
        if raw.decrypt(raw.out, raw.null, raw.null, data[HEADER_SIZE:], length, data,
                       HEADER_SIZE, _pack_nonce(stream, seq), raw.key):  # fmt: skip
            raise _forged(header)
        plain = opener._buffer[: length - _TAG]
    cls = _joint_class(mtype)
    if cls is not None and len(plain) >= _FUSED_BODY_SIZE:
        # The fused joint layout, parsed here (`decode_body` parses every other body, and any
        # joint body this does not take, with the same checks).
        present, res8, res16, gripper, n, size, res_a = _unpack_fused_body(plain)
        if (
            not (res8 or res16 or res_a) and size == 8
            and _FUSED_BODY_SIZE + 8 * n == len(plain)
            and (present == 4 or (present == 0 and plain[4:12] == _ZERO8))
        ):  # fmt: skip
            if cls is JointCommand:  # every field set, without the dataclass __init__
                message = _new_object(cls)
                message.positions = _frombuffer(plain, _F8, n, _FUSED_BODY_SIZE)
                message.velocities = message.efforts = None
                message.gripper = gripper if present else None
                message.ref = 0
            else:
                message = cls(
                    positions=_frombuffer(plain, _F8, n, _FUSED_BODY_SIZE),
                    gripper=gripper if present else None,
                )
            return _new_tuple(Datagram, (header, message))
    return _new_tuple(Datagram, (header, _decode_body(kind, plain)))


def open_datagram(data: Buffer, openers: Mapping[int, Opener]) -> Datagram:
    """Open `data` with the opener of the session its header names (`openers`: session id ->
    `Opener`, e.g. every session a robot holds keys for). Raises as `Opener.open`, with
    `UnknownSessionError` when `openers` has no opener for the session."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    opened = _open_fast(data, None, openers)
    if opened is not None:
        return opened
    header, length = _parse_header(data, FLAG_AUTHENTICATED)
    opener = openers.get(header.session)
    if opener is None:
        if length < _TAG:
            raise _too_short(length)
        raise UnknownSessionError(f"session {header.session:08x} has no key", header.session)
    plain = opener._unseal(header, length, data)
    return _new_tuple(Datagram, (header, decode_body(header.type, plain)))


# The one-pass open and the joint seal in C when the extension and libsodium are both there
# (``telepresence.native``): the same results and the same None cases as the Python above.
_open_fast: Callable[[bytes, Opener | None, Mapping[int, Opener] | None], Datagram | None] = (
    _open_well_formed
)
_SODIUM = sodium_function_addresses()
if _native is not None and _SODIUM is not None:
    _native.configure_aead(*_SODIUM, Opener, _forged, decode_body, _open_well_formed)
    _open_fast, _seal_joints = _native.open_sealed, _native.seal_joints
