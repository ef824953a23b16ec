"""Fuzzing the decoder: whatever the bytes, `decode` either returns a message or raises
`DecodeError`, never anything else; and what it accepts re-encodes to the very same bytes (every
message has exactly one encoding, so a receiver and a re-sender agree on what was said)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from helpers import fix_length, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robots.api import (
    BaseState,
    BaseVelocityCommand,
    ForceTorque,
    JointCommand,
    JointState,
    PoseCommand,
)
from telepresence.exceptions import DecodeError
from telepresence.wire import (
    MAGIC,
    VERSION,
    Counters,
    Heartbeat,
    MessageType,
    RobotMode,
    Role,
    Telemetry,
    decode,
    encode,
)

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> bool:
    """Decode `data`: DecodeError, or a message that encodes back to `data`. True if valid."""
    try:
        header, message = decode(data)
    except DecodeError:
        return False
    again = encode(
        message,
        stream=header.stream,
        session=header.session,
        seq=header.seq,
        send_time_ns=header.send_time_ns,
    )
    assert bytes(again) == data, f"not canonical: {data.hex()} re-encodes as {again.hex()}"
    return True


# ---------------------------------------------------------------------------------------------
# Valid datagrams of every type, to mutate

FINITE = st.floats(-1e6, 1e6, width=32)
ODD_FLOAT = st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 5e-324])
FLOAT = FINITE | ODD_FLOAT


@st.composite
def arrays(draw: st.DrawFn, n: int) -> Any:
    dtype = draw(st.sampled_from(["<f4", "<f8"]))
    return np.array(draw(st.lists(FLOAT, min_size=n, max_size=n)), dtype=dtype)


@st.composite
def joints(draw: st.DrawFn, cls: type) -> Any:
    n = draw(st.integers(0, 7))
    return cls(
        positions=draw(arrays(n)),
        velocities=draw(st.none() | arrays(n)),
        efforts=draw(st.none() | arrays(n)),
        gripper=draw(st.none() | FLOAT),
    )


def vec(n: int) -> st.SearchStrategy[Any]:
    return st.lists(FLOAT, min_size=n, max_size=n).map(np.array)


I64 = st.integers(-(2**63), 2**63 - 1)
MESSAGES: dict[MessageType, st.SearchStrategy[Any]] = {
    MessageType.HEARTBEAT: st.builds(
        Heartbeat, role=st.sampled_from(Role), mode=st.sampled_from(RobotMode)
    ),
    MessageType.JOINT_COMMAND: joints(JointCommand),
    MessageType.POSE_COMMAND: st.builds(
        PoseCommand, position=vec(3), orientation=vec(4), gripper=st.none() | FLOAT
    ),
    MessageType.BASE_VELOCITY_COMMAND: st.builds(BaseVelocityCommand, vx=FLOAT, vy=FLOAT, wz=FLOAT),
    MessageType.JOINT_STATE: joints(JointState),
    MessageType.BASE_STATE: st.builds(
        BaseState, x=FLOAT, y=FLOAT, theta=FLOAT, vx=FLOAT, vy=FLOAT, wz=FLOAT
    ),
    MessageType.FORCE_TORQUE: st.builds(
        ForceTorque, sensor=st.integers(0, 2**16 - 1), time_ns=I64, force=vec(3), torque=vec(3)
    ),
    MessageType.TELEMETRY: st.builds(
        Telemetry,
        mode=st.sampled_from(RobotMode),
        command_stream=st.integers(0, 2**16 - 1),
        command_seq=st.integers(0, 2**64 - 1),
        command_sent_ns=I64,
        received_ns=I64,
        actuated_known=st.booleans(),
        counters=st.builds(Counters, **dict.fromkeys(Counters.FIELDS, st.integers(0, 2**32 - 1))),
    ),
}


@st.composite
def valid_datagrams(draw: st.DrawFn) -> bytes:
    mtype = draw(st.sampled_from(MessageType))
    message = draw(MESSAGES[mtype])
    return bytes(
        encode(
            message,
            stream=draw(st.integers(0, 2**16 - 1)),
            session=draw(st.integers(0, 2**32 - 1)),
            seq=draw(st.integers(0, 2**64 - 1)),
            send_time_ns=draw(I64),
        )
    )


def test_every_message_type_is_fuzzed() -> None:
    assert set(MESSAGES) == set(MessageType)


# ---------------------------------------------------------------------------------------------
# Mutations


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_datagrams()))
    return mutate(draw, data)


@st.composite
def random_bodies(draw: st.DrawFn) -> bytes:
    """A valid header of a random type with random body bytes."""
    mtype = draw(st.sampled_from(MessageType))
    body = draw(st.binary(max_size=160))
    header = struct.pack("<2sBBHHIHHQq", MAGIC, VERSION, mtype, 0, 1, 2, len(body), 0, 3, 4)
    return header + body


# ---------------------------------------------------------------------------------------------
# Properties


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(data=random_bodies())
def test_random_bodies_behind_a_valid_header(data: bytes) -> None:
    check(data)


@FUZZ
@given(data=mutated())
def test_mutated_datagrams(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(data=valid_datagrams())
def test_valid_datagrams_decode(data: bytes) -> None:
    assert check(data)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_every_single_bit_flip_and_truncation(mtype: MessageType) -> None:
    """Exhaustive over one full-featured datagram per type: each bit flipped, each prefix."""
    seeds = {
        MessageType.HEARTBEAT: Heartbeat(role=Role.ROBOT, mode=RobotMode.HOLDING),
        MessageType.JOINT_COMMAND: JointCommand(
            positions=np.array([0.5, -1.0]),
            velocities=np.array([1.0, 2.0], dtype=np.float32),
            efforts=np.array([0.0, -0.0]),
            gripper=0.25,
        ),
        MessageType.POSE_COMMAND: PoseCommand(
            position=np.array([1.0, 2.0, 3.0]), orientation=np.array([0.0, 0, 0, 1]), gripper=1.0
        ),
        MessageType.BASE_VELOCITY_COMMAND: BaseVelocityCommand(vx=0.5, vy=-0.5, wz=1.0),
        MessageType.JOINT_STATE: JointState(
            positions=np.array([1.0], dtype=np.float32), efforts=np.array([3.0])
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
    seed = bytes(encode(seeds[mtype], stream=1, session=0xCAFE, seq=77, send_time_ns=123))
    assert check(seed)
    for i in range(len(seed) * 8):
        flipped = bytearray(seed)
        flipped[i // 8] ^= 1 << (i % 8)
        check(bytes(flipped))
    for n in range(len(seed)):
        cut = bytearray(seed[:n])
        check(bytes(cut))
        fix_length(cut)
        check(bytes(cut))
