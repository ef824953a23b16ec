"""Stream reservations and admission control (sans-IO, no time involved).

A stream declares what it will send (`StreamSpec`: class, rate, burst, largest packet). The
`AdmissionControl` of a link admits it only if the sum of the reserved rates stays within the
link's capacity less a headroom (and, optionally, within a per-class share); it answers with a
`Grant`, which the sender's `Scheduler` then enforces, or a `Refusal` whose message tells a
person what was asked, what is free and who holds the rest.

Admission rule::

    admissible = capacity - round(capacity * headroom)
    admit spec  iff  reserved + spec.rate <= admissible
               and  (with a share for its class) reserved[class] + spec.rate
                                                  <= round(capacity * share[class])

Rates are whole bit/s and bursts whole bytes, so the rule is exact. Bursts are not summed
against anything: they bound how much a stream may send back to back, and the scheduler's
pacer keeps those bursts from reaching the link all at once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from telepresence.exceptions import ConfigError
from telepresence.qos._validate import whole
from telepresence.qos.dscp import TrafficClass, check_marks

__all__ = [
    "AdmissionControl",
    "Grant",
    "Refusal",
    "RefusalReason",
    "StreamSpec",
    "format_bps",
]

log = logging.getLogger(__name__)

MAX_STREAM = 0xFFFF
"""Stream ids are the wire header's u16."""
MAX_RATE_BPS = 10**12
MAX_PACKET_BYTES = 0xFFFF
"""The largest IP datagram."""
MAX_BURST_BYTES = 1 << 30
LISTED_GRANTS = 12
"""How many reservations a refusal lists before it says "and N more"."""


_UNITS = ((10**12, "Tbit/s"), (10**9, "Gbit/s"), (10**6, "Mbit/s"), (10**3, "kbit/s"))


def format_bps(bps: float) -> str:
    """A rate as people read it, 3 significant digits: ``12.4 Mbit/s``, ``500 kbit/s``."""
    for i, (unit, name) in enumerate(_UNITS):
        if bps >= unit:
            text = f"{bps / unit:.3g}"
            if float(text) >= 1000 and i > 0:  # 999.96 kbit/s prints as 1 Mbit/s
                unit, name = _UNITS[i - 1]
                text = f"{bps / unit:.3g}"
            return f"{text} {name}"
    text = f"{bps:.3g}"
    return "1 kbit/s" if float(text) >= 1000 else f"{text} bit/s"


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """What a stream asks to reserve. Sizes count what the sender passes to the scheduler: to
    match the link exactly, count IP datagrams (UDP payload + 28 bytes on IPv4, + 48 on IPv6)."""

    stream: int
    """Stream id, as in the wire header (0..65535)."""
    traffic_class: TrafficClass
    """Priority class; decides the DSCP mark and the queue."""
    rate_bps: int
    """Sustained rate, bit/s (1..1e12)."""
    burst_bytes: int
    """Most bytes the stream may send back to back, above its rate (>= max_packet_bytes)."""
    max_packet_bytes: int
    """Largest packet the stream sends, bytes (1..65535); larger ones are dropped."""
    name: str = ""
    """Optional label for messages and listings ("front camera")."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "stream", whole("stream", self.stream, 0, MAX_STREAM, "(u16 stream id)"))
        set_(self, "traffic_class", TrafficClass.parse(self.traffic_class))
        set_(self, "rate_bps", whole("rate_bps", self.rate_bps, 1, MAX_RATE_BPS, "bit/s"))
        size = whole("max_packet_bytes", self.max_packet_bytes, 1, MAX_PACKET_BYTES, "bytes")
        set_(self, "max_packet_bytes", size)
        burst = self.burst_bytes
        set_(self, "burst_bytes", whole("burst_bytes", burst, 1, MAX_BURST_BYTES, "bytes"))
        if self.burst_bytes < size:
            raise ConfigError(
                f"burst_bytes ({self.burst_bytes}) must be >= max_packet_bytes ({size}): "
                "a packet larger than the burst could never be sent"
            )
        if not isinstance(self.name, str) or len(self.name) > 64:
            raise ConfigError(f"name must be a string of at most 64 characters, got {self.name!r}")

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> StreamSpec:
        """Build a spec from a peer's request (e.g. decoded JSON); raises ConfigError naming the
        field that is missing, unknown or out of range. The class may be a name or a number."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)}; known: {sorted(known)}")
        missing = sorted(known - {"name"} - set(data))
        if missing:
            raise ConfigError(f"missing field(s): {', '.join(missing)}")
        return cls(**data)

    @property
    def label(self) -> str:
        """``video stream 3`` (``video stream 3 (front camera)`` with a name)."""
        text = f"{self.traffic_class.label} stream {self.stream}"
        return f"{text} ({self.name})" if self.name else text


@dataclass(frozen=True, kw_only=True)
class Grant:
    """An admitted reservation: the spec, and the DSCP its packets carry."""

    spec: StreamSpec
    """What was asked, and admitted as asked."""
    dscp: int
    """DSCP to mark the stream's packets with."""

    ok: ClassVar[bool] = True
    """Always True (a `Refusal` has False)."""

    @property
    def stream(self) -> int:
        return self.spec.stream

    @property
    def traffic_class(self) -> TrafficClass:
        return self.spec.traffic_class

    @property
    def rate_bps(self) -> int:
        return self.spec.rate_bps

    @property
    def burst_bytes(self) -> int:
        return self.spec.burst_bytes

    @property
    def max_packet_bytes(self) -> int:
        return self.spec.max_packet_bytes

    @property
    def tos(self) -> int:
        """TOS byte for ``IP_TOS`` / ``IPV6_TCLASS`` (``dscp << 2``)."""
        return self.dscp << 2

    def __str__(self) -> str:
        return (
            f"{self.spec.label}: {format_bps(self.rate_bps)}, burst {self.burst_bytes} B, "
            f"packets <= {self.max_packet_bytes} B, DSCP {self.dscp}"
        )


class RefusalReason(enum.Enum):
    """Why a request was refused."""

    INVALID = "invalid"
    """A field is missing or out of range (the message names it)."""
    DUPLICATE = "duplicate"
    """The stream id already holds a reservation."""
    UNKNOWN_STREAM = "unknown stream"
    """A change was asked for a stream that holds no reservation."""
    OVER_CAPACITY = "over capacity"
    """The link, less its headroom, has not enough unreserved rate."""
    CLASS_SHARE = "class share"
    """The class would exceed the share of the link it may hold."""


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A request that was not admitted, with a message for the person who asked."""

    reason: RefusalReason
    message: str
    """What was asked, what is free, who holds the rest."""
    stream: int | None = None
    """The stream id asked for, when it could be read."""
    spec: StreamSpec | None = None
    """The spec, when the request was a valid one."""

    ok: ClassVar[bool] = False
    """Always False (a `Grant` has True)."""

    def __str__(self) -> str:
        return self.message


class AdmissionControl:
    """Reservations on one link direction of `capacity_bps`, keeping `headroom` (a fraction of
    the capacity) unreserved for unreserved traffic and for error in the capacity estimate.

    `class_shares` optionally caps what one class may hold in total, as a fraction of the
    capacity (``{TrafficClass.VIDEO: 0.6}``); `marks` overrides the DSCP of a class.
    """

    def __init__(
        self,
        capacity_bps: int,
        *,
        headroom: float = 0.1,
        class_shares: Mapping[TrafficClass, float] | None = None,
        marks: Mapping[TrafficClass, int] | None = None,
    ) -> None:
        self.capacity_bps = whole("capacity_bps", capacity_bps, 1, MAX_RATE_BPS, "bit/s")
        if isinstance(headroom, bool) or not (
            isinstance(headroom, int | float) and 0 <= headroom < 1
        ):
            raise ConfigError(f"headroom must be a fraction within 0..<1, got {headroom!r}")
        self.headroom = float(headroom)
        self.admissible_bps = self.capacity_bps - round(self.capacity_bps * self.headroom)
        """The most that may be reserved in total, bit/s."""
        self.class_limits: dict[TrafficClass, int] = {}
        """Most bit/s each capped class may hold."""
        self.class_shares: dict[TrafficClass, float] = {}
        for key, share in (class_shares or {}).items():
            cls = TrafficClass.parse(key)
            if isinstance(share, bool) or not (isinstance(share, int | float) and 0 < share <= 1):
                raise ConfigError(
                    f"class_shares[{cls.label}] must be a fraction within >0..1, got {share!r}"
                )
            self.class_shares[cls] = float(share)
            self.class_limits[cls] = round(self.capacity_bps * share)
        self.marks = check_marks(marks)
        """DSCP per class."""
        self._grants: dict[int, Grant] = {}
        self._reserved = 0
        self._by_class = dict.fromkeys(TrafficClass, 0)

    # -- state -------------------------------------------------------------------------------

    @property
    def reserved_bps(self) -> int:
        """Sum of the granted rates, bit/s."""
        return self._reserved

    @property
    def free_bps(self) -> int:
        """What may still be reserved, bit/s."""
        return max(0, self.admissible_bps - self._reserved)

    def reserved_by_class(self) -> dict[TrafficClass, int]:
        """Granted bit/s per class (every class, 0 if none)."""
        return dict(self._by_class)

    @property
    def grants(self) -> tuple[Grant, ...]:
        """The grants, by class then stream id."""
        return tuple(sorted(self._grants.values(), key=lambda g: (g.traffic_class, g.stream)))

    def grant(self, stream: int) -> Grant | None:
        """The grant of `stream`, if it holds one."""
        return self._grants.get(stream)

    def __contains__(self, stream: object) -> bool:
        return stream in self._grants

    def __len__(self) -> int:
        return len(self._grants)

    def describe(self) -> str:
        """One line: capacity, headroom, reserved, free, and the grants."""
        return (
            f"{format_bps(self.capacity_bps)} link, {self.headroom * 100:g} % headroom: "
            f"{format_bps(self._reserved)} reserved, {format_bps(self.free_bps)} free; "
            f"reserved: {_listing(self.grants)}"
        )

    # -- requests ----------------------------------------------------------------------------

    def request(self, spec: StreamSpec) -> Grant | Refusal:
        """Admit `spec` or say why not. A refusal changes nothing."""
        if spec.stream in self._grants:
            held = self._grants[spec.stream]
            return self._refuse(
                RefusalReason.DUPLICATE,
                f"{spec.label} asks {format_bps(spec.rate_bps)} but stream {spec.stream} is "
                f"already reserved ({held.spec.label}, {format_bps(held.rate_bps)}); "
                "release it first, or ask for a change",
                spec,
            )
        return self._admit(spec, previous=None)

    def request_fields(self, data: Mapping[str, Any]) -> Grant | Refusal:
        """`request` for a peer's raw fields: an invalid field is a Refusal, not an exception."""
        try:
            spec = StreamSpec.from_fields(data)
        except (ConfigError, TypeError) as exc:
            raw = data.get("stream") if isinstance(data, Mapping) else None
            stream = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
            who = f"stream {stream}" if stream is not None else "request"
            return self._refuse(RefusalReason.INVALID, f"{who}: {exc}", None, stream)
        return self.request(spec)

    def change(self, spec: StreamSpec) -> Grant | Refusal:
        """Replace the reservation of `spec.stream` (e.g. a video encoder's new rate); the old
        one is kept if the new one is refused."""
        previous = self._grants.get(spec.stream)
        if previous is None:
            return self._refuse(
                RefusalReason.UNKNOWN_STREAM,
                f"{spec.label} holds no reservation to change; request one first",
                spec,
            )
        return self._admit(spec, previous=previous)

    def release(self, stream: int) -> Grant | None:
        """Free the reservation of `stream`; returns it, or None if it held none."""
        grant = self._grants.pop(stream, None)
        if grant is not None:
            self._reserved -= grant.rate_bps
            self._by_class[grant.traffic_class] -= grant.rate_bps
            log.debug("released %s", grant)
        return grant

    # -- internals ---------------------------------------------------------------------------

    def _admit(self, spec: StreamSpec, previous: Grant | None) -> Grant | Refusal:
        cls = spec.traffic_class
        was = previous.rate_bps if previous is not None else 0
        was_cls = was if previous is not None and previous.traffic_class is cls else 0
        others = [g for g in self.grants if g.stream != spec.stream]
        limit = self.class_limits.get(cls)
        if limit is not None and self._by_class[cls] - was_cls + spec.rate_bps > limit:
            same = [g for g in others if g.traffic_class is cls]
            return self._refuse(
                RefusalReason.CLASS_SHARE,
                f"{spec.label} asks {format_bps(spec.rate_bps)} but {cls.label} streams may "
                f"hold at most {self.class_shares[cls] * 100:g} % of the "
                f"{format_bps(self.capacity_bps)} link ({format_bps(limit)}); "
                f"{format_bps(self._by_class[cls] - was_cls)} of it is reserved: "
                f"{_listing(same)}",
                spec,
            )
        free = self.admissible_bps - (self._reserved - was)
        if spec.rate_bps > free:
            return self._refuse(
                RefusalReason.OVER_CAPACITY,
                f"{spec.label} asks {format_bps(spec.rate_bps)} but only "
                f"{format_bps(max(0, free))} of the {format_bps(self.capacity_bps)} link are "
                f"free after {self.headroom * 100:g} % headroom; reserved: {_listing(others)}",
                spec,
            )
        if previous is not None:
            self.release(spec.stream)
        grant = Grant(spec=spec, dscp=self.marks[cls])
        self._grants[spec.stream] = grant
        self._reserved += spec.rate_bps
        self._by_class[cls] += spec.rate_bps
        log.debug("granted %s", grant)
        return grant

    def _refuse(
        self,
        reason: RefusalReason,
        message: str,
        spec: StreamSpec | None,
        stream: int | None = None,
    ) -> Refusal:
        log.info("refused: %s", message)
        return Refusal(
            reason=reason,
            message=message,
            stream=spec.stream if spec is not None else stream,
            spec=spec,
        )


def _listing(grants: Iterable[Grant]) -> str:
    items = list(grants)
    if not items:
        return "nothing"
    parts = []
    for g in items[:LISTED_GRANTS]:
        who = f"stream {g.stream}, {g.spec.name}" if g.spec.name else f"stream {g.stream}"
        parts.append(f"{g.traffic_class.label} {format_bps(g.rate_bps)} ({who})")
    if len(items) > LISTED_GRANTS:
        parts.append(f"and {len(items) - LISTED_GRANTS} more")
    return ", ".join(parts)
