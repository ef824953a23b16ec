"""The sender's scheduler: per-stream policing, strict priority by class, pacing (sans-IO).

Shape, as aioquic's connection: `enqueue(packet, size, stream, now)` offers a packet;
`dequeue(now)` returns ``(packet, tos)`` pairs that may go on the wire now, in order;
`next_time()` says when to call `dequeue` again (arm a timer for it). Time is monotonic ns.

A packet's path::

    enqueue: unknown stream                  -> refused (Scheduler.unknown_stream)
             larger than the grant's max     -> dropped (oversize)
             its class holds queue_packets   -> dropped (queue_dropped)
             stream's bucket (rate, burst):
               conforms now                  -> ready queue of its class
               conforms within max_delay     -> delayed until it conforms (delayed), then ready
               later than that               -> dropped (policed)
    dequeue: the highest class with a ready packet goes first (strict priority, FIFO within a
             class); its head leaves when the link bucket (capacity_bps, pace_burst_bytes)
             conforms, else nothing of a lower class leaves either (no overtaking);
             classes in `bypass_pacing` (control) leave at once and the link bucket is charged
             (it may go into debt), so what follows is paced to make room.

Policing choices. Every stream, control too, is held to its own grant: a control stream that
sends beyond its rate and burst is policed like any other. By default control and haptics wait
0 ns for tokens (a late command is stale; the next one follows in a millisecond or two), so a
non-conforming one is dropped at once; telemetry waits up to 2 ms, video 10 ms (a frame larger
than the burst is spread over that time), bulk 50 ms. The policer spends a delayed packet's
tokens when it admits it (a GCRA), so a stream's packets leave in order and its release times
never exceed rate * T + burst over any interval T.

Pacing keeps our own bursts from filling a bottleneck queue: over any interval T the scheduler
releases at most ``capacity * T + pace_burst_bytes`` (plus the bursts of bypassing classes, which
are repaid at once). A control packet therefore never waits behind video in our queues, and
behind at most ``pace_burst_bytes`` in a FIFO bottleneck.

Per packet: one tuple in a deque (and one in a heap if delayed), and the ``(packet, tos)`` pair
handed back; nothing else is allocated.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from telepresence.exceptions import ConfigError
from telepresence.qos._validate import whole
from telepresence.qos.bucket import TokenBucket
from telepresence.qos.dscp import TrafficClass
from telepresence.qos.reservation import Grant

__all__ = [
    "DEFAULT_MAX_DELAY_NS",
    "DROPPED",
    "HELD",
    "Scheduler",
    "SchedulerConfig",
    "StreamCounters",
]

log = logging.getLogger(__name__)

P = TypeVar("P")
MS = 1_000_000
DEFAULT_MAX_DELAY_NS: Mapping[TrafficClass, int] = {
    TrafficClass.CONTROL: 0,
    TrafficClass.HAPTICS: 0,
    TrafficClass.TELEMETRY: 2 * MS,
    TrafficClass.VIDEO: 10 * MS,
    TrafficClass.BULK: 50 * MS,
}
"""How long the policer may hold a non-conforming packet of each class before it drops it."""
MAX_DELAY_LIMIT_NS = 1_000 * MS
_N_CLASSES = len(TrafficClass)
HELD = -1
"""`Scheduler.offer`: the packet was queued; a later `dequeue` releases it."""
DROPPED = -2
"""`Scheduler.offer`: the packet was refused (its stream's counters say why)."""


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """How the sender paces and polices."""

    capacity_bps: int
    """Pacing rate, bit/s: the bottleneck rate (the capacity the reservations were made on)."""
    pace_burst_bytes: int = 3000
    """Most bytes sent back to back at the capacity (>= every stream's max packet)."""
    max_delay_ns: Mapping[TrafficClass, int] = field(default_factory=dict)
    """Per class, the longest a non-conforming packet is held (0..1 s); missing classes take
    `DEFAULT_MAX_DELAY_NS`."""
    queue_packets: int = 1000
    """Most packets held per class, delayed or ready (>= 1)."""
    bypass_pacing: frozenset[TrafficClass] = frozenset({TrafficClass.CONTROL})
    """Classes sent as soon as they conform to their own grant, without waiting for the pacer."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "capacity_bps", whole("capacity_bps", self.capacity_bps, 1, 10**12, "bit/s"))
        burst = whole("pace_burst_bytes", self.pace_burst_bytes, 1, 1 << 30, "bytes")
        set_(self, "pace_burst_bytes", burst)
        delays = dict(DEFAULT_MAX_DELAY_NS)
        for key, value in self.max_delay_ns.items():
            cls = TrafficClass.parse(key)
            value = whole(f"max_delay_ns[{cls.label}]", value, 0, MAX_DELAY_LIMIT_NS, "ns")
            delays[cls] = value
        set_(self, "max_delay_ns", delays)
        set_(self, "queue_packets", whole("queue_packets", self.queue_packets, 1, 10**6, "packets"))
        set_(self, "bypass_pacing", frozenset(TrafficClass.parse(c) for c in self.bypass_pacing))


@dataclass(slots=True)
class StreamCounters:
    """What the scheduler did with one stream's packets."""

    sent: int = 0
    """Packets released by `dequeue`."""
    sent_bytes: int = 0
    """Bytes released by `dequeue`."""
    delayed: int = 0
    """Packets the policer held until they conformed (all of them were admitted)."""
    policed: int = 0
    """Packets dropped because they would not conform within the class's max delay."""
    policed_bytes: int = 0
    """Bytes of the `policed` packets."""
    oversize: int = 0
    """Packets dropped for being larger than the grant's max packet (or smaller than 1 byte)."""
    queue_dropped: int = 0
    """Packets dropped because their class already held `queue_packets` packets."""
    discarded: int = 0
    """Packets still queued when the stream was removed."""
    wait_ns: int = 0
    """Total time the sent packets spent in the scheduler (enqueue to dequeue), ns."""
    max_wait_ns: int = 0
    """Longest time one sent packet spent in the scheduler, ns."""

    @property
    def dropped(self) -> int:
        """Every packet the scheduler refused or discarded."""
        return self.policed + self.oversize + self.queue_dropped + self.discarded


class _Flow:
    """One stream's grant, bucket and counters (internal; the queue entries point at it)."""

    __slots__ = ("active", "bucket", "cls", "counters", "grant", "max_delay", "max_packet", "tos")

    def __init__(self, grant: Grant, max_delay: int, now: int, counters: StreamCounters) -> None:
        self.grant = grant
        self.cls = int(grant.traffic_class)
        self.tos = grant.tos
        self.max_packet = grant.max_packet_bytes
        self.max_delay = max_delay
        self.bucket = TokenBucket(grant.rate_bps, grant.burst_bytes, now=now)
        self.counters = counters
        self.active = True


# A queue entry: (packet, size, flow, enqueued at).
_Entry = tuple[P, int, _Flow, int]


class Scheduler(Generic[P]):
    """Per-class queues with strict priority, per-stream policing and link pacing."""

    def __init__(self, config: SchedulerConfig, *, now: int = 0) -> None:
        self.config = config
        self.unknown_stream = 0
        """Packets offered for a stream that holds no grant here."""
        self._link = TokenBucket(config.capacity_bps, config.pace_burst_bytes, now=now)
        self._flows: dict[int, _Flow] = {}
        self._ready: list[deque[_Entry[P]]] = [deque() for _ in range(_N_CLASSES)]
        self._delayed: list[tuple[int, int, _Entry[P]]] = []  # (eligible at, n, entry)
        self._n = itertools.count()
        self._held = [0] * _N_CLASSES
        self._bypass = tuple(TrafficClass(c) in config.bypass_pacing for c in range(_N_CLASSES))
        self._now = now

    # -- streams -----------------------------------------------------------------------------

    def add(self, grant: Grant, now: int | None = None) -> None:
        """Enforce `grant` from `now` on. For a stream already here in the same class, the new
        grant replaces the old one keeping its tokens (capped at the new burst), counters and
        queued packets; a class change removes the stream first (its queue is discarded)."""
        if grant.max_packet_bytes > self.config.pace_burst_bytes:
            raise ConfigError(
                f"{grant.spec.label}: max packet {grant.max_packet_bytes} B is larger than "
                f"the pacer's burst (pace_burst_bytes={self.config.pace_burst_bytes}); raise "
                "pace_burst_bytes or lower the stream's max_packet_bytes"
            )
        at = self._now if now is None else now
        max_delay = self.config.max_delay_ns[grant.traffic_class]
        old = self._flows.get(grant.stream)
        if old is not None and old.cls == int(grant.traffic_class):
            old.bucket.resize(grant.rate_bps, grant.burst_bytes, at)
            old.grant, old.tos, old.max_packet = grant, grant.tos, grant.max_packet_bytes
            old.max_delay = max_delay
            return
        counters = StreamCounters()
        if old is not None:
            counters = self.remove(grant.stream) or counters
        self._flows[grant.stream] = _Flow(grant, max_delay, at, counters)

    def remove(self, stream: int) -> StreamCounters | None:
        """Stop scheduling `stream`; its queued packets are discarded. Returns its counters."""
        flow = self._flows.pop(stream, None)
        if flow is None:
            return None
        flow.active = False  # entries still queued are discarded when they reach the head
        return flow.counters

    def counters(self, stream: int) -> StreamCounters | None:
        """Counters of `stream`, if it is scheduled."""
        flow = self._flows.get(stream)
        return flow.counters if flow is not None else None

    def all_counters(self) -> dict[int, StreamCounters]:
        """Counters of every scheduled stream, by stream id."""
        return {s: f.counters for s, f in sorted(self._flows.items())}

    def grant(self, stream: int) -> Grant | None:
        flow = self._flows.get(stream)
        return flow.grant if flow is not None else None

    def __len__(self) -> int:
        """Packets held (delayed or ready)."""
        return sum(self._held)

    # -- packets -----------------------------------------------------------------------------

    def enqueue(self, packet: P, size: int, stream: int, now: int) -> bool:
        """Offer `packet` of `size` bytes on `stream` at `now`; False if it was dropped."""
        admitted = self._admit(size, stream, now)
        if admitted is None:
            return False
        self._hold(packet, size, *admitted, now)
        return True

    def offer(self, packet: P, size: int, stream: int, now: int) -> int:
        """`enqueue`, then the `dequeue` of this packet, in one step when it may leave at once.

        Returns the packet's TOS byte when it leaves now (the caller sends it; the counters say
        it was sent), `HELD` when it was queued (a later `dequeue` releases it), `DROPPED` when
        it was refused (counted as `enqueue` counts). It leaves at once when it conforms to its
        grant, no packet of its class or a higher one is ready, none is due out of the policer's
        hold, and its class bypasses the pacer or the link conforms. Same outcomes as
        `enqueue` + `dequeue(now)`, without the queue round trip: what every command takes.
        """
        admitted = self._admit(size, stream, now)
        if admitted is None:
            return DROPPED
        flow, wait = admitted
        delayed = self._delayed
        if wait == 0 and not (delayed and delayed[0][0] <= now):
            cls = flow.cls
            ready = self._ready
            if not any(ready[i] for i in range(cls + 1)):
                link = self._link
                if self._bypass[cls]:
                    link.charge(size, now)
                    leaves = True
                else:
                    leaves = link.conforms(size, now)
                if leaves:
                    c = flow.counters
                    c.sent += 1
                    c.sent_bytes += size
                    return flow.tos
        self._hold(packet, size, flow, wait, now)
        return HELD

    def _admit(self, size: int, stream: int, now: int) -> tuple[_Flow, int] | None:
        """The checks and the policer of `enqueue`: (flow, ns to wait) or None (counted)."""
        if now > self._now:
            self._now = now
        flow = self._flows.get(stream)
        if flow is None:
            self.unknown_stream += 1
            return None
        c = flow.counters
        if size > flow.max_packet or size < 1:
            c.oversize += 1
            return None
        if self._held[flow.cls] >= self.config.queue_packets:
            c.queue_dropped += 1
            return None
        wait = flow.bucket.take(size, now, flow.max_delay)
        if wait is None:
            c.policed += 1
            c.policed_bytes += size
            return None
        return flow, wait

    def _hold(self, packet: P, size: int, flow: _Flow, wait: int, now: int) -> None:
        """Queue an admitted packet: ready at once, or in the policer's hold for `wait` ns."""
        delayed = self._delayed
        if delayed and delayed[0][0] <= now:
            self._promote(now)
        entry = (packet, size, flow, now)
        if wait:
            flow.counters.delayed += 1
            heapq.heappush(delayed, (now + wait, next(self._n), entry))
        else:
            self._ready[flow.cls].append(entry)
        self._held[flow.cls] += 1

    def dequeue(self, now: int) -> list[tuple[P, int]]:
        """Packets that may be sent at `now`, in order, each with its TOS byte."""
        if now > self._now:
            self._now = now
        if self._delayed and self._delayed[0][0] <= now:
            self._promote(now)
        out: list[tuple[P, int]] = []
        link = self._link
        held = self._held
        bypass = self._bypass
        for cls, q in enumerate(self._ready):
            while q:
                packet, size, flow, since = q[0]
                if not flow.active:
                    q.popleft()
                    held[cls] -= 1
                    flow.counters.discarded += 1
                    continue
                if bypass[cls]:
                    link.charge(size, now)
                elif not link.conforms(size, now):
                    return out  # strict priority: nothing lower may overtake this head
                q.popleft()
                held[cls] -= 1
                c = flow.counters
                c.sent += 1
                c.sent_bytes += size
                waited = now - since
                c.wait_ns += waited
                if waited > c.max_wait_ns:
                    c.max_wait_ns = waited
                out.append((packet, flow.tos))
        return out

    def next_time(self) -> int | None:
        """When `dequeue` next has something to release (a time at or before the last `now`
        seen means at once), or None when nothing is held."""
        t: int | None = None
        for cls, q in enumerate(self._ready):
            if q:
                t = self._now if self._bypass[cls] else self._link.conforming_at(q[0][1])
                break
        if self._delayed:
            d = self._delayed[0][0]
            t = d if t is None or d < t else t
        return t

    def _promote(self, now: int) -> None:
        """Move delayed packets that conform by `now` to their class's ready queue."""
        delayed = self._delayed
        ready = self._ready
        while delayed and delayed[0][0] <= now:
            entry = heapq.heappop(delayed)[2]
            ready[entry[2].cls].append(entry)
