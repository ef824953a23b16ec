"""The data plane's sender: the scheduler between the cores and the sockets (telepresence.sender).

Real UDP on 127.0.0.1; the receiver asks for each datagram's TOS byte (``IP_RECVTOS``)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import numpy as np
import pytest

from robots.api import JointCommand
from robots.sim_arm import SimArm
from telepresence import aio
from telepresence.apps import run_station, serve_robot
from telepresence.endpoint import EndpointConfig, RobotCore
from telepresence.inputs import ScriptedInput
from telepresence.qos import Scheduler, StreamSpec, TrafficClass
from telepresence.security import SessionKeys
from telepresence.sender import (
    IPV4_UDP_OVERHEAD,
    PacedSender,
    local_grant,
    pacer_config,
    robot_specs,
    station_specs,
)
from telepresence.station import StationConfig, StationCore
from telepresence.streams import Stream
from telepresence.udp import open_udp
from telepresence.wire import RobotMode, Role, Telemetry, encode

IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # == SCM_TIMESTAMPNS (Linux)
EF, CS4, AF41, CS1 = 0xB8, 0x80, 0x88, 0x20


def _receiver() -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the kernel stamps each arrival
    rx.settimeout(5.0)
    return rx


def _received(rx: socket.socket, n: int) -> list[tuple[bytes, int, int]]:
    """`n` datagrams: payload, TOS byte, the kernel's arrival stamp (ns, CLOCK_REALTIME)."""
    out = []
    for _ in range(n):
        data, ancillary, _, _ = rx.recvmsg(2048, 128)
        cmsgs = {(level, kind): d for level, kind, d in ancillary}
        sec, nsec = struct.unpack("=qq", cmsgs[(socket.SOL_SOCKET, SO_TIMESTAMPNS)])
        out.append((data, cmsgs[(socket.IPPROTO_IP, socket.IP_TOS)][0], sec * 10**9 + nsec))
    return out


def _spec(stream: int, cls: TrafficClass, rate_bps: int, burst: int, size: int) -> Any:
    return local_grant(
        StreamSpec(stream=stream, traffic_class=cls, rate_bps=rate_bps, burst_bytes=burst,
                   max_packet_bytes=size)
    )  # fmt: skip


def test_each_class_leaves_with_its_mark_and_control_overtakes_held_video() -> None:
    rx = _receiver()
    capacity = 2_000_000  # 1200-byte datagrams: 4.9 ms each at this rate

    async def main() -> tuple[list[bool], bool, dict[str, Any], int]:
        udp = await open_udp(lambda *a: None, remote=rx.getsockname(), tos=EF)
        sender = PacedSender(Scheduler(pacer_config(capacity)))
        sender.grant([
            _spec(1, TrafficClass.CONTROL, 1_000_000, 2000, 200),
            _spec(16, TrafficClass.TELEMETRY, 1_000_000, 2000, 300),
            _spec(3, TrafficClass.VIDEO, 10_000_000, 100_000, 1300),
            _spec(5, TrafficClass.BULK, 10_000_000, 100_000, 1300),
        ])  # fmt: skip
        target = ((udp, None),)
        video = [sender.send(b"V%03d" % i + bytes(1196), 3, target) for i in range(10)]
        held_before = len(sender.scheduler)
        control = sender.send(b"C" + bytes(99), 1, target)  # offered after ten video datagrams
        held_after = len(sender.scheduler)
        sender.send(b"T" + bytes(199), 16, target)
        sender.send(b"B" + bytes(1199), 5, target)
        while len(sender.scheduler):
            await asyncio.sleep(0.005)
        sender.close()
        udp.transport.close()  # type: ignore[union-attr]
        return video, control and held_after == held_before, sender.summary(), held_before

    video, control_at_once, summary, held = aio.run(main())
    got = _received(rx, 13)
    rx.close()
    assert all(video) and control_at_once and held >= 8  # most of the video was held (paced)
    kinds = [d[:1] for d, _, _ in got]
    marks = {d[:1]: tos for d, tos, _ in got}
    assert marks == {b"V": AF41, b"C": EF, b"T": CS4, b"B": CS1}
    # The pacer's burst (1.5 ms of 2 Mbit/s: 3000 B) lets two video datagrams through; the
    # command offered after ten leaves before the eight still held, telemetry before the rest
    # of the video, bulk last.
    assert kinds.index(b"C") <= 2
    assert kinds.index(b"T") < kinds.index(b"V", kinds.index(b"C") + 1) or kinds.index(b"T") <= 3
    assert kinds[-1] == b"B"
    assert [d[:4] for d, _, _ in got if d[:1] == b"V"] == [b"V%03d" % i for i in range(10)]
    # Paced: 13 datagrams can not have left faster than the capacity allows past the burst.
    total = sum(len(d) + IPV4_UDP_OVERHEAD for d, _, _ in got)
    span = got[-1][2] - got[0][2]
    assert span >= (total - 3000 - 1300) * 8 / capacity * 1e9 * 0.95
    assert summary["streams"]["3"]["sent"] == 10 and summary["streams"]["1"]["max_wait_us"] == 0


def test_over_the_grant_is_policed_and_unknown_streams_refused() -> None:
    rx = _receiver()

    async def main() -> tuple[list[bool], bool, dict[str, Any]]:
        udp = await open_udp(lambda *a: None, remote=rx.getsockname(), tos=EF)
        sender = PacedSender(Scheduler(pacer_config(100e6)))
        sender.grant([_spec(1, TrafficClass.CONTROL, 8_000, 300, 150)])  # 1000 B/s, burst 300
        target = ((udp, None),)
        sent = [sender.send(bytes(72), 1, target) for _ in range(10)]  # 100 B each
        unknown = sender.send(bytes(72), 7, target)
        sender.close()
        udp.transport.close()  # type: ignore[union-attr]
        return sent, unknown, sender.summary()

    sent, unknown, summary = aio.run(main())
    assert sent == [True] * 3 + [False] * 7  # the burst, then nothing conforms
    assert not unknown and summary["unknown_stream"] == 1
    assert summary["streams"]["1"]["policed"] == 7 and summary["streams"]["1"]["sent"] == 3
    assert len(_received(rx, 3)) == 3
    rx.settimeout(0.2)
    with pytest.raises(TimeoutError):
        rx.recvmsg(2048, 64)  # and nothing more
    rx.close()


def test_stream_specs_fit_the_runtime_datagrams_exactly() -> None:
    keys = SessionKeys.derive(bytes(32), 7)
    seal = keys.sealer(Role.STATION).seal
    specs = station_specs(joints=6, control_rate_hz=500, heartbeat_rate_hz=10, secure=True)
    n = np.zeros(6)
    full = JointCommand(positions=n, velocities=n, efforts=n, gripper=0.0)
    largest = len(seal(full, stream=1, seq=1, send_time_ns=0)) + IPV4_UDP_OVERHEAD
    usual = len(seal(JointCommand(positions=n), stream=1, seq=2, send_time_ns=0)) + 28
    assert specs.command.max_packet_bytes == largest > usual
    assert specs.command.traffic_class is TrafficClass.CONTROL
    assert specs.command.rate_bps == pytest.approx(largest * 8 * 500 * 1.25, abs=1)
    plain = station_specs(joints=6, control_rate_hz=500, heartbeat_rate_hz=10, secure=False)
    assert plain.command.max_packet_bytes == largest - 16  # no AEAD tag
    # The robot's: a real TELEMETRY datagram fits; rates scale with the receivers.
    one = {s.stream: s for s in robot_specs(joints=6, telemetry_rate_hz=100, receivers=1,
                                            paths=1, secure=False)}  # fmt: skip
    three = {s.stream: s for s in robot_specs(joints=6, telemetry_rate_hz=100, receivers=3,
                                              paths=1, secure=False)}  # fmt: skip
    telemetry = encode(Telemetry(mode=RobotMode.ACTIVE), stream=16, session=1, seq=1,
                       send_time_ns=0)  # fmt: skip
    assert one[Stream.TELEMETRY].max_packet_bytes == len(telemetry) + 28
    assert three[Stream.JOINT_STATE].rate_bps == pytest.approx(
        3 * one[Stream.JOINT_STATE].rate_bps, rel=1e-3
    )
    assert one[Stream.FORCE_TORQUE].traffic_class is TrafficClass.HAPTICS
    assert one[Stream.ROBOT_HEARTBEAT].traffic_class is TrafficClass.CONTROL


def _pair(grants: Any = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    robot = RobotCore(SimArm(), EndpointConfig(), clock=time.monotonic_ns)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    station = StationCore(
        StationConfig(clock_offset_ns=0), lambda v, n: ScriptedInput(v, {}, n),
        clock=time.monotonic_ns,
    )  # fmt: skip

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        stop = asyncio.Event()
        served = asyncio.create_task(serve_robot(robot, sock=sock, stop=stop))
        summary = await run_station(station, ("127.0.0.1", port), duration=0.6, grants=grants)
        stop.set()
        return summary, await served

    return aio.run(main())


def test_both_ends_send_through_their_schedulers() -> None:
    summary, status = _pair()
    station = summary["sender"]["streams"]
    sent = summary["station"]["commands_sent"]
    assert sent > 100 and station["1"]["sent"] == sent and station["1"]["policed"] == 0
    assert station["1"]["dscp"] == 46 and station["2"]["sent"] >= 1
    robot = status["sender"]["streams"]
    assert robot["16"]["sent"] == robot["17"]["sent"] >= 30  # telemetry and joint state, 100 Hz
    assert robot["16"]["dscp"] == 32 and robot["20"]["dscp"] == 46
    assert all(s["policed"] == s["oversize"] == 0 for s in robot.values())
    # what the robot sent arrived (the robot may send one more after the station stops)
    assert robot["16"]["sent"] - 2 <= summary["station"]["telemetry"] <= robot["16"]["sent"]


def test_a_station_polices_its_commands_to_the_robots_grant() -> None:
    command = station_specs(joints=6, control_rate_hz=500, heartbeat_rate_hz=10, secure=False)
    spec = command.command
    tight = StreamSpec(  # a grant for 100 commands a second, of the 500 offered
        stream=1, traffic_class=TrafficClass.CONTROL, rate_bps=spec.max_packet_bytes * 8 * 100,
        burst_bytes=spec.max_packet_bytes, max_packet_bytes=spec.max_packet_bytes,
    )  # fmt: skip
    summary, _ = _pair([local_grant(tight)])
    c = summary["station"]
    policed = summary["sender"]["streams"]["1"]["policed"]
    assert policed > 100 and c["policed"] == policed
    assert c["commands_sent"] == summary["sender"]["streams"]["1"]["sent"]
    # what left is within the grant's rate and burst over the run, whatever was offered
    sent_bytes = summary["sender"]["streams"]["1"]["sent_bytes"]
    assert sent_bytes <= tight.burst_bytes + tight.rate_bps / 8 * (0.6 + 0.3)
    assert c["commands_sent"] < 0.5 * 500 * 0.6


def test_the_robots_own_streams_hold_downlink_reservations(tmp_path: Any) -> None:
    from helpers import Keys, control_server

    from telepresence.control.lease import ControlLease
    from telepresence.endpoint import SecureSessions

    keys = Keys(tmp_path / "keys")
    control = control_server(keys.robot_secret, keys.allowlist, tmp_path)
    robot = RobotCore(
        SimArm(), EndpointConfig(), clock=time.monotonic_ns,
        secure=SecureSessions(ControlLease(2_000_000_000)),
    )  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    status = aio.run(serve_robot(robot, sock=sock, duration=0.2, control=control))
    down = control.state.admission["down"]
    own = {g.stream: g for g in down.grants}
    assert set(own) == {16, 17, 18, 19, 20}
    streams = status["sender"]["streams"]
    assert {int(s): v["rate_bps"] for s, v in streams.items()} == {
        s: g.rate_bps for s, g in own.items()
    }
    # a station's downlink reservation is admitted against what is left, and told who holds it
    ask = {"stream": 3, "traffic_class": "video", "burst_bytes": 24_000, "max_packet_bytes": 1200}
    free = down.free_bps
    refused = down.request_fields({**ask, "rate_bps": free + 1})
    assert not refused.ok and "stream 16" in refused.message
    assert down.request_fields({**ask, "rate_bps": free}).ok
