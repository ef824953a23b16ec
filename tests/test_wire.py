"""The wire codec: round trips, the spec's hex examples, zero-copy views, malformed input."""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robots.api import (
    BaseState,
    BaseVelocityCommand,
    ForceTorque,
    JointCommand,
    JointState,
    PoseCommand,
)
from telepresence.exceptions import DecodeError, LocalProtocolError
from telepresence.security import SessionKeys
from telepresence.wire import (
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
    encode,
    encode_into,
    encoded_size,
)

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# ---------------------------------------------------------------------------------------------
# Strategies

U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)  # -0.0, NaN, inf, subnormals too
FLOAT_DTYPES = ("<f4", "<f8")


def float_arrays(n: int, dtype: str | None = None) -> st.SearchStrategy[Any]:
    dtypes = st.sampled_from(FLOAT_DTYPES) if dtype is None else st.just(dtype)
    return dtypes.flatmap(lambda dt: hnp.arrays(np.dtype(dt), n))


@st.composite
def joint_fields(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 12))
    return {
        "positions": draw(float_arrays(n)),
        "velocities": draw(st.none() | float_arrays(n)),
        "efforts": draw(st.none() | float_arrays(n)),
        "gripper": draw(st.none() | ANY_FLOAT),
    }


def vectors(n: int) -> st.SearchStrategy[Any]:
    return float_arrays(n, "<f8")


MESSAGES: dict[MessageType, st.SearchStrategy[Any]] = {
    MessageType.HEARTBEAT: st.builds(
        Heartbeat, role=st.sampled_from(Role), mode=st.sampled_from(RobotMode)
    ),
    MessageType.JOINT_COMMAND: joint_fields().map(lambda kw: JointCommand(**kw)),
    MessageType.POSE_COMMAND: st.builds(
        PoseCommand, position=vectors(3), orientation=vectors(4), gripper=st.none() | ANY_FLOAT
    ),
    MessageType.BASE_VELOCITY_COMMAND: st.builds(
        BaseVelocityCommand, vx=ANY_FLOAT, vy=ANY_FLOAT, wz=ANY_FLOAT
    ),
    MessageType.JOINT_STATE: joint_fields().map(lambda kw: JointState(**kw)),
    MessageType.BASE_STATE: st.builds(
        BaseState,
        x=ANY_FLOAT,
        y=ANY_FLOAT,
        theta=ANY_FLOAT,
        vx=ANY_FLOAT,
        vy=ANY_FLOAT,
        wz=ANY_FLOAT,
    ),
    MessageType.FORCE_TORQUE: st.builds(
        ForceTorque, sensor=U16, time_ns=I64, force=vectors(3), torque=vectors(3)
    ),
    MessageType.TELEMETRY: st.builds(
        Telemetry,
        mode=st.sampled_from(RobotMode),
        command_stream=U16,
        command_seq=U64,
        command_sent_ns=I64,
        received_ns=I64,
        decoded_ns=I64,
        applied_ns=I64,
        actuated_ns=I64,
        actuated_known=st.booleans(),
        counters=st.builds(Counters, **dict.fromkeys(Counters.FIELDS, U32)),
    ),
}
HEADERS = st.fixed_dictionaries({"stream": U16, "session": U32, "seq": U64, "send_time_ns": I64})


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(MessageType)


# ---------------------------------------------------------------------------------------------
# Comparing messages bit for bit (NaN != NaN, and -0.0 == 0.0, so == is not enough)


def assert_same(expected: Any, got: Any, where: str = "") -> None:
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == expected.dtype.newbyteorder("<"), where
        assert got.tobytes() == expected.astype(got.dtype).tobytes(), where
    elif isinstance(expected, float):
        assert isinstance(got, float), where
        assert struct.pack("<d", got) == struct.pack("<d", expected), where
    elif dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        assert type(got) is type(expected), where
        for f in dataclasses.fields(expected):
            if f.name == "ref":  # endpoint-local tag, not on the wire
                continue
            assert_same(getattr(expected, f.name), getattr(got, f.name), f"{where}.{f.name}")
    else:
        assert got == expected, where
        assert type(got) is type(expected) or isinstance(expected, int), where


def datagram(message: Any, **header: int) -> bytes:
    fields = {"stream": 1, "session": 0x1A2B3C4D, "seq": 1, "send_time_ns": 0, **header}
    return bytes(encode(message, **fields))


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@given(data=st.data(), fields=HEADERS)
def test_round_trip(mtype: MessageType, data: st.DataObject, fields: dict[str, int]) -> None:
    message = data.draw(MESSAGES[mtype], label="message")
    encoded = encode(message, **fields)
    assert len(encoded) == encoded_size(message)
    assert encoded[:2] == b"TP" and encoded[2] == VERSION == 2 and encoded[3] == mtype
    assert struct.unpack_from("<H", encoded, 12)[0] == len(encoded) - HEADER_SIZE

    header, decoded = decode(bytes(encoded))
    assert header == Header(type=mtype, flags=0, **fields)
    assert header.type is mtype
    assert_same(message, decoded)

    again = encode(decoded, **fields)
    assert again == encoded  # canonical: decode then encode gives the same bytes

    dirty = bytearray(b"\xa5" * (len(encoded) + 7))  # every byte is written, whatever was there
    assert encode_into(dirty, message, **fields) == len(encoded)
    assert dirty[: len(encoded)] == encoded


def test_float32_arrays_stay_float32_and_other_dtypes_travel_as_float64() -> None:
    big_endian = np.array([1.5, -2.0], dtype=">f4")
    msg = JointCommand(
        positions=big_endian,
        velocities=np.array([1, 2], dtype=np.int32),
        efforts=np.array([0.5, 0.25], dtype=np.float16),
    )
    _, got = decode(datagram(msg))
    assert got.positions.dtype == np.dtype("<f4")
    assert got.velocities.dtype == got.efforts.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(got.positions, [1.5, -2.0])
    np.testing.assert_array_equal(got.velocities, [1.0, 2.0])
    np.testing.assert_array_equal(got.efforts, [0.5, 0.25])


def test_sequences_are_accepted_as_arrays() -> None:
    _, got = decode(datagram(JointCommand(positions=[0.5, 1], gripper=1)))  # type: ignore[arg-type]
    assert got.positions.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(got.positions, [0.5, 1.0])
    assert got.gripper == 1.0
    _, pose = decode(datagram(PoseCommand(position=[1, 2, 3], orientation=(0, 0, 0, 1))))  # type: ignore[arg-type]
    np.testing.assert_array_equal(pose.orientation, [0, 0, 0, 1])


def test_absent_optional_fields_decode_as_none() -> None:
    _, got = decode(datagram(JointState(positions=np.zeros(2))))
    assert got.velocities is None and got.efforts is None and got.gripper is None
    _, pose = decode(datagram(PoseCommand(position=np.zeros(3), orientation=np.zeros(4))))
    assert pose.gripper is None


def test_telemetry_counters_wrap_at_2_32() -> None:
    msg = Telemetry(mode=RobotMode.ACTIVE, counters=Counters(received=2**32 + 5, applied=-1))
    _, got = decode(datagram(msg))
    assert got.counters.received == 5
    assert got.counters.applied == 2**32 - 1


# ---------------------------------------------------------------------------------------------
# The hex examples in docs/protocol.md

EXAMPLE_SESSION = 0x1A2B3C4D
EXAMPLES: dict[str, tuple[Any, int, int, int]] = {
    # name: (message, stream, seq, send_time_ns)
    "HEARTBEAT": (Heartbeat(role=Role.STATION, mode=RobotMode.STOPPED), 2, 7, 1_000_000_000),
    "JOINT_COMMAND": (
        JointCommand(positions=np.array([0.5, -1.25, 2.0]), gripper=0.75),
        1,
        42,
        1_000_500_000,
    ),
    "POSE_COMMAND": (
        PoseCommand(position=np.array([0.5, 0.0, 0.25]), orientation=np.array([0.0, 0, 0, 1])),
        1,
        43,
        1_002_500_000,
    ),
    "BASE_VELOCITY_COMMAND": (BaseVelocityCommand(vx=0.5, vy=0.0, wz=-0.25), 1, 44, 1_004_500_000),
    "JOINT_STATE": (
        JointState(
            positions=np.array([0.5, -1.25], dtype=np.float32),
            velocities=np.array([0.0, 0.125], dtype=np.float32),
        ),
        17,
        300,
        5_000_000_000,
    ),
    "BASE_STATE": (
        BaseState(x=1.5, y=-0.5, theta=0.25, vx=0.5, vy=0.0, wz=0.0),
        18,
        300,
        5_000_000_000,
    ),
    "FORCE_TORQUE": (
        ForceTorque(
            sensor=0,
            time_ns=4_999_000_000,
            force=np.array([0.0, 0.0, -9.75]),
            torque=np.array([0.5, 0.0, 0.0]),
        ),
        19,
        300,
        5_000_000_000,
    ),
    "TELEMETRY": (
        Telemetry(
            mode=RobotMode.ACTIVE,
            command_stream=1,
            command_seq=42,
            command_sent_ns=1_000_500_000,
            received_ns=4_990_250_000,
            decoded_ns=4_990_270_000,
            applied_ns=4_991_000_000,
            actuated_ns=4_991_400_000,
            actuated_known=True,
            counters=Counters(
                received=63,
                malformed=1,
                duplicate=2,
                stale=3,
                dropped=0,
                superseded=4,
                rejected=0,
                clamped=5,
                applied=38,
                forged=6,
                unknown_session=7,
            ),
        ),
        16,
        300,
        5_000_000_000,
    ),
}


def doc_examples(label: str = "Example") -> list[tuple[str, bytes]]:
    """The hex blocks of docs/protocol.md introduced by ``<label>: NAME``, in order."""
    pattern = re.compile(
        rf"^{label}: (\w+)[ \t]*\n\s*```hex[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL
    )
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    return [(name, bytes.fromhex(block)) for name, block in pattern.findall(text)]


def test_protocol_md_has_exactly_one_example_per_message_type() -> None:
    names = [name for name, _ in doc_examples()]
    assert sorted(names) == sorted(t.name for t in MessageType)
    assert set(EXAMPLES) == {t.name for t in MessageType}


@pytest.mark.parametrize("name", [t.name for t in MessageType])
def test_protocol_md_example(name: str) -> None:
    (data,) = [data for n, data in doc_examples() if n == name]
    message, stream, seq, sent = EXAMPLES[name]
    fields = {"stream": stream, "session": EXAMPLE_SESSION, "seq": seq, "send_time_ns": sent}

    header, decoded = decode(data)
    assert header == Header(type=MessageType[name], **fields)
    assert_same(message, decoded)
    assert bytes(encode(message, **fields)) == data


# ---------------------------------------------------------------------------------------------
# Decoding gives read-only views, not copies

FULL_JOINTS = JointCommand(
    positions=np.array([0.1, 0.2, 0.3]),
    velocities=np.array([1.0, 2.0, 3.0], dtype=np.float32),
    efforts=np.array([-1.0, -2.0, -3.0]),
    gripper=0.5,
)


def _arrays(message: Any) -> list[np.ndarray[Any, Any]]:
    values = [getattr(message, f.name) for f in dataclasses.fields(message)]
    return [v for v in values if isinstance(v, np.ndarray)]


VIEW_MESSAGES = [
    FULL_JOINTS,
    JointState(positions=np.arange(4.0, dtype=np.float32)),
    PoseCommand(position=np.ones(3), orientation=np.array([0.0, 0, 0, 1])),
    ForceTorque(sensor=1, time_ns=5, force=np.ones(3), torque=np.zeros(3)),
]


@pytest.mark.parametrize("message", VIEW_MESSAGES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_decoded_arrays_are_read_only_views(message: Any, kind: str) -> None:
    raw = datagram(message)
    data: bytes | bytearray | memoryview
    if kind == "bytes":
        data = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    else:
        data = memoryview(bytearray(raw))
    whole = np.frombuffer(data, dtype=np.uint8)
    _, decoded = decode(data)
    arrays = _arrays(decoded)
    assert arrays
    for a in arrays:
        assert np.shares_memory(a, whole)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a.flags.writeable = True
        with pytest.raises(ValueError):
            a[...] = 0


def test_decoded_array_sees_changes_to_the_receive_buffer() -> None:
    buf = bytearray(datagram(JointCommand(positions=np.array([1.0, 2.0]))))
    _, decoded = decode(buf)
    buf[-8:] = struct.pack("<d", 7.5)  # the last value of positions
    assert decoded.positions[1] == 7.5


def test_decode_accepts_any_bytes_like_layout() -> None:
    raw = datagram(FULL_JOINTS)
    reference = decode(raw)
    as_chars = memoryview(raw).cast("c")
    as_2d = np.frombuffer(raw, dtype=np.uint8).reshape(2, -1)
    spaced = np.zeros(2 * len(raw), dtype=np.uint8)
    spaced[::2] = np.frombuffer(raw, dtype=np.uint8)  # a non-contiguous buffer: copied
    layouts: list[Any] = [as_chars, as_2d, spaced[::2], np.frombuffer(raw, dtype=np.uint8)]
    for data in layouts:
        header, message = decode(data)
        assert header == reference.header
        assert_same(reference.message, message)


# ---------------------------------------------------------------------------------------------
# Malformed datagrams: DecodeError naming the problem

JOINTS = datagram(JointCommand(positions=np.array([1.0, 2.0, 3.0])))
HEARTBEAT = datagram(Heartbeat(role=Role.STATION))
POSE = datagram(PoseCommand(position=np.zeros(3), orientation=np.array([0.0, 0, 0, 1])))
FORCE = datagram(ForceTorque(sensor=0, time_ns=0, force=np.zeros(3), torque=np.zeros(3)))
TELEMETRY = datagram(Telemetry(mode=RobotMode.ACTIVE))


def patched(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def with_body(data: bytes, body: bytes) -> bytes:
    """`data`'s header with another body, and the header's body length to match."""
    return patched(data[:HEADER_SIZE], 12, "<H", len(body)) + body


B = HEADER_SIZE  # body offset in the datagram

MALFORMED = {
    "empty": (b"", r"datagram is truncated: 0 bytes"),
    "short header": (JOINTS[:31], r"datagram is truncated: 31 bytes < 32-byte header"),
    "bad magic": (patched(JOINTS, 0, "2s", b"TQ"), r"magic is invalid"),
    "old version": (patched(JOINTS, 2, "<B", 1), r"version 1 is not supported \(.* speaks 2\)"),
    "newer version": (patched(JOINTS, 2, "<B", 3), r"version 3 is not supported"),
    "unknown type": (patched(JOINTS, 3, "<B", 0x7F), r"message type 0x7f is unknown"),
    "flags": (patched(JOINTS, 4, "<H", 0x0100), r"flags 0x0100 has unknown bits set"),
    "header reserved": (patched(JOINTS, 14, "<H", 1), r"reserved header field is not zero"),
    "truncated body": (JOINTS[:-1], r"datagram is truncated: header says body length 40"),
    "trailing bytes": (JOINTS + b"\0", r"datagram has trailing bytes"),
    "joint trailing bytes": (with_body(JOINTS, JOINTS[B:] + b"\0"), r"body has 1 trailing bytes"),
    "joint body short": (with_body(JOINTS, b"\0" * 11), r"JOINT_COMMAND body length is invalid"),
    "joint array header truncated": (
        with_body(JOINTS, b"\0" * 14),
        r"positions array header is truncated",
    ),
    "joint reserved": (patched(JOINTS, B + 2, "<B", 1), r"JOINT_COMMAND reserved bytes"),
    "present bits": (patched(JOINTS, B, "<B", 0x08), r"present bits 0x08 are invalid"),
    "velocities bit without array": (
        patched(JOINTS, B, "<B", 0x01),
        r"velocities array header is truncated",
    ),
    "gripper not present": (patched(JOINTS, B + 4, "<d", 0.5), r"gripper is set but not marked"),
    "gripper -0.0": (patched(JOINTS, B + 4, "<d", -0.0), r"gripper is set but not marked"),
    "gripper nan": (patched(JOINTS, B + 4, "<d", float("nan")), r"gripper is set but not"),
    "element size": (patched(JOINTS, B + 14, "<B", 3), r"positions element size 3 is invalid"),
    "array reserved": (patched(JOINTS, B + 15, "<B", 1), r"array reserved byte is not zero"),
    "array length": (patched(JOINTS, B + 12, "<H", 4), r"positions array length is invalid"),
    "velocities length": (
        with_body(
            JOINTS,
            struct.pack("<B3xd", 0x01, 0.0)
            + struct.pack("<HBB2d", 2, 8, 0, 1.0, 2.0)
            + struct.pack("<HBBd", 1, 8, 0, 1.0),
        ),
        r"velocities array length is invalid: 1 != 2 positions",
    ),
    "efforts length": (
        with_body(
            JOINTS,
            struct.pack("<B3xd", 0x02, 0.0)
            + struct.pack("<HBBd", 1, 8, 0, 1.0)
            + struct.pack("<HBB", 0, 4, 0),
        ),
        r"efforts array length is invalid: 0 != 1 positions",
    ),
    "heartbeat length": (with_body(HEARTBEAT, b"\x01\x00"), r"HEARTBEAT body length is invalid"),
    "heartbeat reserved": (patched(HEARTBEAT, B + 2, "<H", 1), r"HEARTBEAT reserved"),
    "heartbeat role": (patched(HEARTBEAT, B, "<B", 3), r"HEARTBEAT role 3 is invalid"),
    "heartbeat mode": (patched(HEARTBEAT, B + 1, "<B", 7), r"HEARTBEAT mode 7 is invalid"),
    "pose length": (with_body(POSE, POSE[B:-1]), r"POSE_COMMAND body length is invalid: 67"),
    "pose present": (patched(POSE, B, "<B", 0x01), r"POSE_COMMAND present bits 0x01"),
    "pose frame": (patched(POSE, B + 1, "<B", 1), r"POSE_COMMAND frame 1 is unknown"),
    "pose reserved": (patched(POSE, B + 2, "<H", 1), r"POSE_COMMAND reserved"),
    "pose gripper": (patched(POSE, B + 4, "<d", -0.0), r"POSE_COMMAND gripper is set but not"),
    "force reserved": (patched(FORCE, B + 2, "<H", 1), r"FORCE_TORQUE reserved"),
    "telemetry reserved": (patched(TELEMETRY, B + 4, "<I", 1), r"TELEMETRY reserved"),
    "telemetry flags": (patched(TELEMETRY, B + 3, "<B", 0x04), r"TELEMETRY flags 0x04"),
    "telemetry mode": (patched(TELEMETRY, B + 2, "<B", 3), r"TELEMETRY mode 3 is invalid"),
    "telemetry has-command without seq": (
        patched(TELEMETRY, B + 3, "<B", 0x01),
        r"has-command flag disagrees",
    ),
    "telemetry seq without has-command": (
        patched(TELEMETRY, B + 8, "<Q", 5),
        r"has-command flag disagrees",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_datagram_raises_decode_error_naming_the_problem(name: str) -> None:
    data, message = MALFORMED[name]
    with pytest.raises(DecodeError, match=message):
        decode(data)


def test_decode_error_is_a_remote_protocol_error_and_a_value_error() -> None:
    from telepresence.exceptions import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        decode(b"garbage")
    with pytest.raises(ValueError):
        decode(b"garbage")


# ---------------------------------------------------------------------------------------------
# Encoding what the wire cannot carry: LocalProtocolError

OK_HEADER = {"stream": 1, "session": 1, "seq": 1, "send_time_ns": 0}
BAD_HEADERS: dict[str, dict[str, Any]] = {
    "stream": {**OK_HEADER, "stream": 2**16},
    "session": {**OK_HEADER, "session": 2**32},
    "negative seq": {**OK_HEADER, "seq": -1},
    "seq": {**OK_HEADER, "seq": 2**64},
    "send time": {**OK_HEADER, "send_time_ns": 2**63},
    "float stream": {**OK_HEADER, "stream": 1.5},
}


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_encode_rejects_out_of_range_header_fields(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode(Heartbeat(role=Role.STATION), **BAD_HEADERS[name])


BAD_MESSAGES: dict[str, tuple[Any, str]] = {
    "not a message": (object(), r"object is not a wire message"),
    "2-D positions": (JointCommand(positions=np.zeros((2, 3))), r"one-dimensional"),
    "complex positions": (JointCommand(positions=np.zeros(3, dtype=complex)), r"real numbers"),
    "string positions": (JointCommand(positions=np.array(["a"])), r"real numbers"),
    "ragged positions": (JointCommand(positions=[[1.0], [1.0, 2.0]]), r"not an array"),  # type: ignore[arg-type]
    "velocities length": (
        JointCommand(positions=np.zeros(3), velocities=np.zeros(2)),
        r"velocities must have 3 values like positions",
    ),
    "efforts length": (
        JointState(positions=np.zeros(3), efforts=np.zeros(4)),
        r"efforts must have 3 values like positions",
    ),
    "too many joints": (JointCommand(positions=np.zeros(70_000)), r"length is invalid"),
    "gripper not a number": (JointCommand(positions=np.zeros(1), gripper="open"), r"cannot encode"),  # type: ignore[arg-type]
    "pose position shape": (
        PoseCommand(position=np.zeros(2), orientation=np.zeros(4)),
        r"PoseCommand.position must have 3 values",
    ),
    "pose orientation dtype": (
        PoseCommand(position=np.zeros(3), orientation=np.zeros(4, dtype=complex)),
        r"real numbers",
    ),
    "force shape": (
        ForceTorque(sensor=0, time_ns=0, force=np.zeros(4), torque=np.zeros(3)),
        r"ForceTorque.force must have 3 values",
    ),
    "sensor range": (
        ForceTorque(sensor=2**16, time_ns=0, force=np.zeros(3), torque=np.zeros(3)),
        r"cannot encode",
    ),
    "heartbeat role": (Heartbeat(role=9), r"Heartbeat.role 9 is not a Role"),  # type: ignore[arg-type]
    "heartbeat mode": (Heartbeat(role=Role.ROBOT, mode=5), r"Heartbeat.mode"),  # type: ignore[arg-type]
    "telemetry mode": (Telemetry(mode=5), r"Telemetry.mode 5"),  # type: ignore[arg-type]
    "telemetry seq": (Telemetry(mode=RobotMode.ACTIVE, command_seq=2**64), r"cannot encode"),
    "telemetry counters": (Telemetry(mode=RobotMode.ACTIVE, counters={}), r"cannot encode"),  # type: ignore[arg-type]
    "base velocity": (BaseVelocityCommand(vx="fast"), r"cannot encode"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_encode_rejects_what_the_wire_cannot_carry(name: str) -> None:
    message, match = BAD_MESSAGES[name]
    with pytest.raises(LocalProtocolError, match=match):
        encode(message, **OK_HEADER)


def test_encode_into_rejects_a_buffer_that_is_too_small() -> None:
    message = JointCommand(positions=np.zeros(3))
    buf = bytearray(encoded_size(message) - 1)
    with pytest.raises(LocalProtocolError, match="buffer is too small"):
        encode_into(buf, message, **OK_HEADER)
    assert len(buf) == encoded_size(message) - 1  # not grown


def test_encode_into_a_memoryview_at_an_offset() -> None:
    message = FULL_JOINTS
    backing = bytearray(300)
    n = encode_into(memoryview(backing)[10:], message, **OK_HEADER)
    assert bytes(backing[10 : 10 + n]) == bytes(encode(message, **OK_HEADER))


@pytest.mark.parametrize("gripper", [None, 0.25])
def test_fast_decoded_joint_commands_are_whole_dataclasses(gripper: float | None) -> None:
    # The fused decode paths build JointCommand without its __init__: every field the dataclass
    # has must still be set, to the value the constructor would give. A new field fails here.
    positions = np.linspace(-1.0, 1.0, 6)
    command = JointCommand(positions=positions, gripper=gripper)
    plain = bytes(encode(command, stream=1, session=2, seq=3, send_time_ns=4))
    keys = SessionKeys.derive(bytes(32), 2)
    sealed = keys.sealer(Role.STATION).seal(command, stream=1, seq=3, send_time_ns=4)
    for decoded in (decode(plain).message, keys.opener(Role.ROBOT).open(sealed).message):
        assert type(decoded) is JointCommand
        expected = JointCommand(positions=decoded.positions, gripper=gripper)
        for field in dataclasses.fields(JointCommand):
            assert getattr(decoded, field.name) is getattr(expected, field.name) or (
                getattr(decoded, field.name) == getattr(expected, field.name)
            ), field.name
        np.testing.assert_array_equal(decoded.positions, positions)
        assert decoded == expected
