"""ChaCha20-Poly1305 for the data plane: the IETF construction of RFC 8439 (32-byte key, 12-byte
nonce, 16-byte tag after the ciphertext), with a datagram's header as the associated data.

Two implementations of the same function, byte for byte (tests/test_aead.py checks one against
the other and against RFC 8439's vector):

- ``libsodium``: ``crypto_aead_chacha20poly1305_ietf_encrypt``/``_decrypt`` of the libsodium
  that PyNaCl ships compiled in, called through PyNaCl's cffi module with the output buffer
  allocated once per key. It is the default when it loads.
- ``cryptography``: ``cryptography``'s ``ChaCha20Poly1305`` (OpenSSL). The fallback.

In a warm loop both cost about 1 µs per call or less (libsodium 0.65-0.77 µs, OpenSSL
1.1-1.3 µs for a 64-byte body). Between datagrams the picture changes. A robot or a station
sleeps in the kernel between two datagrams, so each datagram meets cold caches. In the
round-trip benchmark (docs/benchmarks.md §5), the four calls of a round trip, with the header
handling around them, cost 17 µs with OpenSSL and 9-10 µs with libsodium. OpenSSL reaches the
cipher through a provider context that is copied, set up and freed on every call; libsodium's is
one C function. PyNaCl's public wrappers (``nacl.bindings``) check arguments and allocate in
Python: 3 µs warm, slower than OpenSSL. So the binding is used directly. It is not part of
PyNaCl's documented API, so if it is missing or changes shape the ``cryptography`` cipher takes
over, with a warning when the first cipher is made. Same bytes, only slower.

A cipher is used from one thread at a time: its output buffer is reused (`Sealer` and `Opener`
hold one each, and the event loop that owns them is their only user).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "Cipher",
    "InPlace",
    "cipher",
]

log = logging.getLogger(__name__)

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_PLAINTEXT = 65536
"""Largest plaintext a cipher seals or opens (a UDP datagram carries at most 65507 bytes)."""
MAX_HEADER = 1024
"""Largest associated data `Cipher.seal` takes (a datagram header is 32 bytes)."""


class InPlace(NamedTuple):
    """libsodium's two functions and the cipher's buffer, for a caller that makes one C call per
    datagram (`telepresence.security` on the data plane's hot path). There are no checks here:
    the caller keeps every length within the buffer and never uses the cipher from two threads.

    Seal the header and body the buffer holds, in place (the tag follows the body)::

        encrypt(body_ptr, null, body_ptr, body_size, out, header_size, null, nonce, key)
        # body_ptr = out + header_size; returns 0; the datagram is buffer[:header_size +
        # body_size + 16]

    Open ``data`` (header of ``header_size`` bytes, then ciphertext and tag) into the buffer::

        decrypt(out, null, null, data[header_size:], len(data) - header_size, data,
                header_size, nonce, key)  # != 0: the tag does not verify
        # the plaintext is buffer[:len(data) - header_size - 16]
    """

    encrypt: Any
    """``crypto_aead_chacha20poly1305_ietf_encrypt``"""
    decrypt: Any
    """``crypto_aead_chacha20poly1305_ietf_decrypt``"""
    out: Any
    """A C pointer to the start of `Cipher.buffer`."""
    null: Any
    """The C NULL pointer."""
    key: bytes


class Cipher(Protocol):
    """One key's ChaCha20-Poly1305, sealing and opening whole datagrams."""

    backend: str
    buffer: Any
    """The cipher's own writable buffer (`MAX_HEADER` + `MAX_PLAINTEXT` + `TAG_SIZE` bytes, slice
    assignment of bytes and ``struct.pack_into`` work on it): a datagram encoded here, header then
    plaintext body, is sealed in place by `seal_buffer`."""
    in_place: InPlace | None
    """libsodium's direct interface, or None (the ``cryptography`` backend has none)."""

    def seal_buffer(self, nonce: bytes, header_size: int, body_size: int) -> bytes:
        """`seal` of the header and body that `buffer` holds: ``header | ciphertext | tag``."""
        ...

    def seal(self, nonce: bytes, header: bytes, body: bytes | bytearray | memoryview) -> bytes:
        """``header | ciphertext of body | tag``, the header being the associated data."""
        ...

    def open(self, nonce: bytes, data: bytes, split: int) -> bytes | None:
        """The plaintext of ``data[split:]`` (ciphertext | tag) with ``data[:split]`` as the
        associated data; None when the tag does not verify or the body is shorter than a tag."""
        ...


def _too_long(n: int) -> ValueError:
    return ValueError(f"{n}-byte plaintext is longer than the {MAX_PLAINTEXT} bytes a cipher takes")


def _check_sizes(header_size: int, body_size: int) -> None:
    if not 0 <= header_size <= MAX_HEADER or not 0 <= body_size <= MAX_PLAINTEXT:
        raise ValueError(
            f"{header_size}-byte header and {body_size}-byte body: at most {MAX_HEADER} and "
            f"{MAX_PLAINTEXT}"
        )


class _CryptographyCipher:
    __slots__ = ("_decrypt", "_encrypt", "buffer")
    backend = "cryptography"
    in_place: InPlace | None = None

    def __init__(self, key: bytes) -> None:
        aead = ChaCha20Poly1305(key)
        self._encrypt, self._decrypt = aead.encrypt, aead.decrypt
        self.buffer = bytearray(MAX_HEADER + MAX_PLAINTEXT + TAG_SIZE)

    def seal_buffer(self, nonce: bytes, header_size: int, body_size: int) -> bytes:
        _check_sizes(header_size, body_size)
        view = memoryview(self.buffer)
        return self.seal(nonce, bytes(view[:header_size]),
                         view[header_size : header_size + body_size])  # fmt: skip

    def seal(self, nonce: bytes, header: bytes, body: bytes | bytearray | memoryview) -> bytes:
        if len(body) > MAX_PLAINTEXT:
            raise _too_long(len(body))
        return header + self._encrypt(nonce, body, header)

    def open(self, nonce: bytes, data: bytes, split: int) -> bytes | None:
        try:
            plain: bytes = self._decrypt(nonce, data[split:], data[:split])
        except InvalidTag:
            return None
        return plain


class _SodiumCipher:
    __slots__ = ("_key", "_out", "buffer", "in_place")
    backend = "libsodium"

    def __init__(self, key: bytes) -> None:
        self._key = key
        # header + plaintext + tag of the longest datagram; opened plaintext is written at 0.
        self._out = _ffi.new("unsigned char[]", MAX_HEADER + MAX_PLAINTEXT + TAG_SIZE)
        self.buffer = _ffi.buffer(self._out)
        self.in_place = InPlace(_encrypt, _decrypt, self._out, _NULL, key)

    def seal_buffer(self, nonce: bytes, header_size: int, body_size: int) -> bytes:
        if not (0 <= header_size <= MAX_HEADER and 0 <= body_size <= MAX_PLAINTEXT):
            _check_sizes(header_size, body_size)
        out = self._out
        body = out + header_size
        # In place: libsodium's ChaCha20 XORs block by block, and the tag follows the body.
        _encrypt(body, _NULL, body, body_size, out, header_size, _NULL, nonce, self._key)
        sealed: bytes = self.buffer[: header_size + body_size + TAG_SIZE]
        return sealed

    def seal(self, nonce: bytes, header: bytes, body: bytes | bytearray | memoryview) -> bytes:
        n, h = len(body), len(header)
        if n > MAX_PLAINTEXT or h > MAX_HEADER:
            raise (
                _too_long(n) if n > MAX_PLAINTEXT else ValueError(f"{h}-byte header > {MAX_HEADER}")
            )
        out = self._out
        _memmove(out, header, h)
        # The body is passed as a Python buffer (a bytearray is not a C pointer to cffi).
        _encrypt(out + h, _NULL, _from_buffer(body) if type(body) is not bytes else body, n,
                 header, h, _NULL, nonce, self._key)  # fmt: skip
        sealed: bytes = self.buffer[: h + n + TAG_SIZE]
        return sealed

    def open(self, nonce: bytes, data: bytes, split: int) -> bytes | None:
        n = len(data) - split - TAG_SIZE
        if n < 0:
            return None
        if n > MAX_PLAINTEXT:
            raise _too_long(n)
        # The associated data is the start of `data`: passed as it is, with its length.
        if _decrypt(self._out, _NULL, _NULL, data[split:], n + TAG_SIZE, data, split, nonce,
                    self._key) != 0:  # fmt: skip
            return None
        plain: bytes = self.buffer[:n]
        return plain


def _load_sodium() -> tuple[Any, Any] | str:
    """PyNaCl's cffi module (ffi, lib), or why it cannot be used."""
    try:
        module = importlib.import_module("nacl._sodium")
        ffi, lib = module.ffi, module.lib
        for name in ("crypto_aead_chacha20poly1305_ietf_encrypt",
                     "crypto_aead_chacha20poly1305_ietf_decrypt", "sodium_init"):  # fmt: skip
            getattr(lib, name)
        if lib.sodium_init() < 0:
            return "sodium_init() failed"
        if lib.crypto_aead_chacha20poly1305_ietf_abytes() != TAG_SIZE:
            return "unexpected tag size"
    except Exception as exc:  # an ImportError, or a binding of another shape
        return f"{type(exc).__name__}: {exc}"
    return ffi, lib


_sodium = _load_sodium()
BACKENDS: dict[str, Callable[[bytes], Cipher]] = {"cryptography": _CryptographyCipher}
"""The ChaCha20-Poly1305 implementations that loaded, by name."""
if isinstance(_sodium, tuple):
    _ffi, _lib = _sodium
    _NULL = _ffi.NULL
    _memmove, _from_buffer = _ffi.memmove, _ffi.from_buffer
    _encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    BACKENDS = {"libsodium": _SodiumCipher, **BACKENDS}
    SODIUM_UNAVAILABLE: str | None = None
else:
    SODIUM_UNAVAILABLE = _sodium
_warned = False
DEFAULT_BACKEND = next(iter(BACKENDS))
"""``libsodium`` when it loaded, else ``cryptography``."""


def sodium_function_addresses() -> tuple[int, int] | None:
    """The C addresses of libsodium's ``crypto_aead_chacha20poly1305_ietf_encrypt`` and
    ``_decrypt`` (for ``telepresence._native``, which calls them itself), or None when the
    libsodium backend did not load."""
    if SODIUM_UNAVAILABLE:
        return None
    encrypt, decrypt = (
        int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, f"crypto_aead_chacha20poly1305_ietf_{op}")))
        for op in ("encrypt", "decrypt")
    )
    return encrypt, decrypt


def cipher(key: bytes, backend: str | None = None) -> Cipher:
    """A ChaCha20-Poly1305 cipher for `key` (32 bytes), from `backend` (default: `DEFAULT_BACKEND`).

    Raises `ValueError` for a key of the wrong size or a backend that is not in `BACKENDS`.
    """
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"a ChaCha20-Poly1305 key is {KEY_SIZE} bytes")
    global _warned
    if SODIUM_UNAVAILABLE and not _warned:  # said once, when the first session is keyed
        _warned = True
        log.warning(
            "libsodium through PyNaCl is unavailable (%s): the data plane uses cryptography's "
            "ChaCha20-Poly1305 (same bytes, ~10 µs more per secure round trip)",
            SODIUM_UNAVAILABLE,
        )
    name = backend or DEFAULT_BACKEND
    try:
        factory = BACKENDS[name]
    except KeyError:
        why = f" (libsodium: {SODIUM_UNAVAILABLE})" if SODIUM_UNAVAILABLE else ""
        raise ValueError(
            f"unknown AEAD backend {name!r}; available: {', '.join(BACKENDS)}{why}"
        ) from None
    return factory(key)
