"""End to end, sans-IO: the scheduler's output through an emulated bottleneck (netsim).

A 500 Hz control stream shares the sender with saturating video and bulk. The bottleneck
(20 Mbit/s, 5 ms) either classifies by the DSCP in the TOS byte into strict-priority queues, as
a DiffServ router does, or is one FIFO. Control's one-way delay (creation to delivery) must stay
near the unloaded value when the marks are honoured, grow when they are not, and stay near it
even in a FIFO when the sender paces at the bottleneck's rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netsim.link import LinkConfig, LinkModel
from telepresence.qos import (
    AdmissionControl,
    Grant,
    Scheduler,
    SchedulerConfig,
    StreamSpec,
    TrafficClass,
    dscp_of_tos,
)

M = 1_000_000
MS = 1_000_000
US = 1_000
CONTROL, VIDEO, BULK = 1, 2, 5
BOTTLENECK_BPS = 20 * M
DELAY_S = 0.005
DURATION = 1_200 * MS
WARMUP = 300 * MS  # let the FIFO fill before measuring

# How a DiffServ router maps the marks to its queues (EF first, CS1 last).
ROUTER_CLASS = {46: 0, 32: 1, 34: 2, 8: 3}

Packet = tuple[int, int, int]  # (stream, created at, size)


@dataclass
class Source:
    """Offers `count` packets of `size` bytes on `stream` every `period` ns from `start`."""

    stream: int
    period: int
    size: int
    count: int = 1
    start: int = 0
    next_at: int = field(init=False)

    def __post_init__(self) -> None:
        self.next_at = self.start


def run(
    link: LinkConfig,
    sender_capacity: int,
    specs: list[StreamSpec],
    sources: list[Source],
) -> tuple[list[int], int, dict[int, int]]:
    """Control's one-way delays (ns, after the warm-up), control packets lost, and bytes
    delivered per stream."""
    admission = AdmissionControl(sender_capacity)
    sched: Scheduler[Packet] = Scheduler(SchedulerConfig(capacity_bps=sender_capacity))
    for spec in specs:
        grant = admission.request(spec)
        assert isinstance(grant, Grant), str(grant)
        sched.add(grant)
    model: LinkModel[Packet] = LinkModel(link, seed=1)
    delays: list[int] = []
    delivered: dict[int, int] = {}
    control_offered = control_delivered = 0
    now = 0
    while True:
        due = [s.next_at for s in sources if s.next_at < DURATION]
        for t in (sched.next_time(), model.next_time()):
            if t is not None:
                due.append(max(t, now))
        if not due:
            break
        now = min(due)
        for s in sources:
            if s.next_at == now:
                for _ in range(s.count):
                    control_offered += s.stream == CONTROL
                    sched.enqueue((s.stream, now, s.size), s.size, s.stream, now)
                s.next_at += s.period
        for pkt, tos in sched.dequeue(now):
            model.send(pkt, pkt[2], now, ROUTER_CLASS[dscp_of_tos(tos)])
        for at, (stream, created, size) in model.deliver_timed(now):
            delivered[stream] = delivered.get(stream, 0) + size
            if stream == CONTROL:
                control_delivered += 1
                if created >= WARMUP:
                    delays.append(at - created)
    control = sched.counters(CONTROL)
    assert control is not None and control.policed == 0 and control.max_wait_ns == 0
    return delays, control_offered - control_delivered, delivered


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / MS


def control_only() -> list[StreamSpec]:
    return [
        StreamSpec(
            stream=CONTROL,
            traffic_class=TrafficClass.CONTROL,
            rate_bps=500_000,
            burst_bytes=400,
            max_packet_bytes=200,
        )
    ]


def loaded(video_bps: int, bulk_bps: int) -> list[StreamSpec]:
    return [
        *control_only(),
        StreamSpec(
            stream=VIDEO,
            traffic_class=TrafficClass.VIDEO,
            rate_bps=video_bps,
            burst_bytes=60_000,
            max_packet_bytes=1200,
        ),
        StreamSpec(
            stream=BULK,
            traffic_class=TrafficClass.BULK,
            rate_bps=bulk_bps,
            burst_bytes=12_000,
            max_packet_bytes=1200,
        ),
    ]


def sources(video_bps: int, bulk_bps: int) -> list[Source]:
    """500 Hz control; video frames at 30 fps and bulk, both offered at twice their grant."""
    frame_packets = 2 * video_bps // 30 // 8 // 1200
    return [
        Source(CONTROL, period=2 * MS, size=100, start=370 * US),
        Source(VIDEO, period=33_333_333, size=1200, count=frame_packets),
        Source(BULK, period=1200 * 8 * 1_000_000_000 // (2 * bulk_bps), size=1200),
    ]


def bottleneck(qdisc: str) -> LinkConfig:
    return LinkConfig(
        rate=BOTTLENECK_BPS,
        delay=DELAY_S,
        qdisc=qdisc,  # type: ignore[arg-type]
        classes=4,
        queue_packets=1000,
    )


def test_control_delay_with_priority_marks_fifo_and_pacing() -> None:
    only_control = [Source(CONTROL, period=2 * MS, size=100, start=370 * US)]
    unloaded, lost, _ = run(bottleneck("droptail"), BOTTLENECK_BPS, control_only(), only_control)
    base = pct(unloaded, 0.5)
    assert lost == 0 and abs(base - 5.04) < 0.01  # 5 ms + 100 B at 20 Mbit/s

    # The sender believes it has 100 Mbit/s (the bottleneck is further on): 80 Mbit/s of
    # video and bulk arrive at a 20 Mbit/s link, whose queue fills.
    video, bulk = 40 * M, 40 * M
    prio, prio_lost, prio_bytes = run(
        bottleneck("priority"), 100 * M, loaded(video, bulk), sources(video, bulk)
    )
    fifo, fifo_lost, _ = run(
        bottleneck("droptail"), 100 * M, loaded(video, bulk), sources(video, bulk)
    )
    # Marks honoured: control waits at most for the packet on the wire (1200 B = 0.48 ms).
    assert prio_lost == 0
    assert pct(prio, 0.99) <= base + 1.0
    assert max(prio) / MS <= base + 1.5
    assert prio_bytes[BULK] > 0 or prio_bytes[VIDEO] > 0
    # One FIFO: control queues behind ~1000 packets (~480 ms) and is dropped when it is full.
    assert pct(fifo, 0.5) >= base + 100
    assert fifo_lost > 0

    # The sender paces at the bottleneck's real rate: even a FIFO keeps control near base.
    video, bulk = 10 * M, 7_500_000
    paced, paced_lost, paced_bytes = run(
        bottleneck("droptail"), BOTTLENECK_BPS, loaded(video, bulk), sources(video, bulk)
    )
    assert paced_lost == 0
    assert pct(paced, 0.99) <= base + 3.0  # behind at most the pacer's 3000 B burst and a packet
    seconds = DURATION / 1e9
    assert paced_bytes[VIDEO] * 8 / seconds > 0.8 * video  # the grants are used, not starved
    assert paced_bytes[BULK] * 8 / seconds > 0.8 * bulk
