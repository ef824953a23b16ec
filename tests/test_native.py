"""The C hot path (`telepresence._native`) against the Python it stands in for.

The contract: through the public functions (`encode`, `decode`, `Sealer.seal`, `Opener.open`,
`open_datagram`), the package gives the same bytes, the same messages and the same errors with
the extension as without it, for any input; and the C code leaks nothing, on any path.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from helpers import mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_security import fused_bodies
from test_security import test_joint_messages_take_the_one_frame_paths as one_frame_paths
from test_wire import MESSAGES

import telepresence.security as security
from robots.api import JointCommand, JointState
from telepresence import native
from telepresence.exceptions import AuthenticationError
from telepresence.security import Opener, Sealer, SessionKeys, nonce, open_datagram
from telepresence.streams import Stream
from telepresence.wire import (
    AUTH_TAG_SIZE,
    FLAG_AUTHENTICATED,
    VERSION,
    Datagram,
    MessageType,
    codec,
    decode,
    encode,
)

pytestmark = pytest.mark.skipif(
    native.module is None and bool(native.UNAVAILABLE and "is set" in native.UNAVAILABLE),
    reason=f"the C hot path is switched off: {native.UNAVAILABLE}",
)

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = bytes(range(32))
SESSION = 0x1A2B3C4D
KEYS = SessionKeys.derive(SECRET, SESSION)
KEY = KEYS.station_to_robot


def python_only(run: Callable[[], Any]) -> Any:
    """`run()` with the Python hot paths, as on a machine without the extension."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_decode_joints", codec._decode_joints_py)
        mp.setattr(codec, "_encode_joints", codec._encode_joints_fast)
        mp.setattr(security, "_open_fast", security._open_well_formed)
        mp.setattr(security, "_seal_joints", None)
        return run()


def canon(value: Any) -> Any:
    """A comparable form of a result: bytes, datagrams (arrays by dtype and bytes, floats by
    bits, the classes by name) and None."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return (type(value).__name__, bytes(value))
    if isinstance(value, Datagram):
        header, message = value
        fields: list[Any] = [type(message).__name__]
        for name in ("positions", "velocities", "efforts", "gripper", "ref"):
            v = getattr(message, name, "absent")
            if isinstance(v, np.ndarray):
                v = (v.dtype.str, v.shape, v.tobytes(), v.flags.writeable)
            elif isinstance(v, float):
                v = struct.pack("<d", v)
            fields.append(v)
        return tuple(header), type(header.type).__name__, tuple(fields)
    return repr(value)


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", canon(run())
    except Exception as exc:  # the type and the words are part of the contract
        return type(exc).__name__, str(exc)


def both(run: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    return outcome(run), python_only(lambda: outcome(run))


def test_the_extension_is_built_and_takes_the_hot_path_here() -> None:
    # The package works without it (a machine with no C compiler), but this one has gcc: a
    # build that silently failed would cost every secure round trip ~10 µs.
    assert native.module is not None, f"telepresence._native: {native.UNAVAILABLE}"
    assert native.IMPLEMENTATION == "c"
    assert codec._decode_joints is native.module.decode_joints
    assert codec._encode_joints is native.module.encode_joints
    assert security._open_fast is native.module.open_sealed
    assert security._seal_joints is native.module.seal_joints
    assert Sealer(KEY, SESSION)._key == KEY
    assert Sealer(KEY, SESSION, backend="cryptography")._key is None  # OpenSSL: Python paths


def test_the_c_functions_take_the_shape_they_are_for() -> None:
    # None from C would be correct (the Python paths follow) but slow: the common messages must
    # be handled in C itself.
    c = native.module
    assert c is not None
    command = JointCommand(positions=np.linspace(-1, 1, 6), gripper=0.5)
    state = JointState(positions=np.zeros(7))
    for message, mtype in ((command, 0x10), (state, 0x20)):
        plain = c.encode_joints(message, mtype, Stream.COMMAND, SESSION, 5, -3)
        assert type(plain) is bytearray
        assert canon(c.decode_joints(bytes(plain))) == canon(codec._decode_joints_py(bytes(plain)))
        sealed = c.seal_joints(message, mtype, 1, SESSION, 5, 4, 7, KEY)
        assert type(sealed) is bytes
        opener = KEYS.opener(security.Role.ROBOT)
        opened = c.open_sealed(sealed, None, {SESSION: opener})
        assert canon(opened) == canon(security._open_well_formed(sealed, None, {SESSION: opener}))
    assert c.seal_joints(command, 0x10, 1, SESSION, 5, 5, 7, KEY) is None  # seq not above last


def test_without_c_joint_messages_take_the_python_fast_paths(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # On a machine without the extension the Python one-frame paths carry the control stream:
    # the same test as with C, the general paths disabled.
    python_only(lambda: one_frame_paths(monkeypatch))


# ---------------------------------------------------------------------------------------------
# Plain datagrams

ODD_POSITIONS = [
    np.linspace(-1, 1, 6),
    np.zeros(0),
    np.linspace(0, 1, 12)[::2],  # not contiguous
    np.zeros(6, np.float32),
    np.zeros(6, ">f8"),
    np.zeros((2, 3)),
    np.zeros(8189),  # the largest body a plain datagram carries: 16 + 8 * 8189 = 65528
    np.zeros(8190),  # one joint too many
    np.array([math.nan, -0.0, math.inf, 5e-324]),
]
ODD_GRIPPERS = [None, 0.5, -0.0, math.nan, 1, True, np.float64(0.25), np.float32(0.5), "open"]
EDGE_INTS = st.sampled_from(
    [0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1,
     -(2**63), -(2**63) - 1]
)  # fmt: skip
HEADER_VALUES = EDGE_INTS | st.sampled_from([Stream.COMMAND, True, np.int64(3), 1.0, "1"])


@st.composite
def odd_joint_messages(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from([JointCommand, JointState]))
    message = cls(
        positions=draw(st.sampled_from(ODD_POSITIONS)),
        gripper=draw(st.sampled_from(ODD_GRIPPERS)),
    )
    if draw(st.integers(0, 5)) == 0:
        message.velocities = np.zeros(len(message.positions))
    return message


JOINT_MESSAGES = (
    MESSAGES[MessageType.JOINT_COMMAND] | MESSAGES[MessageType.JOINT_STATE] | odd_joint_messages()
)


@FUZZ
@given(message=JOINT_MESSAGES, stream=HEADER_VALUES, session=HEADER_VALUES,
       seq=HEADER_VALUES, sent=HEADER_VALUES)  # fmt: skip
def test_encode_is_the_same_with_and_without_c(
    message: Any, stream: Any, session: Any, seq: Any, sent: Any
) -> None:
    c, py = both(lambda: encode(message, stream=stream, session=session, seq=seq,
                                send_time_ns=sent))  # fmt: skip
    assert c == py
    if c[0] == "ok":  # and what was encoded decodes alike
        data = c[1][1]
        c, py = both(lambda: decode(data))
        assert c == py


def _header(mtype: int, flags: int, body: int) -> bytes:
    return struct.pack("<2sBBHHIHHQq", b"TP", VERSION, mtype, flags, 1, SESSION, body, 0, 3, 4)


@st.composite
def plain_datagrams(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # bodies in or near the fused layout
        mtype, body = draw(fused_bodies())
        return _header(mtype, 0, len(body)) + body
    message = draw(JOINT_MESSAGES)
    try:
        data = bytearray(encode(message, stream=1, session=SESSION, seq=2, send_time_ns=3))
    except Exception:
        data = bytearray(draw(st.binary(max_size=120)))
    return mutate(draw, data) if draw(st.booleans()) else bytes(data)


@FUZZ
@given(data=plain_datagrams())
def test_decode_is_the_same_with_and_without_c(data: bytes) -> None:
    c, py = both(lambda: decode(data))
    assert c == py


# ---------------------------------------------------------------------------------------------
# Sealed datagrams


@FUZZ
@given(message=JOINT_MESSAGES, stream=HEADER_VALUES, seq=HEADER_VALUES, sent=HEADER_VALUES,
       last=st.sampled_from([None, 0, 1, 2**64 - 1]))  # fmt: skip
def test_seal_is_the_same_with_and_without_c(
    message: Any, stream: Any, seq: Any, sent: Any, last: int | None
) -> None:
    def seal() -> Any:
        sealer = Sealer(KEY, SESSION)
        if last is not None:
            sealer._last[1] = last
        return sealer.seal(message, stream=stream, seq=seq, send_time_ns=sent)

    c, py = both(seal)
    assert c == py


def _sealed(body: bytes, mtype: int) -> bytes:
    header = _header(mtype, FLAG_AUTHENTICATED, len(body) + AUTH_TAG_SIZE)
    return header + ChaCha20Poly1305(KEY).encrypt(nonce(1, 3), body, header)


@st.composite
def sealed_datagrams(draw: st.DrawFn) -> bytes:
    """Every message type sealed, and then mutated half the time."""
    mtype = draw(st.sampled_from(list(MessageType)))
    message = draw(MESSAGES[mtype])
    sealer = Sealer(KEY, SESSION, backend="cryptography")  # the general path's bytes
    try:
        data = sealer.seal(message, stream=1, seq=3, send_time_ns=4)
    except Exception:
        data = _sealed(draw(st.binary(max_size=64)), int(mtype))
    return mutate(draw, bytearray(data)) if draw(st.booleans()) else data


OPENERS: dict[str, Callable[[], Any]] = {
    "opener": lambda: Opener(KEY, SESSION),
    "openssl opener": lambda: Opener(KEY, SESSION, backend="cryptography"),
    "dict": lambda: {SESSION: Opener(KEY, SESSION)},
    "mapping": lambda: MappingProxyType({SESSION: Opener(KEY, SESSION)}),
    "no key": lambda: {SESSION + 1: Opener(KEY, SESSION + 1)},
    "wrong session": lambda: {SESSION: Opener(KEY, SESSION + 1)},
}


@FUZZ
@given(data=sealed_datagrams(), how=st.sampled_from(sorted(OPENERS)))
def test_open_is_the_same_with_and_without_c(data: bytes, how: str) -> None:
    check_open(data, how)


@FUZZ
@given(case=fused_bodies(), how=st.sampled_from(["opener", "dict", "mapping"]))
def test_open_parses_bodies_near_the_fused_layout_as_python_does(
    case: tuple[int, bytes], how: str
) -> None:
    mtype, body = case  # under a valid tag: only the body's parse can tell them apart
    check_open(_sealed(body, mtype), how)


def check_open(data: bytes, how: str) -> None:
    def open_() -> Any:
        holder = OPENERS[how]()
        if isinstance(holder, Opener):
            return holder.open(data)
        return open_datagram(data, holder)

    c, py = both(open_)
    assert c == py


def test_a_forged_datagram_raises_the_same_error_in_c() -> None:
    sealed = bytearray(Sealer(KEY, SESSION).seal(JointCommand(positions=np.zeros(6)), stream=1,
                                                 seq=9, send_time_ns=0))  # fmt: skip
    sealed[-1] ^= 1
    c, py = both(lambda: open_datagram(bytes(sealed), {SESSION: Opener(KEY, SESSION)}))
    assert c == py
    assert c[0] == "AuthenticationError" and "does not verify" in c[1]


# ---------------------------------------------------------------------------------------------
# Memory


def test_the_c_paths_leak_nothing() -> None:
    c = native.module
    assert c is not None
    command = JointCommand(positions=np.linspace(-1, 1, 6), gripper=0.5)
    plain = bytes(encode(command, stream=1, session=SESSION, seq=1, send_time_ns=0))
    sealer, opener = Sealer(KEY, SESSION), Opener(KEY, SESSION)
    openers = {SESSION: opener}
    forged = bytearray(sealer.seal(command, stream=1, seq=1, send_time_ns=0))
    forged[-1] ^= 1
    # not the fused layout (velocities): C opens it and parses it with decode_body
    state = JointState(positions=np.zeros(3), velocities=np.zeros(3))
    general = Sealer(KEY, SESSION).seal(state, stream=2, seq=1, send_time_ns=0)
    seq = 1

    def once() -> None:
        nonlocal seq
        seq += 1
        decode(plain)
        c.decode_joints(plain[:-1])  # None
        encode(command, stream=1, session=SESSION, seq=seq, send_time_ns=0)
        c.encode_joints(command, 0x10, -1, SESSION, seq, 0)  # None
        sealed = sealer.seal(command, stream=1, seq=seq, send_time_ns=0)
        open_datagram(sealed, openers)
        opener.open(sealed)
        open_datagram(general, openers)
        c.open_sealed(sealed, None, {})  # no opener: None
        with pytest.raises(AuthenticationError):
            open_datagram(bytes(forged), openers)

    for _ in range(2000):  # warm every cache and free list first
        once()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20000):
            once()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 20k rounds of every C path"


# ---------------------------------------------------------------------------------------------
# Odd objects: Python code running inside a C call, look-alike openers


class _Resizes:
    """A gripper whose __float__ reallocates the positions array under the encoder."""

    def __init__(self, positions: np.ndarray, size: int) -> None:
        self.positions, self.size = positions, size

    def __float__(self) -> float:
        self.positions.resize(self.size, refcheck=False)
        self.positions[:] = np.arange(self.size) + 7.0
        return 0.5


@pytest.mark.parametrize("size", [2, 64])
def test_the_c_encoder_never_copies_positions_from_freed_memory(size: int) -> None:
    # Everything that may run Python code runs before the positions' memory is read, so what
    # is sent is the array as it stands after the gripper's __float__, never stale memory.
    c = native.module
    assert c is not None
    for seal in (False, True):
        positions = np.arange(4, dtype="<f8") + 1.0
        message = JointCommand(positions=positions, gripper=_Resizes(positions, size))  # type: ignore[arg-type]
        if seal:
            data = c.seal_joints(message, 0x10, 1, SESSION, 2, 1, 3, KEY)
            opened = Opener(KEY, SESSION).open(data)
        else:
            opened = decode(bytes(c.encode_joints(message, 0x10, 1, SESSION, 2, 3)))
        assert opened.message.positions.tolist() == (np.arange(size) + 7.0).tolist()
        assert opened.message.gripper == 0.5


class _Refuses:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __float__(self) -> float:
        raise self.exc


def _unset(name: str) -> JointCommand:
    message = JointCommand(positions=np.zeros(3), gripper=0.5)
    delattr(message, name)
    return message


ODD_OBJECTS = {
    **{f"no {name}": lambda n=name: _unset(n) for name in ("positions", "velocities", "gripper")},
    "gripper raises MemoryError": lambda: JointCommand(
        positions=np.zeros(3),
        gripper=_Refuses(MemoryError()),  # type: ignore[arg-type]
    ),
    "gripper raises ValueError": lambda: JointCommand(
        positions=np.zeros(3),
        gripper=_Refuses(ValueError("no")),  # type: ignore[arg-type]
    ),
}


@pytest.mark.parametrize("make", ODD_OBJECTS.values(), ids=ODD_OBJECTS.keys())
@pytest.mark.parametrize("stream", [1, -1])
def test_messages_that_raise_fail_alike_with_and_without_c(make: Any, stream: int) -> None:
    c, py = both(lambda: encode(make(), stream=stream, session=SESSION, seq=2, send_time_ns=3))
    assert c == py
    c, py = both(lambda: Sealer(KEY, SESSION).seal(make(), stream=stream, seq=2, send_time_ns=3))
    assert c == py


class _Session(int):
    def __ne__(self, other: object) -> bool:
        return True


class _OwnOpen(Opener):
    """An Opener subclass that counts its opens."""

    opened = 0

    def open(self, data: Any) -> Datagram:
        type(self).opened += 1
        return super().open(data)


def test_look_alike_openers_get_the_python_path() -> None:
    sealed = Sealer(KEY, SESSION).seal(JointCommand(positions=np.zeros(6)), stream=1, seq=4,
                                       send_time_ns=0)  # fmt: skip
    odd_session = Opener(KEY, SESSION)
    odd_session.session = _Session(SESSION)
    keyless = Opener(KEY, SESSION)
    del keyless._key
    for opener in (odd_session, keyless, _OwnOpen(KEY, SESSION)):
        c, py = both(lambda o=opener: open_datagram(sealed, {SESSION: o}))
        assert c == py
    assert c[0] == "ok"  # the subclass opens (the others: whatever Python says)


def test_headers_built_in_c_hash_like_python_ones() -> None:
    data = bytes(encode(JointCommand(positions=np.zeros(6)), stream=1, session=SESSION, seq=4,
                        send_time_ns=5))  # fmt: skip
    in_c = decode(data).header
    in_python = python_only(lambda: decode(data)).header
    assert in_c == in_python and hash(in_c) == hash(in_python) and in_c in {in_python}


def test_the_extension_is_configured_once_and_refuses_to_work_unconfigured() -> None:
    c = native.module
    assert c is not None
    with pytest.raises(RuntimeError, match="already called"):
        c.configure_aead(0, 0, Opener, repr, repr, repr)
    # A process that imported the codec only: the sealed paths say so, nothing crashes.
    script = (
        "import telepresence.wire.codec, telepresence._native as c\n"
        "for call in (lambda: c.open_sealed(b'TP' + bytes(62), None, None),\n"
        "             lambda: c.seal_joints(*[None] * 8)):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as exc:\n"
        "        print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("refused: telepresence._native is not configured") == 2
