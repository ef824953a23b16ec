"""The netsim relay as its own process (``python -m netsim relay --listen-fd FD ...``), measured
from outside, each against a baseline from the same run.

1. Delay fidelity. 64-byte datagrams at 1 kHz, each carrying its send time, go from this
   process through a relay to a socket here that asks the kernel for receive timestamps
   (``SO_TIMESTAMPNS``: the time the relay's ``send`` delivered it, free of this process's own
   wake-up). Three relays take turns in blocks: ``--delay 0ms`` (baseline: the relay's own
   path), ``--delay 10ms``, and ``--delay 10ms --busy-poll 1ms``. Reported: the relay's own
   ``late_us`` (hand-off to the kernel minus due time), the external one-way time minus the
   nominal delay, the difference of their percentiles from the 0 ms relay (what the delay
   adds beyond its nominal value), each relay's CPU share, and two floors measured between the
   blocks of the same run: the stall floor of a spin loop
   (`benchkit.spin_gaps`/`stall_floor`: gaps > 20 µs, and how late a program that never
   sleeps would be at a random instant) and the floor of a program that sleeps until 100 µs
   before each 1 ms deadline and spins the rest, as the relay does (`benchkit.wake_lateness`).
   Targets: late p50 <= 20 µs and late p99 <= 100 µs + the stall floor's p99; whether the
   absolute 100 µs is met is reported. Also asserted: no datagram lost, none delivered before
   its 10 ms. Nothing is pinned: a relay pinned to a CPU waits whenever another tenant's task
   holds it, where an unpinned one moves (p99 191-734 µs pinned, 154-233 µs unpinned, in
   interleaved runs on this shared VM); the floors run unpinned too. The rate test (2) is not
   pinned either.
2. Rate fidelity. ``--rate 20mbit --queue 1000p``; 1200-byte datagrams offered at 1.3x the
   rate for 3 s. Throughput is counted in UDP payload bits (the link model's `size` is the
   payload length) over the middle 80 % of deliveries, when the queue is never empty. Baseline:
   `netsim.link.LinkModel` with the same configuration, driven by hand with the same send
   times. Target: within 2 % of 20 Mbit/s; the ratio measured / ideal is reported.
3. Capacity. 1200-byte datagrams, no impairment, one direction, paced at rising rates (x1.25
   a step, 0.2 s a trial, up to 3 trials a step: a shared machine's other tenants only ever
   make a trial worse); the highest rate forwarded with < 1 % loss, for the relay and for a
   bare ``recvfrom``/``send`` loop in a child process (`peers.py forward`, same socket set-up),
   interleaved step by step. Forwarders run alone on one CPU, sender and receiver (this
   process) on the other; listening sockets get 4 MB receive buffers so that a VM stall
   costs time, not datagrams, and kernel drop counters tell the forwarder's losses from this
   process's. Target: relay >= 30k datagrams/s; the ratio relay / bare, the CPU time per
   datagram of both and the relay's memory growth per datagram are reported.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchkit import (
    Peer,
    RelayProcess,
    TargetMissed,
    check_targets,
    cpu_time_ns,
    machine,
    percentiles_us,
    pinned,
    run_abab,
    spin_gaps,
    stall_floor,
    two_cpus,
    wake_lateness,
)

from netsim.link import LinkConfig, LinkModel

# This machine is shared: a benchmark that misses a target is measured once more; a
# regression misses both times, a neighbour's burst rarely twice (docs/benchmarks.md).
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # == SCM_TIMESTAMPNS (Linux)
TIMESPEC = struct.Struct("=qq")
PROBE = struct.Struct("!IIq")  # block id, sequence number, send time (CLOCK_REALTIME ns)
BIG_BUFFER = 4 << 20

# 1. delay fidelity
DELAY_NS = 10_000_000
PROBE_BYTES = 64
PROBE_PERIOD_NS = 1_000_000
DELAY_BLOCKS = 6
DELAY_BLOCK = 500  # datagrams per block: 3,000 per relay
FLOOR_PIECE_S = 0.35  # per round, each floor: ~2 s of each in all
LINGER_NS = 500_000_000  # wait this long for the last datagrams of a block
LATE_P50_TARGET_US = 20.0
LATE_P99_TARGET_US = 100.0  # plus the stall floor's p99 on this machine
RELAYS = {
    "delay_0ms": ["--delay", "0ms"],
    "delay_10ms": ["--delay", "10ms"],
    "delay_10ms_busy_poll_1ms": ["--delay", "10ms", "--busy-poll", "1ms"],
}

# 2. rate fidelity
RATE_BPS = 20e6
RATE_BYTES = 1200
OFFERED = 1.3
RATE_SECONDS = 3.0
QUEUE_PACKETS = 1000
RATE_TOLERANCE = 0.02

# 3. capacity
CAPACITY_BYTES = 1200
LADDER = [round(25_000 * 1.25**k) for k in range(15)]  # 25k .. 568k datagrams/s
STEP_SECONDS = 0.2
MAX_LOSS = 0.01
ATTEMPTS = 3
CAPACITY_TARGET = 30_000


def _pct(samples_ns: np.ndarray) -> dict[str, float]:
    """percentiles_us plus p90 and min."""
    out = percentiles_us(samples_ns)
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    out["p90_us"] = round(float(np.percentile(a, 90)), 2)
    out["min_us"] = round(float(a.min()), 2)
    return out


@contextlib.contextmanager
def relays(
    to: tuple[str, int], configs: dict[str, Sequence[str]], tmp: Path, **kw: Any
) -> Iterator[dict[str, RelayProcess]]:
    started: dict[str, RelayProcess] = {}
    try:
        for name, options in configs.items():
            started[name] = RelayProcess(to, options, tmp, **kw)
        yield started
    finally:
        for r in started.values():
            r.kill()


def _receiver(*, timestamps: bool) -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BIG_BUFFER)
    if timestamps:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    return rx


def _sender(address: tuple[str, int]) -> socket.socket:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(address)
    return tx


def _drain_stamped(rx: socket.socket, block: int, arrived: np.ndarray) -> int:
    """Read what is queued; note each probe's kernel receive time by sequence number."""
    got = 0
    while True:
        try:
            data, anc, _flags, _addr = rx.recvmsg(2048, 64)
        except BlockingIOError:
            return got
        b, seq, _sent = PROBE.unpack_from(data)
        if b != block:
            continue  # a straggler from an earlier block
        for _level, kind, value in anc:
            if kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack_from(value)
                arrived[seq] = sec * 1_000_000_000 + nsec
                got += 1


def _paced_probes(
    tx: socket.socket,
    rx: socket.socket,
    block: int,
    count: int,
    period_ns: int,
    size: int,
    linger_ns: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Send `count` probes every `period_ns` and collect them; (sent, arrived) realtime ns,
    arrived -1 where lost."""
    sent = np.zeros(count, dtype=np.int64)
    arrived = np.full(count, -1, dtype=np.int64)
    pad = bytes(size - PROBE.size)
    monotonic_ns, time_ns, send = time.monotonic_ns, time.time_ns, tx.send
    due = monotonic_ns()
    i = got = 0
    end = None
    while got < count:
        now = monotonic_ns()
        while i < count and now >= due:
            t = time_ns()
            send(PROBE.pack(block, i, t) + pad)
            sent[i] = t
            i += 1
            due += period_ns
            if i == count:
                end = now + linger_ns
        if end is not None and now > end:
            break
        wait = (due if i < count else end) - monotonic_ns()  # type: ignore[operator]
        ready, _, _ = select.select([rx], [], [], max(wait, 0) / 1e9)
        if ready:
            got += _drain_stamped(rx, block, arrived)
    return sent, arrived


# -- 1. delay fidelity --------------------------------------------------------------------------


def test_relay_delay_fidelity(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rx = _receiver(timestamps=True)
    one_way: dict[str, list[np.ndarray]] = {name: [] for name in RELAYS}
    lost = dict.fromkeys(RELAYS, 0)
    cpu_ns = dict.fromkeys(RELAYS, 0)
    block_ids = iter(range(1, 1_000_000))
    gaps: list[int] = []
    spun = [0]
    wake_late: list[int] = []
    with relays(rx.getsockname(), RELAYS, tmp_path) as running:
        txs = {name: _sender(r.address) for name, r in running.items()}

        def block(name: str, count: int = DELAY_BLOCK, keep: bool = True) -> None:
            c0 = running[name].cpu_ns()
            sent, arrived = _paced_probes(
                txs[name], rx, next(block_ids), count, PROBE_PERIOD_NS, PROBE_BYTES, LINGER_NS
            )
            if keep:
                cpu_ns[name] += running[name].cpu_ns() - c0
                ok = arrived >= 0
                lost[name] += int(count - ok.sum())
                one_way[name].append(arrived[ok] - sent[ok])

        def baseline() -> None:
            piece, span = spin_gaps(FLOOR_PIECE_S)  # the relays idle: what the machine does
            wake_late.extend(wake_lateness(FLOOR_PIECE_S, PROBE_PERIOD_NS))
            gaps.extend(piece)
            spun[0] += span
            block("delay_0ms")

        def delayed() -> None:
            block("delay_10ms")
            block("delay_10ms_busy_poll_1ms")

        for name in RELAYS:  # warm-up: clients known, wake-up latency learned
            block(name, 200, keep=False)
        run_abab(benchmark, baseline, delayed, blocks=DELAY_BLOCKS)
        stats = {name: r.stop() for name, r in running.items()}
    floor = stall_floor(gaps, spun[0])
    wake_floor = percentiles_us(wake_late)
    for tx in txs.values():
        tx.close()
    rx.close()

    base = np.concatenate(one_way["delay_0ms"])
    measured = {"delay_0ms": _pct(base)}
    added: dict[str, dict[str, float]] = {}
    for name in ("delay_10ms", "delay_10ms_busy_poll_1ms"):
        excess = np.concatenate(one_way[name]) - DELAY_NS
        measured[name] = _pct(excess)
        added[name] = {
            k: round(measured[name][k] - measured["delay_0ms"][k], 2)
            for k in ("p50_us", "p90_us", "p99_us", "p99_9_us")
        }
    late = {name: stats[name]["late_us"] for name in RELAYS}
    cpu_share = {
        name: round(cpu_ns[name] / (DELAY_BLOCKS * DELAY_BLOCK * PROBE_PERIOD_NS), 3)
        for name in RELAYS
    }
    floor_p99 = floor["stall"]["p99_us"]
    late_p99_target = round(LATE_P99_TARGET_US + floor_p99, 1)
    default_late = late["delay_10ms"]
    met_absolute = default_late["p99"] <= LATE_P99_TARGET_US
    residual = floor["residual_at_random_instant"]
    verdict = (
        f"relay --delay 10ms late p99 {default_late['p99']} µs "
        + ("meets" if met_absolute else "misses")
        + f" the absolute {LATE_P99_TARGET_US:g} µs on this machine (busy-poll 1ms: "
        f"{late['delay_10ms_busy_poll_1ms']['p99']} µs). Its CPU, same run: "
        f"{floor['stalls_per_s']} stalls/s of p50 {floor['stall']['p50_us']} / p99 {floor_p99} "
        f"µs ({floor['stalled_fraction']:.2%} of the time); a program that never sleeps would be "
        f"late by {residual['p99_us']} µs at p99, one that sleeps until 100 µs before each "
        f"deadline and spins (the relay's design) by {wake_floor['p99_us']} µs"
    )
    benchmark.extra_info.update(
        machine=machine(),
        pinned_cpus=None,
        rate_hz=1e9 / PROBE_PERIOD_NS,
        datagram_bytes=PROBE_BYTES,
        nominal_delay_us=DELAY_NS / 1e3,
        blocks=DELAY_BLOCKS,
        datagrams_per_block=DELAY_BLOCK,
        stall_floor=floor,
        sleep_and_spin_floor_us=wake_floor,
        relay_late_us=late,
        relay_wake_early_us={name: stats[name]["wake_early_us"] for name in RELAYS},
        relay_model_delay_us={
            name: {k: stats[name]["up"][k] for k in ("delay_p50_us", "delay_p99_us")}
            for name in RELAYS
        },
        one_way_minus_nominal_us=measured,
        added_by_delay_vs_0ms_us=added,
        relay_cpu_share=cpu_share,
        lost=lost,
        targets={
            "late_p50_us": LATE_P50_TARGET_US,
            "late_p99_us": late_p99_target,
            "absolute_late_p99_us": LATE_P99_TARGET_US,
        },
        absolute_late_p99_met=met_absolute,
        verdict=verdict,
    )
    print(f"\nstall floor: {floor}\n  sleep-and-spin floor: {wake_floor}")
    for name in RELAYS:
        print(f"{name}: late_us {late[name]}, CPU {cpu_share[name]:.1%}\n"
              f"  one way - nominal µs {measured[name]}"
              + (f"\n  added vs 0 ms {added[name]}" if name in added else ""))  # fmt: skip
    print(f"  {verdict}")

    assert sum(lost.values()) == 0, f"datagrams lost on loopback: {lost}"
    for name in ("delay_10ms", "delay_10ms_busy_poll_1ms"):
        assert measured[name]["min_us"] >= 0, f"{name}: a datagram arrived before its 10 ms"
    check_targets(
        {"late_p50_us": default_late["p50"], "late_p99_us": default_late["p99"]},
        {"late_p50_us": LATE_P50_TARGET_US, "late_p99_us": late_p99_target},
        "relay --delay 10ms lateness",
        unit=" µs",
    )


# -- 2. rate fidelity ---------------------------------------------------------------------------


def _steady_rate(arrived_ns: np.ndarray, size: int) -> float:
    """Payload bit/s over the middle 80 % of deliveries."""
    t = np.sort(arrived_ns)
    lo, hi = int(t.size * 0.1), int(t.size * 0.9)
    return (hi - lo) * size * 8 / ((t[hi] - t[lo]) / 1e9)


def test_relay_rate_fidelity(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rx = _receiver(timestamps=True)
    period_ns = round(RATE_BYTES * 8 / (OFFERED * RATE_BPS) * 1e9)
    count = int(RATE_SECONDS * 1e9 / period_ns)
    options = ["--rate", f"{RATE_BPS / 1e6:g}mbit", "--queue", f"{QUEUE_PACKETS}p"]
    result: dict[str, Any] = {}
    with relays(rx.getsockname(), {"rate": options}, tmp_path, rcvbuf=BIG_BUFFER) as running:
        relay = running["rate"]
        tx = _sender(relay.address)

        def run() -> None:
            result["sent"], result["arrived"] = _paced_probes(
                tx, rx, 1, count, period_ns, RATE_BYTES, 700_000_000
            )

        benchmark.pedantic(run, rounds=1, iterations=1)
        stats = relay.stop()
        tx.close()
    rx.close()
    sent, arrived = result["sent"], result["arrived"]
    ok = arrived >= 0
    measured_bps = _steady_rate(arrived[ok], RATE_BYTES)

    # The ideal: the same link model, driven by hand with the same packets at their send times.
    model: LinkModel[int] = LinkModel(LinkConfig(rate=RATE_BPS, queue_packets=QUEUE_PACKETS))
    ideal_at: list[int] = []
    for seq, t in enumerate(sent - sent[0]):
        while (due := model.next_time()) is not None and due <= t:
            ideal_at += [at for at, _ in model.deliver_timed(due)]
        model.send(seq, RATE_BYTES, int(t))
    while (due := model.next_time()) is not None:
        ideal_at += [at for at, _ in model.deliver_timed(due)]
    ideal_bps = _steady_rate(np.array(ideal_at, dtype=np.int64), RATE_BYTES)

    error = measured_bps / RATE_BPS - 1
    inter = np.diff(np.sort(arrived[ok]))
    up = stats["up"]
    report = {
        "machine": machine(),
        "pinned_cpus": None,
        "rate_bps": RATE_BPS,
        "datagram_payload_bytes": RATE_BYTES,
        "offered_bps": round(RATE_BYTES * 8 * 1e9 / period_ns),
        "sent": count,
        "delivered": int(ok.sum()),
        "relay_queue_dropped": up["queue_dropped"],
        "ideal_delivered": len(ideal_at),
        "ideal_queue_dropped": model.stats.queue_dropped,
        "measured_bps": round(measured_bps),
        "ideal_bps": round(ideal_bps),
        "measured_over_ideal": round(measured_bps / ideal_bps, 5),
        "error_vs_nominal_pct": round(error * 100, 3),
        "inter_arrival_us": _pct(inter),
        "relay_late_us": stats["late_us"],
        "target_pct": RATE_TOLERANCE * 100,
    }
    benchmark.extra_info.update(report)
    print(f"\nrate {RATE_BPS / 1e6:g} Mbit/s, offered {report['offered_bps'] / 1e6:.2f}: measured "
          f"{measured_bps / 1e6:.4f} Mbit/s ({error:+.3%}), ideal {ideal_bps / 1e6:.4f}, "
          f"measured/ideal {report['measured_over_ideal']}\n  delivered {report['delivered']} "
          f"(ideal {len(ideal_at)}), queue dropped {up['queue_dropped']} (ideal "
          f"{model.stats.queue_dropped}), late_us {stats['late_us']}\n"
          f"  inter-arrival µs {report['inter_arrival_us']}")  # fmt: skip
    assert report["delivered"] == up["delivered"], "datagrams lost between relay and receiver"
    check_targets(
        {"rate_error_pct": abs(report["error_vs_nominal_pct"])},
        {"rate_error_pct": RATE_TOLERANCE * 100},
        "relay --rate 20mbit delivered payload rate",
        unit=" %",
    )


# -- 3. capacity --------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _udp_drops(ports: Sequence[int]) -> dict[int, int]:
    """Datagrams the kernel dropped at each local UDP port (receive buffer full), from
    /proc/net/udp, so a loss can be put on the forwarder or on this process's receiver."""
    found = dict.fromkeys(ports, 0)
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port in found:
            found[port] += int(fields[-1])
    return found


def _trial(tx: socket.socket, rx: socket.socket, trial: int, rate: int) -> dict[str, Any]:
    """Send `rate` datagrams/s for STEP_SECONDS; count what arrives (plus up to 30 ms)."""
    count = int(rate * STEP_SECONDS)
    payload = struct.pack("!I", trial) + bytes(CAPACITY_BYTES - 4)
    tag = payload[:4]
    send, recv = tx.send, rx.recv
    monotonic_ns = time.monotonic_ns
    period = 1e9 / rate
    sent = got = 0
    t0 = monotonic_ns()
    while sent < count:
        due = min(count, int((monotonic_ns() - t0) / period) + 1)
        while sent < due:
            send(payload)
            sent += 1
        with contextlib.suppress(BlockingIOError):
            while True:
                if recv(2048)[:4] == tag:
                    got += 1
    elapsed = (monotonic_ns() - t0) / 1e9
    end = monotonic_ns() + 30_000_000
    while got < sent and monotonic_ns() < end:
        select.select([rx], [], [], 0.005)
        with contextlib.suppress(BlockingIOError):
            while True:
                if recv(2048)[:4] == tag:
                    got += 1
    return {"rate": rate, "sent_per_s": round(sent / elapsed), "loss": round(1 - got / sent, 5)}


def test_relay_capacity_vs_bare_forwarder(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cpus = two_cpus()
    harness_cpu, forwarder_cpu = cpus if cpus else (None, None)
    rx = _receiver(timestamps=False)
    to = rx.getsockname()
    sides = ("bare", "relay")
    steps: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    failed = dict.fromkeys(sides, False)
    trial_ids = iter(range(1, 1_000_000))
    with (
        Peer("forward", cpu=forwarder_cpu, args=["--to", f"{to[0]}:{to[1]}"],
             rcvbuf=BIG_BUFFER) as bare,
        relays(to, {"relay": []}, tmp_path, cpu=forwarder_cpu, rcvbuf=BIG_BUFFER) as running,
    ):  # fmt: skip
        relay = running["relay"]
        fwd = {"bare": bare, "relay": relay}
        txs = {s: _sender(fwd[s].address) for s in sides}
        ports = {s: fwd[s].address[1] for s in sides}

        def step(side: str, rate: int, keep: bool = True) -> None:
            """One rung for one side: up to ATTEMPTS trials, passed by the first with < 1 %
            loss (a shared VM's other tenants only ever make a trial worse). A side stops at
            its first failed rung."""
            if failed[side]:
                return
            attempts = []
            for _ in range(ATTEMPTS):
                d0, c0 = _udp_drops([ports[side], to[1]]), cpu_time_ns(fwd[side].proc.pid)
                with pinned(harness_cpu):
                    r = _trial(txs[side], rx, next(trial_ids), rate)
                c1, d1 = cpu_time_ns(fwd[side].proc.pid), _udp_drops([ports[side], to[1]])
                r["forwarder_drops"] = d1[ports[side]] - d0[ports[side]]
                r["receiver_drops"] = d1[to[1]] - d0[to[1]]
                r["cpu_us_per_datagram"] = round((c1 - c0) / 1e3 / (rate * STEP_SECONDS), 3)
                # this process's fault: it could not send at the rate, or its receiver overflowed
                r["harness_ok"] = r["sent_per_s"] >= 0.97 * rate and not r["receiver_drops"]
                r["ok"] = r["harness_ok"] and r["loss"] < MAX_LOSS
                attempts.append(r)
                if r["ok"]:
                    break
            if keep:
                failed[side] = not attempts[-1]["ok"]
                steps[side].append({**attempts[-1], "attempts": len(attempts),
                                    "losses": [a["loss"] for a in attempts]})  # fmt: skip

        rung: dict[str, int] = {}
        ladder = iter(LADDER)

        def bare_rung() -> None:
            rung["rate"] = next(ladder, 0)
            if rung["rate"]:
                step("bare", rung["rate"])

        def relay_rung() -> None:
            if rung["rate"]:
                step("relay", rung["rate"])

        step("bare", 5_000, keep=False)  # warm-up: the relay learns its client
        step("relay", 5_000, keep=False)
        rss0 = _rss_kb(relay.proc.pid)
        run_abab(benchmark, bare_rung, relay_rung, blocks=len(LADDER))
        rss1 = _rss_kb(relay.proc.pid)
        stats = relay.stop()
        for tx in txs.values():
            tx.close()
        assert bare.close() == 0
    rx.close()

    def best(side: str) -> dict[str, Any] | None:
        passed = [r for r in steps[side] if r["ok"]]
        return max(passed, key=lambda r: r["rate"]) if passed else None

    top = {s: best(s) for s in sides}
    capacity = {s: (top[s]["rate"] if top[s] else 0) for s in sides}
    ceiling = {  # why each side's ladder ended
        s: "top of the ladder" if steps[s] and steps[s][-1]["ok"]
        else "forwarder loss >= 1 %" if steps[s] and steps[s][-1]["harness_ok"]
        else "this process could not send or receive faster"
        for s in sides
    }  # fmt: skip
    both = [r["rate"] for r in steps["relay"] if r["ok"]
            and any(b["rate"] == r["rate"] and b["ok"] for b in steps["bare"])]  # fmt: skip
    at = max(both) if both else None
    cpu_at = {
        s: next(r["cpu_us_per_datagram"] for r in steps[s] if r["rate"] == at) for s in sides
    } if at else {}  # fmt: skip
    ratio = round(capacity["relay"] / capacity["bare"], 3) if capacity["bare"] else None
    report = {
        "machine": machine(),
        "pinned_cpus": {"harness": harness_cpu, "forwarders": forwarder_cpu},
        "datagram_bytes": CAPACITY_BYTES,
        "step_seconds": STEP_SECONDS,
        "max_loss": MAX_LOSS,
        "listen_rcvbuf_bytes": BIG_BUFFER,
        "capacity_per_s": capacity,
        "ladder_ended_by": ceiling,
        "relay_over_bare": ratio,
        "loss_at_capacity": {s: top[s]["loss"] if top[s] else None for s in sides},
        "cpu_us_per_datagram_at": at,
        "cpu_us_per_datagram": cpu_at,
        "cpu_relay_over_bare": round(cpu_at["relay"] / cpu_at["bare"], 2) if cpu_at else None,
        "steps": steps,
        "relay_late_us": stats["late_us"],
        "relay_forwarded": stats["up"]["delivered"],
        "relay_rss_growth_bytes_per_datagram": round(
            (rss1 - rss0) * 1024 / max(1, stats["up"]["delivered"]), 1
        ),
        "target_per_s": CAPACITY_TARGET,
    }
    benchmark.extra_info.update(report)
    print(f"\ncapacity (datagrams/s with < {MAX_LOSS:.0%} loss): {capacity}, relay/bare {ratio}, "
          f"ladder ended by {ceiling}\n  CPU µs per datagram at {at}/s: {cpu_at}; relay RSS "
          f"+{report['relay_rss_growth_bytes_per_datagram']} B per datagram forwarded\n"
          + "\n".join(f"  {s}: " + ", ".join(
              f"{r['rate'] / 1e3:.0f}k {r['loss']:.2%}"
              + ("" if r["ok"] else " FAIL" if r["harness_ok"] else " (harness)")
              for r in steps[s]) for s in sides))  # fmt: skip
    if not capacity["relay"] >= CAPACITY_TARGET:
        raise TargetMissed(
            f"relay forwards {capacity['relay']}/s with < {MAX_LOSS:.0%} loss, "
            f"target {CAPACITY_TARGET}/s"
        )
