"""One direction of an emulated link (sans-IO): loss, duplication, outages, a rate-limited queue
with a queue discipline, trace-driven capacity, propagation delay and jitter.

Time is passed in (monotonic ns). Packets go in with `send(packet, size, now, cls)`; the model
says when it next has something to do (`next_time()`), and `deliver(now)` returns the packets
that have arrived by `now`, in arrival order. The packet object is opaque to the model.

A packet's path, in order::

    ingress: outage? -> dropped (lost)          the link is down
             loss (Bernoulli or Gilbert-Elliott) -> dropped (lost)
             duplicate? -> a second copy takes the same path
    queue:   only with a rate or a trace; full -> dropped (queue_dropped)
             drop-tail FIFO | strict priority per class (0 first) | CoDel (drops at dequeue)
    serialise: size * 8 / rate, or Mahimahi delivery opportunities of 1500 bytes
    propagate: delay + jitter (normal, uniform or pareto); with no reordering (the default) a
             packet never overtakes the one before it; `reorder_prob` sends that share of
             packets without the delay, ahead of the others (netem's reorder)

Every random draw comes from one `random.Random(seed)`: the same seed, configuration and
sequence of calls give the same result, packet for packet.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "GilbertElliott",
    "LinkConfig",
    "LinkModel",
    "LinkStats",
    "Outage",
    "load_mahimahi_trace",
]

P = TypeVar("P")
NS = 1_000_000_000
JitterDist = Literal["normal", "uniform", "pareto"]
Qdisc = Literal["droptail", "priority", "codel"]
PARETO_ALPHA = 3.0
_PARETO_MEAN = PARETO_ALPHA / (PARETO_ALPHA - 1)
_PARETO_STD = math.sqrt(PARETO_ALPHA / ((PARETO_ALPHA - 1) ** 2 * (PARETO_ALPHA - 2)))
DEFAULT_QUEUE_PACKETS = 1000
"""Queue limit when a rate or trace is set and no size is given (netem's default limit)."""
TRACE_MTU = 1500


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability within 0..1, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain, parameters as netem's ``loss gemodel``."""

    p: float
    """Probability of moving from the good to the bad state, per packet."""
    r: float
    """Probability of moving from the bad to the good state, per packet (1/r: mean burst)."""
    loss_bad: float = 1.0
    """Loss probability in the bad state (netem's 1-h)."""
    loss_good: float = 0.0
    """Loss probability in the good state (netem's 1-k)."""

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_bad", "loss_good"):
            _check_probability(f"Gilbert-Elliott {name}", getattr(self, name))
        if self.r == 0 and self.p > 0:
            raise ValueError("Gilbert-Elliott r must be > 0, or the bad state never ends")

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate: stationary share of each state times its loss probability."""
        if self.p + self.r == 0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass(frozen=True, kw_only=True)
class Outage:
    """The link goes down for `duration` once every `period` (e.g. satellite handovers)."""

    period: float
    """Seconds from the start of one outage to the next (the mean, if random)."""
    duration: float
    """Seconds the link stays down each time."""
    random: bool = False
    """Draw up-times from an exponential distribution (mean period - duration)."""

    def __post_init__(self) -> None:
        if not self.period > 0:
            raise ValueError(f"outage period must be > 0 s, got {self.period!r}")
        if not 0 < self.duration < self.period:
            raise ValueError(
                f"outage duration must be > 0 and shorter than the period "
                f"({self.period:g} s), got {self.duration!r}"
            )


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """Everything one direction of a link does to packets."""

    delay: float = 0.0
    """Fixed one-way propagation delay, seconds (>= 0)."""
    jitter: float = 0.0
    """Delay variation, seconds: std for normal and pareto, half-width for uniform (>= 0)."""
    jitter_dist: JitterDist = "normal"
    """Distribution of the jitter: normal, uniform, or pareto (heavy tail, shape 3)."""
    jitter_reorders: bool = False
    """Let jitter reorder packets (netem's behaviour); by default a packet never overtakes."""
    reorder_prob: float = 0.0
    """Share of packets sent without the delay, ahead of those queued before them."""
    loss: float = 0.0
    """Independent (Bernoulli) loss probability per packet."""
    loss_model: GilbertElliott | None = None
    """Bursty loss instead of `loss`."""
    duplicate: float = 0.0
    """Probability that a packet is delivered twice."""
    outage: Outage | None = None
    """Periodic outages, packets arriving while down are lost."""
    rate: float | None = None
    """Bottleneck rate in bit/s (serialisation delay and a queue); None: unlimited."""
    trace: tuple[int, ...] | None = None
    """Mahimahi delivery opportunities (ms, non-decreasing, looped) instead of a fixed rate."""
    queue_bytes: int | None = None
    """Queue limit in bytes (per class with the priority qdisc)."""
    queue_packets: int | None = None
    """Queue limit in packets (default 1000 when neither limit is given)."""
    qdisc: Qdisc = "droptail"
    """Queue discipline: droptail FIFO, strict priority by class, or CoDel."""
    classes: int = 4
    """Number of priority classes (0 is served first); higher class numbers are clipped."""
    codel_target: float = 0.005
    """CoDel target sojourn time, seconds."""
    codel_interval: float = 0.100
    """CoDel interval, seconds."""

    def __post_init__(self) -> None:
        for name in ("delay", "jitter"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be >= 0 s, got {v!r}")
        if self.jitter_dist not in ("normal", "uniform", "pareto"):
            raise ValueError(
                f"jitter distribution {self.jitter_dist!r} is unknown; use normal, uniform "
                "or pareto"
            )
        for name in ("reorder_prob", "loss", "duplicate"):
            _check_probability(name, getattr(self, name))
        if self.loss and self.loss_model is not None:
            raise ValueError("give either loss (Bernoulli) or loss_model (Gilbert-Elliott)")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0 bit/s, got {self.rate!r}")
        if self.rate is not None and self.trace is not None:
            raise ValueError("give either a rate or a trace, not both")
        if self.trace is not None:
            if not self.trace or any(
                b < a for a, b in zip(self.trace, self.trace[1:], strict=False)
            ):
                raise ValueError("trace must be a non-empty, non-decreasing list of ms")
            if self.trace[-1] <= 0:
                raise ValueError("trace must end after 0 ms (its last timestamp is the loop)")
        if self.queue_bytes is not None and self.queue_bytes < 1:
            raise ValueError(f"queue_bytes must be >= 1, got {self.queue_bytes}")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise ValueError(f"queue_packets must be >= 1, got {self.queue_packets}")
        if self.qdisc not in ("droptail", "priority", "codel"):
            raise ValueError(f"qdisc {self.qdisc!r} is unknown; use droptail, priority or codel")
        if self.qdisc != "droptail" and self.rate is None and self.trace is None:
            raise ValueError(f"qdisc {self.qdisc} needs a rate or a trace (a queue to manage)")
        if not 1 <= self.classes <= 64:
            raise ValueError(f"classes must be within 1..64, got {self.classes}")
        if not (self.codel_target > 0 and self.codel_interval > 0):
            raise ValueError("codel target and interval must be > 0 s")

    @property
    def queued(self) -> bool:
        """True when packets go through a queue (a rate or a trace is set)."""
        return self.rate is not None or self.trace is not None


def load_mahimahi_trace(text: str) -> tuple[int, ...]:
    """Parse a Mahimahi trace: one integer millisecond timestamp per line; each line is one
    opportunity to deliver 1500 bytes, repeated lines give more capacity in that millisecond."""
    out: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            value = int(line)
        except ValueError:
            raise ValueError(f"trace line {number}: {line!r} is not an integer ms") from None
        if value < 0 or (out and value < out[-1]):
            raise ValueError(f"trace line {number}: timestamps must be >= 0 and non-decreasing")
        out.append(value)
    if not out:
        raise ValueError("trace has no timestamps")
    return tuple(out)


@dataclass(slots=True)
class _Packet(Generic[P]):
    payload: P
    size: int
    cls: int
    arrival: int
    enqueued: int
    remaining: int = 0  # bytes still to send (trace mode)


class DelayRing:
    """The latest delays (ns) in a preallocated array; `append` and `len` like a list."""

    SIZE = 1 << 18

    def __init__(self) -> None:
        self._data = np.zeros(self.SIZE, dtype=np.int64)
        self.count = 0

    def append(self, ns: int) -> None:
        self._data[self.count % self.SIZE] = ns
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self.SIZE)

    def __getitem__(self, index: Any) -> Any:
        return self.values()[index]

    def __iter__(self) -> Any:
        return iter(self.values().tolist())

    def values(self) -> npt.NDArray[np.int64]:
        """The kept delays, oldest first."""
        n = len(self)
        if self.count <= self.SIZE:
            return self._data[:n]
        cut = self.count % self.SIZE
        return np.concatenate([self._data[cut:], self._data[:cut]])


@dataclass(slots=True)
class LinkStats:
    """What the link did, counted per packet (duplicates count as sent once more)."""

    sent: int = 0
    """Packets offered to the link (duplicates included)."""
    delivered: int = 0
    """Packets delivered."""
    lost: int = 0
    """Dropped by random loss or an outage."""
    outage_lost: int = 0
    """Of `lost`, how many fell into an outage."""
    queue_dropped: int = 0
    """Dropped because the queue was full (or by CoDel)."""
    duplicated: int = 0
    """Extra copies made."""
    delays_ns: DelayRing = field(default_factory=lambda: DelayRing())
    """Delay imposed on delivered packets (arrival at the model to delivery), the latest
    `DelayRing.SIZE` of them: memory stays bounded however long a relay runs."""

    def summary(self) -> dict[str, float | int | None]:
        """Counts and the imposed-delay percentiles in µs."""
        d: npt.NDArray[np.float64] = self.delays_ns.values().astype(np.float64) / 1e3
        pct = np.percentile(d, (50, 90, 99, 99.9)) if d.size else [None] * 4
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "lost": self.lost,
            "outage_lost": self.outage_lost,
            "queue_dropped": self.queue_dropped,
            "duplicated": self.duplicated,
            "in_flight": self.sent - self.delivered - self.lost - self.queue_dropped,
            **{
                f"delay_{k}_us": None if v is None else round(float(v), 1)
                for k, v in zip(("p50", "p90", "p99", "p999"), pct, strict=True)
            },
        }


class LinkModel(Generic[P]):
    """One direction of an emulated link (see the module docstring)."""

    def __init__(self, config: LinkConfig, *, seed: int = 0, start_ns: int = 0) -> None:
        self.config = config
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._start = start_ns
        self._delay = round(config.delay * NS)
        self._jitter = config.jitter * NS
        self._in_flight: list[tuple[int, int, _Packet[P]]] = []  # (deliver at, n, packet)
        self._n = 0
        self._now = start_ns
        self._last_delivery = 0
        self._ge_bad = False
        # queue
        self._queues: list[deque[_Packet[P]]] = [deque() for _ in range(config.classes)]
        self._queued_bytes = [0] * config.classes
        self._queued_packets = 0
        self._limit_bytes = config.queue_bytes
        self._limit_packets = config.queue_packets
        if config.queued and self._limit_bytes is None and self._limit_packets is None:
            self._limit_packets = DEFAULT_QUEUE_PACKETS
        self._link_free = start_ns
        self._ns_per_byte = 8 * NS / config.rate if config.rate else 0.0
        # trace
        self._trace = [t * 1_000_000 for t in config.trace] if config.trace else []
        self._trace_period = self._trace[-1] if self._trace else 0
        self._trace_k = 0  # index of the next delivery opportunity not yet used
        # outage
        self._outage_start, self._outage_end = self._first_outage()
        # codel
        self._codel_dropping = False
        self._codel_first_above = 0
        self._codel_drop_next = 0
        self._codel_count = 0
        self._codel_last_count = 0

    # -- public API --------------------------------------------------------------------------

    def send(self, packet: P, size: int, now: int, cls: int = 0) -> None:
        """Offer one packet of `size` bytes at `now`, in traffic class `cls` (0 = highest).
        Packets must be offered in time order."""
        if now < self._now:
            raise ValueError(f"packets must be sent in time order: {now} < {self._now} (ns)")
        self._advance(now)
        copies = 1
        if self.config.duplicate and self._rng.random() < self.config.duplicate:
            copies = 2
            self.stats.duplicated += 1
        cls = min(max(cls, 0), self.config.classes - 1)
        for _ in range(copies):
            self.stats.sent += 1
            if self._in_outage(now):
                self.stats.lost += 1
                self.stats.outage_lost += 1
                continue
            if self._lose():
                self.stats.lost += 1
                continue
            pkt = _Packet(packet, size, cls, now, now, size)
            if self.config.queued:
                self._enqueue(pkt)
            else:
                self._propagate(pkt, now)
        self._advance(now)

    def next_time(self) -> int | None:
        """When the model next has work: a delivery, or a queued packet's departure."""
        t = self._in_flight[0][0] if self._in_flight else None
        if self._queued_packets:
            d = self._next_departure()
            t = d if t is None else min(t, d)
        return t

    def deliver(self, now: int) -> list[P]:
        """Packets that have arrived by `now`, in arrival order."""
        return [p for _, p in self.deliver_timed(now)]

    def deliver_timed(self, now: int) -> list[tuple[int, P]]:
        """Like `deliver`, with the time each packet was due: ``(due_ns, packet)``."""
        self._advance(now)
        out: list[tuple[int, P]] = []
        heap = self._in_flight
        delays = self.stats.delays_ns
        while heap and heap[0][0] <= now:
            at, _, pkt = heapq.heappop(heap)
            out.append((at, pkt.payload))
            delays.append(at - pkt.arrival)
        self.stats.delivered += len(out)
        return out

    @property
    def queued_packets(self) -> int:
        return self._queued_packets

    # -- ingress ----------------------------------------------------------------------------

    def _lose(self) -> bool:
        ge = self.config.loss_model
        if ge is None:
            return bool(self.config.loss) and self._rng.random() < self.config.loss
        rng = self._rng
        # state transition first, then loss in the new state (netem's order)
        if self._ge_bad:
            if rng.random() < ge.r:
                self._ge_bad = False
        elif rng.random() < ge.p:
            self._ge_bad = True
        return rng.random() < (ge.loss_bad if self._ge_bad else ge.loss_good)

    def _first_outage(self) -> tuple[int, int]:
        o = self.config.outage
        if o is None:
            return (math.inf, math.inf)  # type: ignore[return-value]
        up = self._up_time()
        return self._start + up, self._start + up + round(o.duration * NS)

    def _up_time(self) -> int:
        o = self.config.outage
        assert o is not None
        mean = (o.period - o.duration) * NS
        return round(self._rng.expovariate(1 / mean)) if o.random else round(mean)

    def _in_outage(self, now: int) -> bool:
        if self.config.outage is None:
            return False
        while now >= self._outage_end:
            start = self._outage_end + self._up_time()
            self._outage_start = start
            self._outage_end = start + round(self.config.outage.duration * NS)
        return now >= self._outage_start

    # -- queue ------------------------------------------------------------------------------

    def _enqueue(self, pkt: _Packet[P]) -> None:
        cls = pkt.cls if self.config.qdisc == "priority" else 0
        lp, lb = self._limit_packets, self._limit_bytes
        q = self._queues[cls]
        if (lp is not None and len(q) >= lp) or (
            lb is not None and self._queued_bytes[cls] + pkt.size > lb
        ):
            self.stats.queue_dropped += 1
            return
        q.append(pkt)
        self._queued_bytes[cls] += pkt.size
        self._queued_packets += 1

    def _head(self) -> _Packet[P] | None:
        for q in self._queues:
            if q:
                return q[0]
        return None

    def _pop(self) -> _Packet[P]:
        for cls, q in enumerate(self._queues):
            if q:
                pkt = q.popleft()
                self._queued_bytes[cls] -= pkt.size
                self._queued_packets -= 1
                return pkt
        raise IndexError("queue is empty")

    def _opportunity_time(self, k: int) -> int:
        loop, i = divmod(k, len(self._trace))
        return self._start + loop * self._trace_period + self._trace[i]

    def _first_opportunity_at(self, t: int) -> int:
        """Index of the first trace opportunity at or after `t`."""
        loop, offset = divmod(max(0, t - self._start), self._trace_period)
        i = bisect.bisect_left(self._trace, offset)
        return loop * len(self._trace) + i

    def _next_departure(self) -> int:
        head = self._head()
        assert head is not None
        if self._trace:
            self._trace_k = max(self._trace_k, self._first_opportunity_at(head.enqueued))
            return self._opportunity_time(self._trace_k)
        return max(self._link_free, head.enqueued)

    def _advance(self, now: int) -> None:
        """Serve the queue up to `now`."""
        if now < self._now:
            return  # looking back (delivering what was due earlier): the queue is already served
        self._now = now
        while self._queued_packets:
            t = self._next_departure()
            if t > now:
                return
            if self._trace:
                self._serve_opportunity(t)
            else:
                pkt = self._dequeue(t)
                if pkt is None:
                    continue
                finish = t + round(pkt.size * self._ns_per_byte)
                self._link_free = finish
                self._propagate(pkt, finish)

    def _serve_opportunity(self, t: int) -> None:
        credit = TRACE_MTU
        self._trace_k += 1
        while credit > 0 and self._queued_packets:
            head = self._head()
            assert head is not None
            if head.enqueued > t:
                return
            use = min(head.remaining, credit)
            head.remaining -= use
            credit -= use
            if head.remaining == 0:
                pkt = self._dequeue(t)
                if pkt is not None:
                    self._propagate(pkt, t)

    def _dequeue(self, now: int) -> _Packet[P] | None:
        """Take the next packet to send at `now` (None if CoDel dropped it)."""
        pkt = self._pop()
        if self.config.qdisc != "codel":
            return pkt
        return self._codel(pkt, now)

    def _codel(self, pkt: _Packet[P] | None, now: int) -> _Packet[P] | None:
        """CoDel's dequeue (RFC 8289), on the single FIFO."""
        target = round(self.config.codel_target * NS)
        interval = round(self.config.codel_interval * NS)

        def ok_to_drop(p: _Packet[P] | None) -> bool:
            if p is None or now - p.enqueued < target or self._queued_bytes[0] <= TRACE_MTU:
                self._codel_first_above = 0
                return False
            if self._codel_first_above == 0:
                self._codel_first_above = now + interval
                return False
            return now >= self._codel_first_above

        drop = ok_to_drop(pkt)
        if self._codel_dropping:
            if not drop:
                self._codel_dropping = False
            while self._codel_dropping and now >= self._codel_drop_next:
                self.stats.queue_dropped += 1
                self._codel_count += 1
                pkt = self._pop() if self._queued_packets else None
                if not ok_to_drop(pkt):
                    self._codel_dropping = False
                else:
                    self._codel_drop_next += round(interval / math.sqrt(self._codel_count))
        elif drop:
            self.stats.queue_dropped += 1
            pkt = self._pop() if self._queued_packets else None
            self._codel_dropping = True
            delta = self._codel_count - self._codel_last_count
            recent = now - self._codel_drop_next < 16 * interval
            self._codel_count = delta if delta > 1 and recent else 1
            self._codel_drop_next = now + round(interval / math.sqrt(self._codel_count))
            self._codel_last_count = self._codel_count
        return pkt

    # -- propagation ------------------------------------------------------------------------

    def _jitter_sample(self) -> float:
        j = self._jitter
        if not j:
            return 0.0
        dist = self.config.jitter_dist
        if dist == "normal":
            return self._rng.gauss(0.0, j)
        if dist == "uniform":
            return self._rng.uniform(-j, j)
        return j * (self._rng.paretovariate(PARETO_ALPHA) - _PARETO_MEAN) / _PARETO_STD

    def _propagate(self, pkt: _Packet[P], departed: int) -> None:
        cfg = self.config
        if cfg.reorder_prob and self._rng.random() < cfg.reorder_prob:
            at = departed  # sent ahead, no delay
        else:
            at = departed + max(0, round(self._delay + self._jitter_sample()))
            if not cfg.jitter_reorders:
                at = max(at, self._last_delivery)
                self._last_delivery = at
        self._n += 1
        heapq.heappush(self._in_flight, (at, self._n, pkt))
