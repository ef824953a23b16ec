"""Data-plane security: key derivation, sealing and opening, the spec's vector and example, and
every way a datagram can be forged, cut, grown, misdirected or replayed."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from helpers import fix_length, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_wire import EXAMPLES, MESSAGES, PROTOCOL_MD, assert_same, doc_examples

from robots.api import (
    BaseState,
    BaseVelocityCommand,
    ForceTorque,
    JointCommand,
    JointState,
    PoseCommand,
)
from telepresence.exceptions import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownSessionError,
)
from telepresence.security import (
    KDF_SALT,
    Opener,
    Sealer,
    SessionKeys,
    derive_key,
    new_session_secret,
    nonce,
    open_datagram,
)
from telepresence.seqwindow import SequenceWindow, SeqVerdict
from telepresence.wire import (
    AUTH_TAG_SIZE,
    FLAG_AUTHENTICATED,
    HEADER_SIZE,
    VERSION,
    Counters,
    Header,
    Heartbeat,
    MessageType,
    RobotMode,
    Role,
    Telemetry,
    decode,
    decode_body,
    encode,
)

REJECTED = (DecodeError, AuthenticationError, UnknownSessionError)
"""All that opening may raise for bad input."""
FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The test vector of docs/protocol.md §12.2
SECRET = bytes(range(32))
SESSION = 0x1A2B3C4D
PRK = "bfff4adfcad47557f967d7c2a85c2cf2855509f4933c0d6754c9ecb085fac29a"
STATION_TO_ROBOT = "8e33e426e689ffda0611afa27d63a56594ae4c2fecde98aa4537bee3f514c3d7"
ROBOT_TO_STATION = "f3bc2be87663e2e3f505555120b546e6c22a87127f2f49bc0da7f5ba7da55b1d"

KEYS = SessionKeys.derive(SECRET, SESSION)


def station_sealer() -> Sealer:
    return KEYS.sealer(Role.STATION)


ROBOT_OPENER = KEYS.opener(Role.ROBOT)  # opens what the station sends
STATION_OPENER = KEYS.opener(Role.STATION)  # opens what the robot sends


# ---------------------------------------------------------------------------------------------
# Keys


def rfc5869_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> tuple[bytes, bytes]:
    """HKDF straight from RFC 5869 with the standard library: (PRK, OKM)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return prk, okm[:length]


def test_kdf_test_vector() -> None:
    assert KEYS.session == SESSION
    assert KEYS.station_to_robot.hex() == STATION_TO_ROBOT
    assert KEYS.robot_to_station.hex() == ROBOT_TO_STATION


def test_kdf_is_reproducible_from_the_documented_parameters_alone() -> None:
    """What another language needs: RFC 5869 over the salt and info strings of §12.2."""
    salt = b"telepresence data plane v1"
    assert salt == KDF_SALT and len(salt) == 26
    vector = {b"station->robot": STATION_TO_ROBOT, b"robot->station": ROBOT_TO_STATION}
    for label, expected in vector.items():
        info = label + struct.pack("<I", SESSION)
        assert len(info) == 18
        prk, okm = rfc5869_hkdf_sha256(SECRET, salt, info, 32)
        assert prk.hex() == PRK
        assert okm.hex() == expected
        assert derive_key(SECRET, SESSION, label).hex() == expected


def test_protocol_md_gives_the_kdf_test_vector() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^(secret|session id|PRK|\S+ key)\s+([0-9a-f]+)$", text, re.MULTILINE))
    assert rows == {
        "secret": SECRET.hex(),
        "session id": f"{SESSION:08x}",
        "PRK": PRK,
        "station->robot key": STATION_TO_ROBOT,
        "robot->station key": ROBOT_TO_STATION,
    }
    spaced = " ".join(f"{b:02x}" for b in KDF_SALT)
    assert f"`{spaced}`" in text
    for label in (b"station->robot", b"robot->station"):
        info = label + struct.pack("<I", SESSION)
        assert f"`{info.hex(' ')}`" in text


def test_keys_are_independent_per_direction_session_and_secret() -> None:
    other_session = SessionKeys.derive(SECRET, SESSION + 1)
    other_secret = SessionKeys.derive(bytes(32), SESSION)
    keys = {
        k
        for ks in (KEYS, other_session, other_secret)
        for k in (ks.station_to_robot, ks.robot_to_station)
    }
    assert len(keys) == 6
    fresh = new_session_secret()
    assert len(fresh) == 32 and fresh != new_session_secret()


def test_roles_seal_and_open_with_the_right_keys() -> None:
    assert KEYS.sending_key(Role.STATION) == KEYS.receiving_key(Role.ROBOT) == KEYS.station_to_robot
    assert KEYS.sending_key(Role.ROBOT) == KEYS.receiving_key(Role.STATION) == KEYS.robot_to_station
    hb = Heartbeat(role=Role.ROBOT, mode=RobotMode.ACTIVE)
    from_robot = KEYS.sealer(Role.ROBOT).seal(hb, stream=2, seq=1, send_time_ns=0)
    assert_same(hb, STATION_OPENER.open(from_robot).message)
    with pytest.raises(AuthenticationError):
        ROBOT_OPENER.open(from_robot)
    for bad in (0, 3, "station"):
        with pytest.raises(ConfigError, match="role must be"):
            KEYS.sealer(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="role must be"):
            KEYS.opener(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("secret", "session"),
    [(bytes(31), 1), (bytes(33), 1), (bytearray(32), 1), (bytes(32), 0), (bytes(32), 2**32)],
)
def test_bad_secret_or_session_is_a_config_error(secret: Any, session: int) -> None:
    with pytest.raises(ConfigError):
        SessionKeys.derive(secret, session)


def test_bad_keys_are_config_errors_and_keys_stay_out_of_repr() -> None:
    with pytest.raises(ConfigError):
        SessionKeys(session=1, station_to_robot=bytes(16), robot_to_station=bytes(32))
    with pytest.raises(ConfigError):
        Sealer(bytes(31), 1)
    with pytest.raises(ConfigError):
        Opener(bytes(32), 0)
    assert STATION_TO_ROBOT not in repr(KEYS) and ROBOT_TO_STATION not in repr(KEYS)
    assert "session=" in repr(KEYS)


def test_nonce_is_stream_u32_then_seq_u64_little_endian() -> None:
    assert nonce(1, 42).hex(" ") == "01 00 00 00 2a 00 00 00 00 00 00 00"
    assert nonce(0xFFFF, 2**64 - 1) == b"\xff\xff\x00\x00" + b"\xff" * 8


# ---------------------------------------------------------------------------------------------
# Round trips

SEALABLE_HEADERS = st.fixed_dictionaries(
    {
        "stream": st.integers(0, 2**16 - 1),
        "session": st.integers(1, 2**32 - 1),
        "seq": st.integers(1, 2**64 - 1),
        "send_time_ns": st.integers(-(2**63), 2**63 - 1),
    }
)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@given(data=st.data(), fields=SEALABLE_HEADERS)
def test_round_trip(mtype: MessageType, data: st.DataObject, fields: dict[str, int]) -> None:
    message = data.draw(MESSAGES[mtype], label="message")
    keys = SessionKeys.derive(SECRET, fields["session"])
    stream, seq, sent = fields["stream"], fields["seq"], fields["send_time_ns"]
    sealed = keys.sealer(Role.STATION).seal(message, stream=stream, seq=seq, send_time_ns=sent)
    plain = bytes(encode(message, **fields))

    assert len(sealed) == len(plain) + AUTH_TAG_SIZE
    # the header is the plain one but for the flag and the body length counting the tag
    expected_header = bytearray(plain[:HEADER_SIZE])
    struct.pack_into("<H", expected_header, 4, FLAG_AUTHENTICATED)
    struct.pack_into("<H", expected_header, 12, len(plain) - HEADER_SIZE + AUTH_TAG_SIZE)
    assert sealed[:HEADER_SIZE] == expected_header

    header, opened = keys.opener(Role.ROBOT).open(sealed)
    assert header == Header(type=mtype, flags=FLAG_AUTHENTICATED, **fields)
    assert header.type is mtype
    assert_same(message, opened)
    _, body = keys.opener(Role.ROBOT).unseal(sealed)
    assert body == plain[HEADER_SIZE:]  # the plaintext is exactly the plain body

    with pytest.raises(DecodeError, match="a session key is needed"):
        decode(sealed)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@given(data=st.data(), fields=SEALABLE_HEADERS)
def test_both_ciphers_seal_and_open_alike(
    mtype: MessageType, data: st.DataObject, fields: dict[str, int]
) -> None:
    # libsodium takes the one-frame paths for joint messages (in-place seal, fused open); the
    # cryptography cipher always takes the general ones. Same bytes, same messages.
    message = data.draw(MESSAGES[mtype], label="message")
    keys = SessionKeys.derive(SECRET, fields["session"])
    key, session = keys.station_to_robot, fields["session"]
    stream, seq, sent = fields["stream"], fields["seq"], fields["send_time_ns"]
    sealed = {
        backend: Sealer(key, session, backend=backend).seal(
            message, stream=stream, seq=seq, send_time_ns=sent
        )
        for backend in ("libsodium", "cryptography")
    }
    assert sealed["libsodium"] == sealed["cryptography"]
    for backend in ("libsodium", "cryptography"):
        opener = Opener(key, session, backend=backend)
        for opened in (opener.open(sealed["libsodium"]),
                       open_datagram(sealed["libsodium"], {session: opener})):  # fmt: skip
            assert opened.header == Header(type=mtype, flags=FLAG_AUTHENTICATED, **fields)
            assert_same(message, opened.message)


@pytest.mark.parametrize("backend", ["libsodium", "cryptography"])
def test_a_repeated_sequence_number_is_refused_on_either_path(backend: str) -> None:
    keys = SessionKeys.derive(SECRET, SESSION)
    sealer = Sealer(keys.station_to_robot, SESSION, backend=backend)
    command = JointCommand(positions=np.zeros(6), gripper=0.5)  # the fast path's kind
    first = sealer.seal(command, stream=1, seq=5, send_time_ns=0)
    for seq in (5, 4, None):
        with pytest.raises(LocalProtocolError):
            sealer.seal(command, stream=1, seq=seq, send_time_ns=0)  # type: ignore[arg-type]
    assert sealer._last == {1: 5}
    again = Sealer(keys.station_to_robot, SESSION, backend=backend)
    assert again.seal(command, stream=1, seq=5, send_time_ns=0) == first
    assert sealer.seal(command, stream=2, seq=1, send_time_ns=0)  # per stream


_FUSED_BODY = struct.Struct("<BBHdHBB")


@st.composite
def fused_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """Joint bodies in or near the fused layout: a bad bit, field, count or length here and
    there."""
    mtype = draw(st.sampled_from([MessageType.JOINT_COMMAND, MessageType.JOINT_STATE]))
    n = draw(st.sampled_from([0, 1, 3, 6]))
    count = max(0, n + draw(st.sampled_from([0, 0, 0, 1, -1])))
    body = (
        _FUSED_BODY.pack(
            draw(st.sampled_from([0, 4, 4, 1, 5, 8, 0x84])),
            draw(st.sampled_from([0, 0, 0, 1])),
            draw(st.sampled_from([0, 0, 0, 2])),
            draw(st.sampled_from([0.0, -0.0, 0.5, math.nan, math.inf, 5e-324])),
            count,
            draw(st.sampled_from([8, 8, 8, 4, 0])),
            draw(st.sampled_from([0, 0, 0, 1])),
        )
        + np.linspace(-1, 1, n).tobytes()
    )
    body += draw(st.sampled_from([b"", b"", b"", bytes(8)]))
    return int(mtype), body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@FUZZ
@given(case=fused_bodies())
def test_the_fused_open_agrees_with_the_general_parser(case: tuple[int, bytes]) -> None:
    mtype, body = case
    header = bytearray(HEADER_SIZE)
    struct.pack_into("<2sBBHHIHHQq", header, 0, b"TP", VERSION, mtype, FLAG_AUTHENTICATED, 1,
                     SESSION, len(body) + AUTH_TAG_SIZE, 0, 3, 4)  # fmt: skip
    key = SessionKeys.derive(SECRET, SESSION).station_to_robot
    data = bytes(header) + ChaCha20Poly1305(key).encrypt(nonce(1, 3), body, bytes(header))

    def outcome(open_: Any) -> tuple[str, str]:
        try:
            return "ok", repr(open_())
        except DecodeError as exc:
            return "malformed", type(exc).__name__

    for backend in ("libsodium", "cryptography"):
        opener = Opener(key, SESSION, backend=backend)
        general = outcome(lambda o=opener: decode_body(MessageType(mtype), o.unseal(data)[1]))
        assert outcome(lambda o=opener: o.open(data).message) == general
        assert outcome(lambda o=opener: open_datagram(data, {SESSION: o}).message) == general


def test_joint_messages_take_the_one_frame_paths(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # What the data plane sends at the control rate must not fall back to the general paths
    # (a silent slowdown): with those disabled, it still seals and opens.
    import telepresence.security as security

    def general(*args: Any, **kw: Any) -> None:
        raise AssertionError("general path taken")

    keys = SessionKeys.derive(SECRET, SESSION)
    sealer, opener = keys.sealer(Role.STATION), keys.opener(Role.ROBOT)
    messages = [
        JointCommand(positions=np.linspace(-1, 1, 6), gripper=0.5),
        JointCommand(positions=np.zeros(7)),
        JointState(positions=np.linspace(0, 1, 6), gripper=None),
    ]
    expected = [sealer.seal(m, stream=1, seq=i + 1, send_time_ns=i) for i, m in enumerate(messages)]
    for name in ("_encode_joints_into", "_encode_into", "_decode_body"):
        monkeypatch.setattr(security, name, general)
    sealer = keys.sealer(Role.STATION)
    for i, m in enumerate(messages):
        sealed = sealer.seal(m, stream=1, seq=i + 1, send_time_ns=i)
        assert sealed == expected[i]
        assert_same(m, opener.open(sealed).message)
        assert_same(m, open_datagram(sealed, {SESSION: opener}).message)
    with pytest.raises(AssertionError, match="general path"):  # float32: the general path
        sealer.seal(JointCommand(positions=np.zeros(6, np.float32)), stream=1, seq=9,
                    send_time_ns=0)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The authenticated example in docs/protocol.md


def auth_examples() -> list[tuple[str, bytes]]:
    return doc_examples("Authenticated example")


def test_protocol_md_authenticated_example() -> None:
    ((name, data),) = auth_examples()
    assert name == "JOINT_COMMAND"
    message, stream, seq, sent = EXAMPLES[name]
    fields = {"stream": stream, "session": SESSION, "seq": seq, "send_time_ns": sent}

    header, opened = ROBOT_OPENER.open(data)
    assert header == Header(type=MessageType[name], flags=FLAG_AUTHENTICATED, **fields)
    assert_same(message, opened)
    assert station_sealer().seal(message, stream=stream, seq=seq, send_time_ns=sent) == data
    _, body = ROBOT_OPENER.unseal(data)
    assert body == bytes(encode(message, **fields))[HEADER_SIZE:]
    with pytest.raises(DecodeError):
        decode(data)


# ---------------------------------------------------------------------------------------------
# One sealed datagram per type, full-featured, for exhaustive tampering

SEEDS: dict[MessageType, Any] = {
    MessageType.HEARTBEAT: Heartbeat(role=Role.STATION, mode=RobotMode.STOPPED),
    MessageType.JOINT_COMMAND: JointCommand(positions=np.linspace(-0.5, 0.5, 6), gripper=0.5),
    MessageType.POSE_COMMAND: PoseCommand(
        position=np.array([1.0, 2.0, 3.0]), orientation=np.array([0.0, 0, 0, 1]), gripper=1.0
    ),
    MessageType.BASE_VELOCITY_COMMAND: BaseVelocityCommand(vx=0.5, vy=-0.5, wz=1.0),
    MessageType.JOINT_STATE: JointState(
        positions=np.array([1.0, 2.0], dtype=np.float32),
        velocities=np.array([0.5, 0.25]),
        efforts=np.array([3.0, 4.0]),
    ),
    MessageType.BASE_STATE: BaseState(x=1.0, y=2.0, theta=0.5, vx=0.1, vy=0.2, wz=0.3),
    MessageType.FORCE_TORQUE: ForceTorque(
        sensor=3, time_ns=-5, force=np.array([1.0, 2, 3]), torque=np.array([4.0, 5, 6])
    ),
    MessageType.TELEMETRY: Telemetry(
        mode=RobotMode.ACTIVE,
        command_stream=1,
        command_seq=9,
        applied_ns=7,
        actuated_known=True,
        counters=Counters(received=3, applied=2),
    ),
}


def sealed_seed(mtype: MessageType) -> bytes:
    return station_sealer().seal(SEEDS[mtype], stream=1, seq=77, send_time_ns=123)


def test_every_message_type_has_a_seed() -> None:
    assert set(SEEDS) == set(MessageType)


def rejects(data: bytes, opener: Opener = ROBOT_OPENER) -> type[Exception]:
    """Open `data`, which must fail with one of REJECTED (never a message); which one."""
    try:
        datagram = opener.open(data)
    except REJECTED as exc:
        return type(exc)
    pytest.fail(f"opened a tampered datagram: {data.hex()} -> {datagram}")


def expected_for_header_flip(flipped: bytes) -> type[Exception]:
    """What a header bit flip must raise: the header check's error if the header is now
    invalid; UnknownSessionError if it names another session; else the AEAD fails."""
    try:
        header, _ = Header.parse(flipped, FLAG_AUTHENTICATED)
    except (DecodeError, AuthenticationError) as exc:
        return type(exc)
    return UnknownSessionError if header.session != SESSION else AuthenticationError


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_every_single_bit_flip_is_rejected(mtype: MessageType) -> None:
    seed = sealed_seed(mtype)
    assert_same(SEEDS[mtype], ROBOT_OPENER.open(seed).message)
    for i in range(len(seed) * 8):
        offset, bit = divmod(i, 8)
        flipped = bytearray(seed)
        flipped[offset] ^= 1 << bit
        got = rejects(bytes(flipped))
        if 6 <= offset < 8 or offset >= 16:  # stream, seq, send time, ciphertext, tag: the AEAD
            assert got is AuthenticationError, (offset, bit)
        elif 8 <= offset < 12:
            assert got is UnknownSessionError, (offset, bit)
        elif offset == 4 and bit == 0:  # the AUTHENTICATED flag cleared: a plain datagram
            assert got is AuthenticationError, (offset, bit)
        else:
            assert got is expected_for_header_flip(bytes(flipped)), (offset, bit)
        with pytest.raises(REJECTED):
            open_datagram(bytes(flipped), {SESSION: ROBOT_OPENER})


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_every_truncation_and_extension_is_rejected(mtype: MessageType) -> None:
    seed = sealed_seed(mtype)
    for n in range(len(seed)):
        cut = bytearray(seed[:n])
        assert rejects(bytes(cut)) is DecodeError  # the body length no longer matches
        fix_length(cut)
        short_body = n < HEADER_SIZE + AUTH_TAG_SIZE
        assert rejects(bytes(cut)) is (DecodeError if short_body else AuthenticationError), n
    for extra in (b"\0", b"\0" * 16, seed[HEADER_SIZE:]):
        grown = bytearray(seed + extra)
        assert rejects(bytes(grown)) is DecodeError  # trailing bytes
        fix_length(grown)
        assert rejects(bytes(grown)) is AuthenticationError


def test_tag_alone_and_empty_body() -> None:
    seed = bytearray(sealed_seed(MessageType.HEARTBEAT))
    header_only = seed[:HEADER_SIZE]
    fix_length(header_only)
    with pytest.raises(DecodeError, match="shorter than the 16-byte tag"):
        ROBOT_OPENER.open(bytes(header_only))
    tag_only = seed[:HEADER_SIZE] + seed[-AUTH_TAG_SIZE:]
    fix_length(tag_only)
    with pytest.raises(AuthenticationError):
        ROBOT_OPENER.open(bytes(tag_only))


def test_wrong_session() -> None:
    hb = Heartbeat(role=Role.STATION)
    data = station_sealer().seal(hb, stream=2, seq=1, send_time_ns=0)
    other = SessionKeys.derive(SECRET, SESSION + 1)
    # an opener of another session: named by the header, refused before any crypto
    with pytest.raises(UnknownSessionError, match="1a2b3c4d") as info:
        other.opener(Role.ROBOT).open(data)
    assert info.value.session == SESSION
    # the header rewritten to the other session: the AAD no longer matches
    moved = bytearray(data)
    struct.pack_into("<I", moved, 8, SESSION + 1)
    with pytest.raises(AuthenticationError):
        other.opener(Role.ROBOT).open(bytes(moved))
    # the same session id but keys of another secret
    with pytest.raises(AuthenticationError):
        SessionKeys.derive(bytes(32), SESSION).opener(Role.ROBOT).open(data)


def test_wrong_direction_key() -> None:
    """A datagram the station sealed does not open with the station's own opener (robot ->
    station key), even for the same (stream, seq): no reflection, no nonce sharing."""
    for mtype in MessageType:
        data = sealed_seed(mtype)
        with pytest.raises(AuthenticationError, match="does not verify"):
            STATION_OPENER.open(data)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_plain_datagram_to_an_opener_is_not_authenticated(mtype: MessageType) -> None:
    plain = bytes(encode(SEEDS[mtype], stream=1, session=SESSION, seq=77, send_time_ns=123))
    with pytest.raises(AuthenticationError, match="not authenticated"):
        ROBOT_OPENER.open(plain)
    with pytest.raises(AuthenticationError, match="not authenticated"):
        open_datagram(plain, {SESSION: ROBOT_OPENER})


def test_plain_decode_rejects_authenticated_and_unknown_flags() -> None:
    data = bytearray(sealed_seed(MessageType.JOINT_COMMAND))
    with pytest.raises(DecodeError, match=r"flags 0x0001: .* a session key is needed"):
        decode(bytes(data))
    for flags in (0x0002, 0x0003, 0x8001):
        struct.pack_into("<H", data, 4, flags)
        with pytest.raises(DecodeError, match=f"flags 0x{flags:04x} has unknown bits set"):
            decode(bytes(data))
        with pytest.raises(DecodeError, match="unknown bits set"):
            ROBOT_OPENER.open(bytes(data))


def test_errors_are_remote_protocol_errors_kept_apart() -> None:
    assert issubclass(AuthenticationError, RemoteProtocolError)
    assert issubclass(UnknownSessionError, RemoteProtocolError)
    assert not issubclass(AuthenticationError, DecodeError)  # forged is not malformed
    assert not issubclass(UnknownSessionError, DecodeError)


def test_authentic_but_malformed_body_is_a_decode_error() -> None:
    """Only a key holder can send it, but it is still checked: DecodeError after the AEAD."""
    body = struct.pack("<BBH", 1, 0, 1)  # HEARTBEAT with a non-zero reserved field
    header = struct.pack(
        "<2sBBHHIHHQq", b"TP", VERSION, 0x01, FLAG_AUTHENTICATED, 2, SESSION, 4 + 16, 0, 5, 0
    )
    sealed = header + ChaCha20Poly1305(KEYS.station_to_robot).encrypt(nonce(2, 5), body, header)
    _, plain = ROBOT_OPENER.unseal(sealed)
    assert plain == body
    with pytest.raises(DecodeError, match="HEARTBEAT reserved"):
        ROBOT_OPENER.open(sealed)


# ---------------------------------------------------------------------------------------------
# Replay: authenticate first, then the sequence window


def receive(opener: Opener, window: SequenceWindow, data: bytes) -> SeqVerdict:
    """The receiver's order of §12.3: header, session, AEAD (all in `open`), then the window."""
    header, _ = opener.open(data)
    return window.accept(header.seq)


def test_a_replay_authenticates_and_the_window_calls_it_a_duplicate() -> None:
    sealer, window = station_sealer(), SequenceWindow()
    first = sealer.seal(SEEDS[MessageType.JOINT_COMMAND], stream=1, seq=1, send_time_ns=10)
    second = sealer.seal(SEEDS[MessageType.JOINT_COMMAND], stream=1, seq=2, send_time_ns=20)
    assert receive(ROBOT_OPENER, window, first) is SeqVerdict.NEWEST
    assert receive(ROBOT_OPENER, window, second) is SeqVerdict.NEWEST
    assert receive(ROBOT_OPENER, window, second) is SeqVerdict.DUPLICATE
    assert receive(ROBOT_OPENER, window, first) is SeqVerdict.DUPLICATE


def test_a_forged_sequence_number_never_moves_the_window() -> None:
    sealer, window = station_sealer(), SequenceWindow()
    genuine = [
        sealer.seal(SEEDS[MessageType.JOINT_COMMAND], stream=1, seq=s, send_time_ns=s)
        for s in (1, 2)
    ]
    assert receive(ROBOT_OPENER, window, genuine[0]) is SeqVerdict.NEWEST
    forged = bytearray(genuine[1])
    struct.pack_into("<Q", forged, 16, 10**9)  # would push every genuine datagram out as stale
    with pytest.raises(AuthenticationError):
        receive(ROBOT_OPENER, window, bytes(forged))
    assert window.highest == 1
    assert receive(ROBOT_OPENER, window, genuine[1]) is SeqVerdict.NEWEST


# ---------------------------------------------------------------------------------------------
# Nonces: unique per (direction, stream, seq), and the sealer refuses to repeat one


def test_different_stream_or_seq_give_different_ciphertexts_for_the_same_plaintext() -> None:
    message = SEEDS[MessageType.BASE_STATE]
    sealer = station_sealer()
    sealed = {
        (stream, seq): sealer.seal(message, stream=stream, seq=seq, send_time_ns=0)
        for stream in (1, 2, 256)
        for seq in (1, 2, 2**32 + 1)
    }
    bodies = {ROBOT_OPENER.unseal(d)[1] for d in sealed.values()}
    assert len(bodies) == 1  # one plaintext ...
    ciphertexts = {d[HEADER_SIZE:] for d in sealed.values()}
    assert len(ciphertexts) == len(sealed)  # ... as many ciphertexts (and tags) as nonces
    back = KEYS.sealer(Role.ROBOT).seal(message, stream=1, seq=1, send_time_ns=0)
    assert back[HEADER_SIZE:] != sealed[(1, 1)][HEADER_SIZE:]  # other direction, other key


def test_sealer_refuses_to_repeat_a_nonce() -> None:
    sealer = station_sealer()
    hb = Heartbeat(role=Role.STATION)
    sealer.seal(hb, stream=2, seq=5, send_time_ns=0)
    for seq in (5, 4, 0):
        with pytest.raises(LocalProtocolError, match="nonce would repeat"):
            sealer.seal(hb, stream=2, seq=seq, send_time_ns=0)
    sealer.seal(hb, stream=1, seq=1, send_time_ns=0)  # streams count apart
    with pytest.raises(LocalProtocolError):  # a failed encode does not use up its number
        sealer.seal(object(), stream=2, seq=6, send_time_ns=0)
    sealer.seal(hb, stream=2, seq=6, send_time_ns=0)


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": 2**16, "seq": 1, "send_time_ns": 0},
        {"stream": 1, "seq": 2**64, "send_time_ns": 0},
        {"stream": 1, "seq": 1, "send_time_ns": 2**63},
        {"stream": 1.5, "seq": 1, "send_time_ns": 0},
        {"stream": 1, "seq": None, "send_time_ns": 0},
    ],
)
def test_seal_rejects_what_the_wire_cannot_carry(fields: dict[str, Any]) -> None:
    for message in (Heartbeat(role=Role.STATION), SEEDS[MessageType.JOINT_COMMAND]):
        with pytest.raises(LocalProtocolError):
            station_sealer().seal(message, **fields)


def test_seal_rejects_a_body_that_leaves_no_room_for_the_tag() -> None:
    n = (0xFFFF - 16) // 8  # a 16-byte joints prefix + n float64 positions: just fits plain
    big = JointCommand(positions=np.zeros(n))
    assert len(encode(big, stream=1, session=1, seq=1, send_time_ns=0)) == HEADER_SIZE + 16 + 8 * n
    with pytest.raises(LocalProtocolError, match="body length is invalid"):
        station_sealer().seal(big, stream=1, seq=1, send_time_ns=0)
    fits = JointCommand(positions=np.zeros(n - 2))
    sealed = station_sealer().seal(fits, stream=1, seq=1, send_time_ns=0)
    assert len(sealed) == HEADER_SIZE + 16 + 8 * (n - 2) + AUTH_TAG_SIZE
    assert_same(fits, ROBOT_OPENER.open(sealed).message)


# ---------------------------------------------------------------------------------------------
# Inputs and outputs


def test_open_takes_any_bytes_like_and_gives_views_of_the_plaintext() -> None:
    data = sealed_seed(MessageType.JOINT_STATE)
    reference = ROBOT_OPENER.open(data)
    for layout in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        header, message = ROBOT_OPENER.open(layout)  # type: ignore[arg-type]
        assert header == reference.header
        assert_same(reference.message, message)
    buf = bytearray(data)
    _, message = ROBOT_OPENER.open(buf)
    for array in (message.positions, message.velocities, message.efforts):
        assert not array.flags.writeable
        base = array.base.obj if isinstance(array.base, memoryview) else array.base
        assert isinstance(base, bytes)  # a view of the decrypted plaintext, not of `buf`
    buf[:] = bytes(len(buf))  # reusing the receive buffer does not touch the message
    assert_same(SEEDS[MessageType.JOINT_STATE], message)
    with pytest.raises(TypeError):
        ROBOT_OPENER.open("not bytes")  # type: ignore[arg-type]


def test_open_datagram_picks_the_opener_by_session() -> None:
    other = SessionKeys.derive(bytes(32), 7)
    openers = {SESSION: ROBOT_OPENER, 7: other.opener(Role.ROBOT)}
    hb = Heartbeat(role=Role.STATION)
    for keys in (KEYS, other):
        data = keys.sealer(Role.STATION).seal(hb, stream=2, seq=1, send_time_ns=0)
        header, message = open_datagram(data, openers)
        assert header.session == keys.session
        assert_same(hb, message)
    with pytest.raises(UnknownSessionError) as info:
        open_datagram(sealed_seed(MessageType.HEARTBEAT), {7: other.opener(Role.ROBOT)})
    assert info.value.session == SESSION


# ---------------------------------------------------------------------------------------------
# decode_body: the body parser on its own (what an opener uses on the plaintext)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@given(data=st.data())
def test_decode_body_agrees_with_decode(mtype: MessageType, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[mtype], label="message")
    plain = bytes(encode(message, stream=1, session=1, seq=1, send_time_ns=0))
    body = plain[HEADER_SIZE:]
    for layout in (body, bytearray(body), memoryview(plain)[HEADER_SIZE:]):
        assert_same(decode(plain).message, decode_body(mtype, layout))


@FUZZ
@given(mtype=st.sampled_from(MessageType), body=st.binary(max_size=160))
def test_decode_body_raises_only_decode_error(mtype: MessageType, body: bytes) -> None:
    header = struct.pack("<2sBBHHIHHQq", b"TP", VERSION, mtype, 0, 1, 2, len(body), 0, 3, 4)
    try:
        expected = decode(header + body).message
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_body(mtype, body)
    else:
        assert_same(expected, decode_body(mtype, body))


def test_decode_body_of_an_unknown_type() -> None:
    with pytest.raises(DecodeError, match="unknown"):
        decode_body(0x7F, b"")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Fuzz: whatever the bytes, opening raises DecodeError, AuthenticationError or
# UnknownSessionError, and only the untouched datagram opens


@st.composite
def sealed_datagrams(draw: st.DrawFn) -> bytes:
    mtype = draw(st.sampled_from(MessageType))
    message = draw(MESSAGES[mtype])
    sealer = station_sealer()
    return sealer.seal(
        message,
        stream=draw(st.integers(0, 2**16 - 1)),
        seq=draw(st.integers(1, 2**64 - 1)),
        send_time_ns=draw(st.integers(-(2**63), 2**63 - 1)),
    )


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    original = draw(sealed_datagrams())
    data = bytearray(original)
    return original, mutate(draw, data)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    rejects(data)
    with pytest.raises(REJECTED):
        open_datagram(data, {SESSION: ROBOT_OPENER})


@FUZZ
@given(mtype=st.sampled_from(MessageType), body=st.binary(max_size=200))
def test_random_bodies_behind_a_valid_authenticated_header(mtype: MessageType, body: bytes) -> None:
    header = struct.pack(
        "<2sBBHHIHHQq", b"TP", VERSION, mtype, FLAG_AUTHENTICATED, 1, SESSION, len(body), 0, 3, 4
    )
    assert rejects(header + body) is (DecodeError if len(body) < 16 else AuthenticationError)


@FUZZ
@given(pair=mutated())
def test_mutated_datagrams(pair: tuple[bytes, bytes]) -> None:
    original, data = pair
    if data == original:  # the mutations cancelled out
        ROBOT_OPENER.open(data)
    else:
        rejects(data)
