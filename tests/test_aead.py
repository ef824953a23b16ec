"""The data plane's ChaCha20-Poly1305: both backends against RFC 8439's vector and against each
other, tag checks, bounds, and the choice of backend."""

from __future__ import annotations

import importlib
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telepresence import aead
from telepresence.aead import BACKENDS, DEFAULT_BACKEND, MAX_PLAINTEXT, TAG_SIZE, cipher

# RFC 8439 §2.8.2: the AEAD_CHACHA20_POLY1305 example.
RFC_KEY = bytes(range(0x80, 0xA0))
RFC_NONCE = bytes.fromhex("070000004041424344454647")
RFC_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
RFC_CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")

NAMES = list(BACKENDS)


def test_libsodium_is_the_default_here() -> None:
    # PyNaCl is a dependency: its binding loading is what keeps the secure round trip in budget
    # (docs/benchmarks.md §5). If a PyNaCl release changes it, this fails instead of the data
    # plane silently getting slower.
    assert aead.SODIUM_UNAVAILABLE is None
    assert DEFAULT_BACKEND == "libsodium"
    assert NAMES == ["libsodium", "cryptography"]
    assert cipher(bytes(32)).backend == "libsodium"


@pytest.mark.parametrize("backend", NAMES)
def test_rfc8439_vector(backend: str) -> None:
    c = cipher(RFC_KEY, backend)
    sealed = c.seal(RFC_NONCE, RFC_AAD, RFC_PLAINTEXT)
    assert sealed == RFC_AAD + RFC_CIPHERTEXT + RFC_TAG
    assert c.open(RFC_NONCE, sealed, len(RFC_AAD)) == RFC_PLAINTEXT


@pytest.mark.parametrize("backend", NAMES)
def test_a_changed_byte_anywhere_does_not_open(backend: str) -> None:
    c = cipher(RFC_KEY, backend)
    sealed = c.seal(RFC_NONCE, RFC_AAD, RFC_PLAINTEXT)
    for i in range(len(sealed)):
        forged = bytearray(sealed)
        forged[i] ^= 0x01
        assert c.open(RFC_NONCE, bytes(forged), len(RFC_AAD)) is None, i
    assert c.open(bytes(12), sealed, len(RFC_AAD)) is None  # another nonce
    assert cipher(bytes(32), backend).open(RFC_NONCE, sealed, len(RFC_AAD)) is None  # other key
    for cut in (1, TAG_SIZE, len(sealed) - len(RFC_AAD)):
        assert c.open(RFC_NONCE, sealed[:-cut], len(RFC_AAD)) is None, cut


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    header=st.binary(min_size=0, max_size=64),
    body=st.binary(max_size=1500),
    as_type=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_backends_agree_byte_for_byte(
    key: bytes, nonce: bytes, header: bytes, body: bytes, as_type: type
) -> None:
    sodium, openssl = cipher(key, "libsodium"), cipher(key, "cryptography")
    sealed = sodium.seal(nonce, header, as_type(body))
    assert sealed == openssl.seal(nonce, header, as_type(body))
    assert len(sealed) == len(header) + len(body) + TAG_SIZE
    assert sodium.open(nonce, sealed, len(header)) == body
    assert openssl.open(nonce, sealed, len(header)) == body
    # The results own their bytes: the cipher's reused buffer is never handed out.
    opened = sodium.open(nonce, sealed, len(header))
    sodium.seal(nonce, header, bytes(len(body)) + b"x")
    assert type(sealed) is bytes and type(opened) is bytes and opened == body


@pytest.mark.parametrize("backend", NAMES)
def test_sizes_at_the_bounds(backend: str) -> None:
    c = cipher(RFC_KEY, backend)
    largest = bytes(range(256)) * (MAX_PLAINTEXT // 256)
    sealed = c.seal(RFC_NONCE, bytes(32), largest)
    assert c.open(RFC_NONCE, sealed, 32) == largest
    other = cipher(RFC_KEY, "cryptography" if backend == "libsodium" else "libsodium")
    assert other.seal(RFC_NONCE, bytes(32), largest) == sealed
    with pytest.raises(ValueError, match="longer than the 65536 bytes"):
        c.seal(RFC_NONCE, bytes(32), bytes(MAX_PLAINTEXT + 1))
    empty = c.seal(RFC_NONCE, bytes(32), b"")
    assert len(empty) == 32 + TAG_SIZE and c.open(RFC_NONCE, empty, 32) == b""


def test_bad_keys_and_backends_are_named() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        cipher(bytes(31))
    with pytest.raises(ValueError, match="32 bytes"):
        cipher(bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown AEAD backend 'nss'; available: libsodium, "):
        cipher(bytes(32), "nss")


def test_without_the_binding_the_fallback_takes_over(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.import_module

    def no_sodium(name: str, package: str | None = None) -> object:
        if name == "nacl._sodium":
            raise ImportError("No module named 'nacl._sodium'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_sodium)
    fallback = importlib.reload(aead)
    try:
        assert fallback.DEFAULT_BACKEND == "cryptography"
        assert list(fallback.BACKENDS) == ["cryptography"]
        assert "No module named 'nacl._sodium'" in (fallback.SODIUM_UNAVAILABLE or "")
        with caplog.at_level(logging.WARNING, logger="telepresence.aead"):
            c = fallback.cipher(RFC_KEY)
            fallback.cipher(RFC_KEY)
        warnings = [r for r in caplog.records if r.name == "telepresence.aead"]
        assert len(warnings) == 1, "said once"
        assert "uses cryptography's ChaCha20-Poly1305" in warnings[0].getMessage()
        assert c.seal(RFC_NONCE, RFC_AAD, RFC_PLAINTEXT) == RFC_AAD + RFC_CIPHERTEXT + RFC_TAG
        with pytest.raises(ValueError, match=r"available: cryptography \(libsodium: ImportError"):
            fallback.cipher(RFC_KEY, "libsodium")
    finally:
        monkeypatch.undo()
        importlib.reload(aead)


@settings(max_examples=200, deadline=None)
@given(
    header=st.binary(max_size=64),
    body=st.binary(max_size=2000),
    dirt=st.binary(min_size=1, max_size=1),
)
def test_sealing_in_the_buffer_is_sealing(header: bytes, body: bytes, dirt: bytes) -> None:
    for name in NAMES:
        c = cipher(RFC_KEY, name)
        c.buffer[:4096] = dirt * 4096  # a dirty buffer: only what is written counts
        c.buffer[: len(header)] = header
        c.buffer[len(header) : len(header) + len(body)] = body
        sealed = c.seal_buffer(RFC_NONCE, len(header), len(body))
        assert sealed == c.seal(RFC_NONCE, header, body), name
        assert c.open(RFC_NONCE, sealed, len(header)) == body


@pytest.mark.parametrize("backend", NAMES)
def test_seal_buffer_bounds(backend: str) -> None:
    c = cipher(RFC_KEY, backend)
    with pytest.raises(ValueError, match="at most 1024 and 65536"):
        c.seal_buffer(RFC_NONCE, 32, MAX_PLAINTEXT + 1)
    with pytest.raises(ValueError, match="at most 1024 and 65536"):
        c.seal_buffer(RFC_NONCE, -1, 10)
