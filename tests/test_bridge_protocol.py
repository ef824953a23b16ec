"""The bridge's wire format and the endpoint's side of the protocol (sans-IO, pumped by hand)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.api import (
    BaseVelocityCommand,
    ControlMode,
    ForceTorque,
    JointCommand,
    JointSpec,
    JointState,
    Manifest,
    PoseCommand,
    RobotState,
    SensorKind,
    SensorSpec,
)
from robots.bridge import BridgeConfig, BridgeProtocolError, DriverUnavailable
from robots.bridge.link import BridgeLink, LinkStatus
from robots.bridge.protocol import (
    PROTOCOL_VERSION,
    TO_DRIVER,
    MessageType,
    command_from_json,
    command_to_json,
    decode,
    encode,
    manifest_from_json,
    state_from_json,
    state_to_json,
)
from robots.sim_arm import SimArm
from robots.sim_base import SimBase

MS = 1_000_000
ARM = SimArm().manifest


# -- codec ---------------------------------------------------------------------------------------


def test_frames_are_a_type_and_compact_json() -> None:
    frames = encode(MessageType.HOLD, {"now_ns": 12})
    assert frames == [b"hold", b'{"now_ns":12}']
    assert decode(frames, TO_DRIVER) == (MessageType.HOLD, {"now_ns": 12})
    assert encode(MessageType.PING) == [b"ping", b"{}"]
    with pytest.raises(ValueError):
        encode(MessageType.HOLD, {"x": float("nan")})


def test_joint_command_bytes_fixture() -> None:
    command = JointCommand(positions=np.array([0.5, -1.0]), gripper=0.25, ref=9)
    body = encode(MessageType.APPLY, command_to_json(command, 1_000))[1]
    assert body == (
        b'{"now_ns":1000,"mode":"joint_position","ref":9,"positions":[0.5,-1.0],'
        b'"velocities":null,"efforts":null,"gripper":0.25}'
    )


@pytest.mark.parametrize(
    "command",
    [
        JointCommand(
            positions=np.array([0.1, 0.2], dtype=np.float32),
            velocities=np.array([1.0, -1.0]),
            efforts=np.array([0.0, 2.0]),
            gripper=0.5,
            ref=3,
        ),
        JointCommand(positions=np.array([0.1, 0.2]), ref=4),
        PoseCommand(position=np.array([0.3, 0.0, 0.2]), orientation=np.array([0, 0, 0, 1.0])),
        BaseVelocityCommand(vx=0.5, vy=0.1, wz=-1.0, ref=2**40),
    ],
)
def test_commands_round_trip(command: Any) -> None:
    body = json.loads(json.dumps(command_to_json(command, 77)))
    back, now = command_from_json(body)
    assert now == 77 and type(back) is type(command) and back.ref == command.ref
    for name in ("positions", "velocities", "efforts", "position", "orientation"):
        if hasattr(command, name) and getattr(command, name) is not None:
            np.testing.assert_array_equal(getattr(back, name), getattr(command, name))
    for name in ("gripper", "vx", "vy", "wz"):
        if hasattr(command, name):
            assert getattr(back, name) == getattr(command, name)


@pytest.mark.parametrize("manifest", [SimArm().manifest, SimBase().manifest], ids=["arm", "base"])
def test_manifests_round_trip(manifest: Manifest) -> None:
    assert manifest_from_json(json.loads(json.dumps(manifest.to_dict()))) == manifest


def test_manifest_with_infinite_effort_and_sensor_params_round_trips() -> None:
    manifest = Manifest(
        robot_id="x",
        kind="arm",
        control_modes=(ControlMode.JOINT_POSITION,),
        control_rate_hz=100.0,
        joints=(JointSpec(name="a", lower=-1, upper=1, max_velocity=1),),
        sensors=(SensorSpec(name="cam", kind=SensorKind.CAMERA, params={"width": 640}),),
    )
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["joints"][0]["max_effort"] is None
    assert manifest_from_json(data) == manifest


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"robot_id": ""}, "robot_id"),
        ({"control_modes": ["fly"]}, "fly"),
        ({"joints": [{"name": "a", "lower": 1, "upper": 0, "max_velocity": 1}]}, "lower"),
        ({"control_rate_hz": "fast"}, "control_rate_hz"),
        ({"joints": "six"}, "joints"),
    ],
)
def test_bad_manifests_are_protocol_errors(change: dict[str, Any], words: str) -> None:
    with pytest.raises(BridgeProtocolError, match=words):
        manifest_from_json({**ARM.to_dict(), **change})


def test_states_round_trip_against_the_manifest() -> None:
    state = RobotState(
        time_ns=5,
        joints=JointState(positions=np.arange(6.0), velocities=np.zeros(6), gripper=0.5),
        wrenches=[ForceTorque(sensor=0, time_ns=4, force=np.ones(3), torque=np.zeros(3))],
        actuated_ref=3,
        actuated_ns=4,
    )
    back = state_from_json(json.loads(json.dumps(state_to_json(state))), ARM)
    assert back.time_ns == 5 and back.actuated_ref == 3 and back.actuated_ns == 4
    assert back.joints is not None and back.joints.gripper == 0.5 and back.joints.efforts is None
    np.testing.assert_array_equal(back.joints.positions, np.arange(6.0))
    assert back.wrenches[0].sensor == 0
    np.testing.assert_array_equal(back.wrenches[0].force, np.ones(3))
    base = SimBase()
    base.connect(0)
    base_state = base.read(0)
    back = state_from_json(json.loads(json.dumps(state_to_json(base_state))), base.manifest)
    assert back.base == base_state.base and back.joints is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"joints": None}, "state.joints"),
        ({"base": {"x": 0, "y": 0, "theta": 0}}, "no base"),
        ({"wrenches": [{"sensor": 1, "time_ns": 0, "force": [0, 0, 0], "torque": [0, 0, 0]}]}, "1"),
        ({"actuated_ref": "7"}, "actuated_ref"),
        ({"joints": {"positions": [10**400] + [0] * 5, "gripper": 0}}, "finite"),
        ({"time_ns": None}, "time_ns"),
    ],
)
def test_states_that_break_the_manifest_are_protocol_errors(
    change: dict[str, Any], words: str
) -> None:
    good = {"time_ns": 1, "joints": {"positions": [0] * 6, "gripper": 0}}
    state_from_json(good, ARM)
    with pytest.raises(BridgeProtocolError, match=words):
        state_from_json({**good, **change}, ARM)


FIELDS = ["time_ns", "joints", "base", "wrenches", "actuated_ref", "positions", "gripper"]
FIELDS += ["sensor", "force", "mode", "now_ns", "robot_id", "control_modes", "x", "theta"]
huge = st.integers(min_value=10**300, max_value=10**400)
scalars = st.none() | st.booleans() | st.integers() | huge | st.floats() | st.sampled_from(FIELDS)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.sampled_from(FIELDS), inner),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=32), max_size=3),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
)
def test_parsers_raise_only_protocol_errors(frames: list[bytes], body: dict[str, Any]) -> None:
    for parse in (
        lambda: decode(frames),
        lambda: state_from_json(body, ARM),
        lambda: state_from_json({"time_ns": 1, "joints": body}, ARM),
        lambda: manifest_from_json(body),
        lambda: command_from_json(body),
    ):
        with contextlib.suppress(BridgeProtocolError):
            parse()


# -- the link, pumped by hand --------------------------------------------------------------------


class FakeProcess:
    """Answers the link's messages like a driver process would, by hand."""

    def __init__(self, manifest: Manifest = ARM) -> None:
        self.manifest = manifest
        self.positions = [0.0] * 6

    def state(self, t: int = 0) -> dict[str, Any]:
        return {"time_ns": t, "joints": {"positions": self.positions, "gripper": 0.0}}

    def answer(self, link: BridgeLink, now: int) -> list[str]:
        """Reply to everything the link sent; return the types it sent."""
        sent = []
        for frames in link.frames_to_send():
            mtype, body = decode(frames, TO_DRIVER)
            sent.append(mtype.value)
            if mtype is MessageType.HELLO:
                reply = {
                    "id": body["id"],
                    "protocol": PROTOCOL_VERSION,
                    "manifest": self.manifest.to_dict(),
                    "reports_actuation": True,
                }
                link.receive(encode(MessageType.MANIFEST, reply), now)
            elif mtype is MessageType.CONNECT:
                reply = {"id": body["id"], "state": self.state(now)}
                link.receive(encode(MessageType.CONNECTED, reply), now)
        return sent


def status(link: BridgeLink) -> LinkStatus:
    """The link's status (a call, so that mypy does not narrow it across calls that change it)."""
    return link.status


def make_link() -> BridgeLink:
    return BridgeLink("ipc://x", liveness_ns=200 * MS, heartbeat_ns=50 * MS, retry_ns=100 * MS)


def live_link(process: FakeProcess, now: int = 0) -> BridgeLink:
    link = make_link()
    link.connect(now)
    assert process.answer(link, now) == ["hello"]
    assert process.answer(link, now) == ["connect"]
    assert status(link) is LinkStatus.LIVE
    return link


def test_liveness_is_exact_to_the_nanosecond() -> None:
    process = FakeProcess()
    link = live_link(process)
    link.receive(encode(MessageType.STATE, process.state(10 * MS)), 10 * MS)
    link.require_live(210 * MS)  # exactly liveness_ns of silence: still live
    with pytest.raises(DriverUnavailable, match="no message for more than 200 ms"):
        link.require_live(210 * MS + 1)
    assert status(link) is LinkStatus.SYNCING and link.losses == 1
    assert [decode(f, TO_DRIVER)[0] for f in link.frames_to_send()] == [MessageType.HELLO]


def test_ping_only_when_nothing_was_sent_for_heartbeat() -> None:
    link = live_link(FakeProcess())
    link.poll(49 * MS)
    assert link.frames_to_send() == []
    link.applied(1, 30 * MS)
    link.poll(79 * MS)
    assert link.frames_to_send() == []
    link.receive(encode(MessageType.HEARTBEAT, {}), 79 * MS)
    link.poll(80 * MS)
    assert [decode(f, TO_DRIVER)[0] for f in link.frames_to_send()] == [MessageType.PING]


def test_resync_retries_hello_then_checks_the_manifest_and_connects() -> None:
    process = FakeProcess()
    link = live_link(process)
    link.poll(300 * MS)  # silent since 0: lost
    assert status(link) is LinkStatus.SYNCING
    link.frames_to_send()  # that hello got lost with the old process
    link.poll(399 * MS)
    assert link.frames_to_send() == []
    link.poll(400 * MS)  # retry_ns later: hello again
    process.positions = [0.25] * 6
    assert process.answer(link, 400 * MS) == ["hello"]
    assert process.answer(link, 401 * MS) == ["connect"]
    assert status(link) is LinkStatus.LIVE and link.recoveries == 1
    state = link.take_state(402 * MS)
    assert state.time_ns == 402 * MS and state.joints is not None
    np.testing.assert_allclose(state.joints.positions, 0.25)


def test_a_different_manifest_is_not_taken_back() -> None:
    link = live_link(FakeProcess())
    link.poll(300 * MS)
    other = SimArm(SimArm.config_class(robot_id="another-arm")).manifest
    assert FakeProcess(other).answer(link, 300 * MS) == ["hello"]
    assert status(link) is LinkStatus.SYNCING
    with pytest.raises(DriverUnavailable, match="different manifest"):
        link.require_live(301 * MS)
    link.poll(400 * MS)  # and it keeps asking, in case the right one comes back
    assert FakeProcess().answer(link, 400 * MS) == ["hello"]
    assert FakeProcess().answer(link, 400 * MS) == ["connect"]
    assert status(link) is LinkStatus.LIVE


def test_replies_to_old_requests_are_ignored() -> None:
    link = make_link()
    link.fetch_manifest(0)
    link.poll(100 * MS)  # a second hello, id 2
    frames = link.frames_to_send()
    assert [json.loads(f[1])["id"] for f in frames] == [1, 2]
    reply = {"id": 1, "protocol": PROTOCOL_VERSION, "manifest": ARM.to_dict()}
    link.receive(encode(MessageType.MANIFEST, reply), 101 * MS)
    assert status(link) is LinkStatus.SYNCING  # still waiting for the reply to hello 2
    link.receive(encode(MessageType.MANIFEST, {**reply, "id": 2}), 101 * MS)
    assert link.manifest == ARM and status(link) is LinkStatus.IDLE


def test_actuation_outside_the_refs_sent_since_connect_is_not_passed_on() -> None:
    process = FakeProcess()
    link = live_link(process)
    state = {**process.state(1), "actuated_ref": 500, "actuated_ns": 1}
    link.receive(encode(MessageType.STATE, state), 1)
    assert link.take_state(2).actuated_ref is None  # from an earlier session of that process
    link.applied(10, 3)
    link.receive(encode(MessageType.STATE, {**state, "actuated_ref": 10, "actuated_ns": 4}), 5)
    assert (link.take_state(6).actuated_ref, link.take_state(6).actuated_ns) == (10, 4)


def test_wrenches_accumulate_between_reads() -> None:
    process = FakeProcess()
    link = live_link(process)
    for t in range(1, 4):
        wrench = {"sensor": 0, "time_ns": t, "force": [0, 0, t], "torque": [0, 0, 0]}
        link.receive(encode(MessageType.STATE, {**process.state(t), "wrenches": [wrench]}), t)
    assert [w.time_ns for w in link.take_state(4).wrenches] == [1, 2, 3]
    assert link.take_state(5).wrenches == []


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"endpoint": "udp://x"}, "ipc://PATH or tcp://"),
        ({"endpoint": "ipc://"}, "1 to 107 bytes"),
        ({"endpoint": "ipc:///" + "x" * 200}, "1 to 107 bytes"),
        ({"liveness_ms": 1}, "liveness_ms"),
        ({"startup_timeout_ms": 0}, "startup_timeout_ms"),
    ],
)
def test_config_names_the_bad_field(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        BridgeConfig(**options)
