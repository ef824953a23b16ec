"""The data plane's sender: every datagram leaves through the QoS scheduler (asyncio adapter).

`PacedSender` puts a `telepresence.qos.Scheduler` between a core's datagrams and its UDP
endpoints: each datagram is offered with its stream id and size (UDP payload + IP/UDP headers),
policed to its stream's grant, queued by class, released in strict priority and paced to the
link capacity, then sent marked with its class's DSCP (`UdpEndpoint.send_marked`). Control
(``bypass_pacing``) that conforms to its grant leaves inside `send`, in the same call: it never
waits behind a timer or a lower class. What is held is released by a loop timer at the
scheduler's `next_time`; loop timers have a resolution of 1 ms, so the pacer's burst allowance
is at least 1.5 ms of the capacity (`pacer_config`).

The specs of the streams the runtime sends itself are here too: the station's command and
heartbeat streams, the robot's telemetry, state, force/torque and heartbeat streams. Sizes are
exact (`encoded_size` of the largest message of the kind, the AEAD tag, the IP/UDP headers);
rates are the configured ones with a margin.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robots.api import BaseState, ForceTorque, JointCommand, JointState
from telepresence.qos import (
    DEFAULT_MARKS,
    HELD,
    Grant,
    Scheduler,
    SchedulerConfig,
    StreamCounters,
    StreamSpec,
    TrafficClass,
)
from telepresence.streams import Stream
from telepresence.udp import UdpEndpoint
from telepresence.wire import AUTH_TAG_SIZE, Heartbeat, RobotMode, Role, Telemetry, encoded_size

__all__ = [
    "DEFAULT_LINK_CAPACITY_BPS",
    "IPV4_UDP_OVERHEAD",
    "PacedSender",
    "local_grant",
    "pacer_config",
    "robot_specs",
    "station_specs",
]

DEFAULT_LINK_CAPACITY_BPS = 100_000_000
"""Capacity the sender paces at when none is configured (``--link-capacity``)."""
IPV4_UDP_OVERHEAD = 28
"""IPv4 (20) + UDP (8) header bytes: what a datagram costs the link beyond its payload."""
IPV6_UDP_OVERHEAD = 48
RATE_MARGIN = 1.25
"""Reserved rate = the stream's packets at its configured rate, times this."""
TIMER_RESOLUTION_NS = 1_000_000
"""The event loop's timers fire with millisecond resolution."""

Target = tuple[UdpEndpoint, Any]
"""Where a released datagram goes: an endpoint and an address (None: the connected peer)."""
Packet = tuple["bytes | bytearray", tuple[Target, ...]]


def local_grant(spec: StreamSpec) -> Grant:
    """A grant for a stream the sender schedules without asking anyone (its own streams, or
    an insecure session's), marked with the class's default DSCP."""
    return Grant(spec=spec, dscp=int(DEFAULT_MARKS[spec.traffic_class]))


def pacer_config(capacity_bps: float, largest_packet: int = 1500) -> SchedulerConfig:
    """A scheduler configuration for pacing at `capacity_bps` with loop timers: the pacer may
    send 1.5 ms of the capacity back to back (a timer can fire up to 1 ms late), and never less
    than 3000 bytes or `largest_packet`."""
    burst = max(3000, largest_packet, math.ceil(capacity_bps * 1.5e-3 / 8))
    return SchedulerConfig(capacity_bps=round(capacity_bps), pace_burst_bytes=burst)


class PacedSender:
    """Sends datagrams through a `Scheduler` to UDP endpoints (see the module docstring).

    `overhead` is added to each datagram's length to get the size the link carries (28 for
    IPv4, 48 for IPv6). `send` returns False when the scheduler dropped the datagram (no grant
    for its stream, oversize, policed, its class's queue full); the scheduler's counters say
    which.
    """

    def __init__(
        self,
        scheduler: Scheduler[Packet],
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        overhead: int = IPV4_UDP_OVERHEAD,
    ) -> None:
        self.scheduler = scheduler
        self._offer = scheduler.offer
        self.overhead = overhead
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._closed = False

    def grant(self, grants: Iterable[Grant]) -> None:
        """Enforce `grants` from now on (a stream already scheduled keeps its tokens)."""
        now = self._clock()
        for g in grants:
            self.scheduler.add(g, now)

    def send(self, data: bytes | bytearray, stream: int, targets: tuple[Target, ...]) -> bool:
        """Offer `data` on `stream`; what may leave now (this datagram, if it conforms and
        nothing of a higher class waits) is sent to every target before this returns."""
        if self._closed:
            return False
        tos = self._offer((data, targets), len(data) + self.overhead, stream, self._clock())
        if tos >= 0:  # leaves now: nothing queued before it, nothing to re-arm
            for udp, addr in targets:
                udp.send_marked(data, addr, tos)
            return True
        if len(self.scheduler):
            self._release(self._clock())
        return tos == HELD

    def counters(self) -> dict[int, StreamCounters]:
        return self.scheduler.all_counters()

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per stream, what was sent, held and dropped, and its grant."""
        out: dict[str, Any] = {}
        for stream, c in self.scheduler.all_counters().items():
            g = self.scheduler.grant(stream)
            out[str(stream)] = {
                "class": g.traffic_class.label if g else None,
                "rate_bps": g.rate_bps if g else None,
                "dscp": g.dscp if g else None,
                "sent": c.sent,
                "sent_bytes": c.sent_bytes,
                "delayed": c.delayed,
                "policed": c.policed,
                "oversize": c.oversize,
                "queue_dropped": c.queue_dropped,
                "max_wait_us": round(c.max_wait_ns / 1e3, 1),
            }
        return {"streams": out, "unknown_stream": self.scheduler.unknown_stream,
                "held": len(self.scheduler)}  # fmt: skip

    def close(self) -> None:
        """Stop: cancel the timer; what is still held is not sent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self, now: int) -> None:
        for (data, targets), tos in self.scheduler.dequeue(now):
            for udp, addr in targets:
                udp.send_marked(data, addr, tos)
        at = self.scheduler.next_time()
        if at is None or self._closed:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return  # armed early enough already
            self._timer.cancel()
        # Round up to the timer's resolution: a timer that fires early only re-arms.
        delay_ms = max(1, math.ceil((at - now) / TIMER_RESOLUTION_NS))
        self._timer_at = at
        self._timer = self._loop.call_later(delay_ms / 1e3, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._release(self._clock())


# ---------------------------------------------------------------------------------------------
# The runtime's own streams


def _datagram(message: object, secure: bool, overhead: int) -> int:
    return encoded_size(message) + (AUTH_TAG_SIZE if secure else 0) + overhead


def _spec(
    stream: Stream, cls: TrafficClass, packet: int, per_s: float, burst_packets: int
) -> StreamSpec:
    return StreamSpec(
        stream=int(stream),
        traffic_class=cls,
        rate_bps=max(1, math.ceil(packet * 8 * per_s * RATE_MARGIN)),
        burst_bytes=packet * burst_packets,
        max_packet_bytes=packet,
        name=stream.name.lower().replace("_", " "),
    )


@dataclass(frozen=True)
class StationSpecs:
    command: StreamSpec
    """The command stream: what the station reserves with the robot."""
    heartbeat: StreamSpec
    """Station heartbeats: few and small, carried by the link's unreserved headroom."""


def station_specs(
    *,
    joints: int,
    control_rate_hz: float,
    heartbeat_rate_hz: float,
    secure: bool,
    overhead: int = IPV4_UDP_OVERHEAD,
) -> StationSpecs:
    """The station's streams: commands at the control rate, sized for the largest joint
    command of `joints` joints (positions, velocities, efforts and gripper), burst 8."""
    n = max(1, joints)
    largest = JointCommand(
        positions=np.zeros(n), velocities=np.zeros(n), efforts=np.zeros(n), gripper=0.0
    )
    command = _datagram(largest, secure, overhead)
    beat = _datagram(Heartbeat(role=Role.STATION), secure, overhead)
    return StationSpecs(
        command=_spec(Stream.COMMAND, TrafficClass.CONTROL, command, control_rate_hz, 8),
        heartbeat=_spec(Stream.STATION_HEARTBEAT, TrafficClass.CONTROL, beat, heartbeat_rate_hz, 4),
    )


HEARTBEAT_ANSWERS_PER_S = 20.0
"""The robot answers at most one heartbeat per path and station every 50 ms."""


def robot_specs(
    *,
    joints: int,
    telemetry_rate_hz: float,
    receivers: int,
    paths: int,
    secure: bool,
    overhead: int = IPV4_UDP_OVERHEAD,
) -> list[StreamSpec]:
    """The robot's streams, for `receivers` sessions (the one in control and the observers)
    over `paths` paths: TELEMETRY, joint state and base state in the telemetry class, the
    force/torque stream in the haptics class, each one datagram per receiver per telemetry
    period; heartbeat answers in the control class."""
    n, k = max(1, joints), max(1, receivers)
    zeros = np.zeros(n)
    sizes = {
        Stream.TELEMETRY: _datagram(Telemetry(mode=RobotMode.ACTIVE), secure, overhead),
        Stream.JOINT_STATE: _datagram(
            JointState(positions=zeros, velocities=zeros, efforts=zeros, gripper=0.0),
            secure,
            overhead,
        ),
        Stream.BASE_STATE: _datagram(BaseState(x=0.0, y=0.0, theta=0.0), secure, overhead),
        Stream.FORCE_TORQUE: _datagram(
            ForceTorque(sensor=0, time_ns=0, force=np.zeros(3), torque=np.zeros(3)),
            secure,
            overhead,
        ),
    }
    classes = {Stream.FORCE_TORQUE: TrafficClass.HAPTICS}
    specs = [
        _spec(s, classes.get(s, TrafficClass.TELEMETRY), size, telemetry_rate_hz * k, 4 * k)
        for s, size in sizes.items()
    ]
    beat = _datagram(Heartbeat(role=Role.ROBOT, mode=RobotMode.ACTIVE), secure, overhead)
    specs.append(
        _spec(
            Stream.ROBOT_HEARTBEAT,
            TrafficClass.CONTROL,
            beat,
            HEARTBEAT_ANSWERS_PER_S * k * max(1, paths),
            4 * k * max(1, paths),
        )
    )
    return specs


def grants_of(specs: Sequence[StreamSpec]) -> list[Grant]:
    return [local_grant(s) for s in specs]
