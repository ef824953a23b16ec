"""The secure data plane and QoS, each against a baseline measured in the same run.

1. Secure command round trip on loopback, against the insecure runtime and a bare uvloop echo.
   A blocking client here (pinned to one CPU) ping-pongs with three servers in child processes
   (pinned to the other; `peers.py`): ``bare`` (``transport.sendto(data, addr)``, a 112-byte
   datagram: the size of a sealed command), ``runtime`` (insecure: the client encodes, the
   server's `RobotCore` decodes, checks and echoes the command re-encoded, the client decodes)
   and ``secure`` (the server's `RobotCore` has ``secure=SecureSessions(lease)`` with the
   session's keys, derived in both processes from a fixed secret and session id, and the lease
   taken by that session; the client seals with the station's `Sealer`, the server opens, checks
   and echoes the command re-sealed with the robot's sealer, the client opens the echo with the
   station's `Opener`). Two more servers, ``aead-floor``, measure what the AEAD alone costs: each
   unpacks the header, opens and re-seals the body with the same keys and nothing else, and its
   client seals a pre-encoded command body and opens the echo (header struct + AEAD only, no
   message parsing or checks). ``floor`` uses the runtime's ChaCha20-Poly1305 (libsodium,
   `telepresence.aead`), ``openssl-floor`` the `cryptography` one: the least a peer built on
   each can do. Blocks of the five alternate (bare, insecure, floor, openssl-floor, secure,
   bare, ...).
   Target: secure p50 <= 1.3x bare p50, the median over block quadruples of the per-block ratio.
   Reported beside it: p99, p99.9, every ratio (secure/bare, insecure/bare, secure/insecure),
   where the time goes per stage in situ ("cold": client stamps in the main run, server stamps
   from ``--stages`` twins of both servers run after it) and the same calls in a warm loop.
2. Control one-way latency through a saturated bottleneck. A ``netsim relay`` process (pinned
   alone to one CPU): 20 Mbit/s, 64 kB queue (one 1200-byte bulk datagram serialises in
   0.48 ms, well under the 1 ms allowance). A blaster process offers unmarked bulk at 120 % of
   the rate and AF41 "video" at 30 % (150 % in all). The control stream is a minimal
   sender/receiver here: a real encoded 6-joint JointCommand every 2 ms (500 Hz) from a socket
   marked EF (``IP_TOS`` = `TrafficClass.CONTROL.tos`), its send time (``CLOCK_REALTIME``) in the
   header; the receiving socket asks the kernel for receive timestamps (``SO_TIMESTAMPNS``), so
   the one-way time is the kernel's arrival stamp minus the send stamp, free of this process's
   own wake-ups. Conditions, in rounds: unloaded (the priority relay, no blaster: baseline),
   loaded through ``--qdisc priority``, loaded through ``--qdisc droptail`` (FIFO).
   Target: priority control p99 <= unloaded p99 + 1 ms, per round (the conditions of a round
   run back to back), the median over rounds; the pooled difference is reported. Also asserted:
   the link really is full (bulk offered >= 100 % of the rate, delivered >= 90 %), priority
   and unloaded lose < 1 % of control, and the FIFO queues control behind bulk.
3. Authenticated commands received per second on one core. A sender here (pinned to one CPU)
   sends pre-built 6-joint JointCommand datagrams (pre-sealed in a list: the sender's own cost
   is a ``send`` per datagram), paced at a rate, to a receiver process pinned to the other CPU:
   the runtime's UDP adapter (`open_udp` on uvloop, 4 MB receive buffer) feeding
   ``RobotCore.receive_datagram`` with the secure path (open, lease, window, guard, pending
   slot); baselines: the same receiver insecure (plain datagrams), and a bare uvloop
   `DatagramProtocol` that only counts. Per path, one after the other: first the ceiling,
   100k datagrams sent as fast as the sender can (the socket buffer overflows; the ceiling is
   what was accepted by the time the sender stopped, per second); then 2 s paced at 97 % of
   the ceiling (else 90 %, else 83 %). A run holds when < 1 % of the datagrams are lost and
   < 1 % are still waiting in the socket buffer when the sender stops (so the 4 MB buffer
   cannot hide a receiver that falls behind); kernel drop counters are reported beside it.
   Target: secure >= 100k accepted commands/s in the run that held.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchkit import (
    Peer,
    RelayProcess,
    block_ratio,
    check_targets,
    cpu_time_ns,
    machine,
    percentiles_us,
    pinned,
    ratios,
    run_abab,
    two_cpus,
)
from peers import robot_core

from robots.api import JointCommand
from telepresence.aead import cipher
from telepresence.qos import TrafficClass
from telepresence.security import SessionKeys, nonce
from telepresence.streams import Stream
from telepresence.udp import set_tos
from telepresence.wire import (
    AUTH_TAG_SIZE,
    FLAG_AUTHENTICATED,
    HEADER_SIZE,
    Header,
    MessageType,
    Role,
    decode,
    encode,
    encode_parts,
)
from telepresence.wire.header import HEADER

# This machine is shared: a benchmark that misses a target is measured once more; a
# regression misses both times, a neighbour's burst rarely twice (docs/benchmarks.md).
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

SECRET = bytes.fromhex("7e1e9e5e" * 8)  # fixed: both processes derive the same session keys
SESSION = 0x5EED
KEY_ARGS = ["--secret", SECRET.hex(), "--session", str(SESSION)]

# 1. round trip
BLOCKS = 15
BLOCK = 1000  # round trips per block and side: 15k per side in all
WARMUP = 1500
STAGE_BLOCKS = 3  # blocks per side against the --stages twins
P50_TARGET = 1.3
FLOOR_BACKENDS = {"floor": "libsodium", "openssl-floor": "cryptography"}
"""The aead-floor sides and the ChaCha20-Poly1305 of each (`telepresence.aead` backends)."""
SECURE_OVER_INSECURE = 1.3
"""Security's own cost, enforced: measured 1.08-1.12x (1.15-1.21x with OpenSSL)."""
WARM_CALLS = 5000

# 2. bottleneck
RATE_BPS = 20e6
RATE = "20mbit"
QUEUE = "64kB"
BULK_SHARE = 1.2  # unmarked bulk, of the rate
VIDEO_SHARE = 0.3  # AF41 video, of the rate
BULK_BYTES = 1200
CONTROL_HZ = 500
ROUNDS = 5
LEAD_S = 0.2  # blaster on, queue filling, control running but not kept
MEASURE_S = 0.6
LINGER_S = 0.1  # after the last probe: the FIFO holds 25.6 ms of bulk
ALLOWANCE_US = 1000.0  # priority p99 <= unloaded p99 + this
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # == SCM_TIMESTAMPNS (Linux)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
TIMESPEC = struct.Struct("=qq")

# 3. receive rate
RATE_TARGET = 100_000
OVERLOAD_N = 100_000  # datagrams sent as fast as the sender can: the receiver's ceiling
FINAL_S = 2.0
CONFIRM = (0.97, 0.90, 0.83)  # of the ceiling: the rates tried for FINAL_S, until one holds
MAX_LOSS = 0.01
BIG_BUFFER = 4 << 20


def _command() -> JointCommand:
    return JointCommand(positions=np.linspace(-0.5, 0.5, 6), gripper=0.5)


def _keys() -> SessionKeys:
    return SessionKeys.derive(SECRET, SESSION)


def _client(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    sock.settimeout(2.0)  # a lost datagram fails the benchmark instead of hanging it
    return sock


def _p(samples_ns: np.ndarray | list[int]) -> dict[str, float]:
    return percentiles_us(samples_ns) if len(samples_ns) else {"n": 0}


# ---------------------------------------------------------------------------------------------
# 1. Secure round trip


class _Side:
    """One client side of the round trip: its socket, message codec and samples."""

    def __init__(
        self,
        address: tuple[str, int],
        pack: Callable[[int], bytes | bytearray],
        unpack: Callable[[bytes], Any] | None,
    ) -> None:
        self.sock = _client(address)
        self.pack, self.unpack = pack, unpack
        self.blocks: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []  # per round trip: pack, send -> reply, unpack (ns)
        self.seq = 0
        self.reply_bytes = 0

    def block(self, n: int = BLOCK, keep: bool = True) -> None:
        clock = time.perf_counter_ns
        samples = np.empty(n, dtype=np.int64)
        parts = np.empty((n, 3), dtype=np.int64)
        send, recv, pack, unpack = self.sock.send, self.sock.recv, self.pack, self.unpack
        first = float(_command().positions[0])
        for i in range(n):
            t0 = clock()
            self.seq += 1
            data = pack(self.seq)
            t1 = clock()
            send(data)
            reply = recv(2048)
            t2 = clock()
            if unpack is not None:
                header, echo = unpack(reply)
            t3 = clock()
            samples[i] = t3 - t0
            parts[i] = (t1 - t0, t2 - t1, t3 - t2)
            # The benchmark's own check, outside the timed span (the bare side checks nothing).
            if unpack is not None and (
                header.type is not MessageType.JOINT_COMMAND or echo.positions[0] != first
            ):
                raise AssertionError(f"reply to command {self.seq} is not its echo: {header}")
        self.reply_bytes = len(reply)
        if keep:
            self.blocks.append(samples)
            self.parts.append(parts)

    def close(self) -> None:
        self.sock.close()


def _sides(
    bare: tuple[str, int],
    plain: tuple[str, int],
    secure: tuple[str, int],
    floors: dict[str, tuple[str, int]] | None = None,
) -> dict[str, _Side]:

    command, keys = _command(), _keys()
    sealer, opener = keys.sealer(Role.STATION), keys.opener(Role.STATION)
    monotonic_ns = time.monotonic_ns
    sealed_size = len(keys.sealer(Role.STATION).seal(command, stream=1, seq=1, send_time_ns=0))
    payload = bytes(sealed_size)

    stream = Stream.COMMAND  # looked up once: an enum member lookup costs ~0.2 µs cold

    def plain_pack(seq: int) -> bytearray:
        return encode(command, stream=stream, session=SESSION, seq=seq, send_time_ns=monotonic_ns())

    def secure_pack(seq: int) -> bytes:
        return sealer.seal(command, stream=stream, seq=seq, send_time_ns=monotonic_ns())

    sides = {
        "bare": _Side(bare, lambda _seq: payload, None),
        "insecure": _Side(plain, plain_pack, decode),
        "secure": _Side(secure, secure_pack, opener.open),
    }
    for name, address in (floors or {}).items():
        sides[name] = _Side(address, *_floor_codec(keys, command, FLOOR_BACKENDS[name]))
    return sides


def _floor_codec(
    keys: SessionKeys, command: JointCommand, backend: str
) -> tuple[Callable[[int], bytes], Callable[[bytes], Any]]:
    """The aead-floor client: seal a pre-encoded body under a packed header, open the echo;
    the reply's check is the same as the others' (type and first position)."""
    head, body = encode_parts(
        command, stream=Stream.COMMAND, session=SESSION, seq=1, send_time_ns=0,
        flags=FLAG_AUTHENTICATED, trailer=AUTH_TAG_SIZE,
    )  # fmt: skip
    magic, version, mtype, flags, stream, session, length, _, _, _ = HEADER.unpack(head)
    body = bytes(body)
    seal_ = cipher(keys.station_to_robot, backend).seal
    open_aead = cipher(keys.robot_to_station, backend).open
    pack, unpack, pack_nonce = HEADER.pack, HEADER.unpack_from, struct.Struct("<IQ").pack
    monotonic_ns = time.monotonic_ns
    echo = (_FloorReply(MessageType(mtype)), _FloorEcho(command.positions[0]))
    wrong = (_FloorReply(MessageType.HEARTBEAT), _FloorEcho(None))

    def seal(seq: int) -> bytes:
        h = pack(magic, version, mtype, flags, stream, session, length, 0, seq, monotonic_ns())
        return seal_(pack_nonce(stream, seq), h, body)

    def open_(reply: bytes) -> Any:
        f = unpack(reply)
        plain = open_aead(pack_nonce(f[4], f[8]), reply, 32)
        return echo if plain == body and f[2] == mtype else wrong

    return seal, open_


class _FloorReply:
    __slots__ = ("type",)

    def __init__(self, mtype: MessageType) -> None:
        self.type = mtype


class _FloorEcho:
    __slots__ = ("positions",)

    def __init__(self, first: Any) -> None:
        self.positions = (first,)


def _warm_costs() -> dict[str, float]:
    """The same calls as the round trip's, in a warm loop (mean µs over WARM_CALLS)."""
    command, keys = _command(), _keys()
    station_sealer = keys.sealer(Role.STATION)
    robot_sealer, station_opener = keys.sealer(Role.ROBOT), keys.opener(Role.STATION)
    n = WARM_CALLS
    sealed = [station_sealer.seal(command, stream=1, seq=i + 1, send_time_ns=i) for i in range(n)]
    plain = [
        bytes(encode(command, stream=1, session=SESSION, seq=i + 1, send_time_ns=i))
        for i in range(n)
    ]
    echo = robot_sealer.seal(command, stream=1, seq=1, send_time_ns=0)
    addr = ("127.0.0.1", 9)

    def each(fn: Callable[[Any], Any], items: list[Any]) -> float:
        t0 = time.perf_counter_ns()
        for x in items:
            fn(x)
        return round((time.perf_counter_ns() - t0) / len(items) / 1e3, 3)

    seqs = list(range(n + 1, 2 * n + 1))
    out = {
        "seal": each(lambda s: robot_sealer.seal(command, stream=1, seq=s, send_time_ns=0), seqs),
        "open": each(station_opener.open, [echo] * n),
        "encode": each(
            lambda s: encode(command, stream=1, session=SESSION, seq=s, send_time_ns=0), seqs
        ),
        "decode": each(decode, plain),
    }
    # For reference: a general header parse, and each cipher's AEAD call on its own.
    nonce_ = nonce(1, 1)
    sealed_parts = {"session": SESSION, "send_time_ns": 0, "flags": FLAG_AUTHENTICATED,
                    "trailer": AUTH_TAG_SIZE, "stream": 1}  # fmt: skip
    head, plain_body = encode_parts(command, seq=1, **sealed_parts)
    echoes = [echo] * n
    out["open.header_parse"] = each(lambda d: Header.parse(d, FLAG_AUTHENTICATED), echoes)
    for backend in FLOOR_BACKENDS.values():
        aead = cipher(keys.robot_to_station, backend)
        out[f"open.aead[{backend}]"] = each(
            lambda d, a=aead: a.open(nonce_, d, HEADER_SIZE), echoes
        )
        out[f"seal.aead[{backend}]"] = each(
            lambda _, a=aead: a.seal(nonce_, head, plain_body), seqs
        )
    secure_core, plain_core = robot_core(keys), robot_core(None)
    out["receive_datagram_secure"] = each(lambda d: secure_core.receive_datagram(d, addr, 0),
                                          sealed)  # fmt: skip
    out["receive_datagram_insecure"] = each(lambda d: plain_core.receive_datagram(d, addr, 0),
                                            plain)  # fmt: skip
    assert secure_core.counters.superseded == plain_core.counters.superseded == n - 1
    return out


def _stage_profile(peer_cpu: int | None) -> dict[str, Any]:
    """Server stages in situ: the ``--stages`` twins of the insecure and secure servers."""
    out: dict[str, Any] = {}
    with (
        Peer("runtime-stages", cpu=peer_cpu) as plain_peer,
        Peer("secure", cpu=peer_cpu, args=[*KEY_ARGS, "--stages"]) as secure_peer,
    ):
        sides = _sides(plain_peer.address, plain_peer.address, secure_peer.address)
        sides.pop("bare").close()
        try:
            for side in sides.values():
                side.block(WARMUP // 3, keep=False)
            for _ in range(STAGE_BLOCKS):
                for side in sides.values():
                    side.block()
        finally:
            for side in sides.values():
                side.close()
        for name, peer in (("insecure", plain_peer), ("secure", secure_peer)):
            assert peer.close() == 0, f"the {name} --stages server failed"
            report = json.loads(peer.readline(10))
            client = _client_parts(sides[name])
            out[name] = {"client": client, "server": report["stages_us"]}
    return out


def _client_parts(side: _Side) -> dict[str, dict[str, float]]:
    split = np.concatenate(side.parts)
    names = ("pack", "send_to_reply", "unpack")
    return {name: percentiles_us(split[:, i]) for i, name in enumerate(names)}


@pytest.fixture
def echo_servers() -> Iterator[tuple[dict[str, tuple[str, int]], int | None, int | None]]:
    cpus = two_cpus()
    client_cpu, peer_cpu = cpus if cpus else (None, None)
    with (
        Peer("bare", cpu=peer_cpu) as bare,
        Peer("runtime", cpu=peer_cpu) as plain,
        Peer("secure", cpu=peer_cpu, args=KEY_ARGS) as secure,
        Peer("aead-floor", cpu=peer_cpu, args=[*KEY_ARGS, "--aead", "libsodium"]) as floor,
        Peer("aead-floor", cpu=peer_cpu, args=[*KEY_ARGS, "--aead", "cryptography"]) as ossl,
    ):
        yield (
            {"bare": bare.address, "insecure": plain.address, "secure": secure.address,
             "floor": floor.address, "openssl-floor": ossl.address},
            client_cpu,
            peer_cpu,
        )  # fmt: skip
        assert floor.close() == 0, "the aead-floor echo server failed"
        assert ossl.close() == 0, "the aead-floor (cryptography) echo server failed"
        assert secure.close() == 0, "the secure echo server reported errors"
        assert plain.close() == 0, "the insecure echo server reported handler errors"
        assert bare.close() == 0


def test_secure_round_trip_vs_insecure_and_bare(benchmark, echo_servers) -> None:  # type: ignore[no-untyped-def]
    addresses, client_cpu, peer_cpu = echo_servers
    floors = {name: addresses[name] for name in FLOOR_BACKENDS}
    sides = _sides(addresses["bare"], addresses["insecure"], addresses["secure"], floors)
    bare, plain, secure = (sides[k] for k in ("bare", "insecure", "secure"))
    floor, ossl = sides["floor"], sides["openssl-floor"]

    def baselines() -> None:
        bare.block()
        plain.block()
        floor.block()
        ossl.block()

    try:
        with pinned(client_cpu):
            for side in sides.values():
                side.block(WARMUP, keep=False)
            run_abab(benchmark, baselines, secure.block, blocks=BLOCKS)
            extended = block_ratio(secure.blocks, bare.blocks, 50) > P50_TARGET
            if extended:
                # Close to the line on a shared machine: measure as long again and judge all
                # blocks together (more samples, not a second chance at the same few).
                for _ in range(BLOCKS):
                    baselines()
                    secure.block()
            stages = _stage_profile(peer_cpu)
            warm = _warm_costs()
    finally:
        for side in sides.values():
            side.close()

    pooled = {name: percentiles_us(np.concatenate(s.blocks)) for name, s in sides.items()}
    names = {"secure/bare": ("secure", "bare"), "insecure/bare": ("insecure", "bare"),
             "secure/insecure": ("secure", "insecure"), "floor/bare": ("floor", "bare"),
             "secure/floor": ("secure", "floor"), "openssl-floor/bare": ("openssl-floor", "bare"),
             "openssl-floor/floor": ("openssl-floor", "floor")}  # fmt: skip
    block_median = {
        pair: {f"p{q:g}": block_ratio(sides[a].blocks, sides[b].blocks, q) for q in (50, 99)}
        for pair, (a, b) in names.items()
    }
    pooled_ratio = {pair: ratios(pooled[a], pooled[b]) for pair, (a, b) in names.items()}
    gap_p50_us = {pair: round(pooled[a]["p50_us"] - pooled[b]["p50_us"], 1)
                  for pair, (a, b) in names.items()}  # fmt: skip
    p50_ratio = block_median["secure/bare"]["p50"]
    benchmark.extra_info.update(
        machine=machine(),
        load_average=os.getloadavg(),  # ~1 is this benchmark itself
        pinned_cpus={"client": client_cpu, "servers": peer_cpu},
        datagram_bytes={
            "bare": len(bare.pack(0)),
            "insecure": len(plain.pack(1 << 40)),
            "secure": secure.reply_bytes,
            "floor": floor.reply_bytes,
            "openssl-floor": ossl.reply_bytes,
        },
        blocks=len(secure.blocks),
        extended_to_double_length=extended,
        round_trips_per_block=BLOCK,
        round_trip_us=pooled,
        block_median_ratio=block_median,
        pooled_ratio=pooled_ratio,
        gap_p50_us=gap_p50_us,
        client_parts_us={"insecure": _client_parts(plain), "secure": _client_parts(secure)},
        stages_in_situ_us=stages,
        warm_loop_us=warm,
        per_block_p50_p99_us={
            name: [np.round(np.percentile(b, (50, 99)) / 1e3, 1).tolist() for b in s.blocks]
            for name, s in sides.items()
        },
        targets={"secure/bare p50": P50_TARGET},
    )
    srv = {k: {s: v["p50_us"] for s, v in stages[k]["server"].items() if s != "n"} for k in stages}
    cli = {k: {s: v["p50_us"] for s, v in stages[k]["client"].items()} for k in stages}
    print(
        f"\nround trip µs  bare     {pooled['bare']}"
        f"\n               insecure {pooled['insecure']}"
        f"\n               floor    {pooled['floor']}"
        f"\n         openssl-floor  {pooled['openssl-floor']}"
        f"\n               secure   {pooled['secure']}\n  block-median ratios {block_median}"
        f"\n  pooled ratios {pooled_ratio}\n  p50 gaps µs {gap_p50_us}"
        f"\n  in situ p50 µs: client {cli}\n                  server {srv}"
        f"\n  warm loop µs: {warm}"
    )
    assert len({len(s.blocks) for s in sides.values()}) == 1 and len(secure.blocks) in (
        BLOCKS,
        2 * BLOCKS,
    )
    # Enforced: what security adds on top of the runtime (secure vs insecure, same run).
    check_targets(
        {"p50": block_median["secure/insecure"]["p50"]}, {"p50": SECURE_OVER_INSECURE},
        "secure round trip / insecure runtime round trip",
    )  # fmt: skip
    check_targets(
        {"p50": p50_ratio}, {"p50": P50_TARGET}, "secure round trip / bare uvloop echo",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 2. Control through a saturated bottleneck


def _stamped_receiver() -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BIG_BUFFER)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    return rx


class _Bottleneck:
    """The control sender and the receiving end of both relays, in this process."""

    def __init__(self, relays: dict[str, RelayProcess], rxs: dict[str, socket.socket]) -> None:
        self.relays, self.rxs = relays, rxs
        self.txs: dict[str, socket.socket] = {}
        for name, relay in relays.items():
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            set_tos(tx, TrafficClass.CONTROL.tos)  # EF
            tx.connect(relay.address)
            self.txs[name] = tx
        self.command = _command()
        self.control_bytes = len(encode(self.command, stream=1, session=1, seq=1, send_time_ns=0))
        self.seq = 0
        self.kept: dict[int, str] = {}  # seq -> condition, for the probes that count
        self.one_way: dict[str, list[int]] = {}
        self.per_round: dict[str, list[dict[str, float]]] = {}
        self.sent: dict[str, int] = {}
        self.window: tuple[str, int, int] | None = None  # condition, start, end (realtime ns)
        self.load_bytes: dict[str, dict[str, int]] = {}  # condition -> class -> bytes in window
        self.load_s: dict[str, float] = {}
        self.offered: dict[str, list[dict[str, Any]]] = {}

    def drain(self) -> None:
        for rx in self.rxs.values():
            while True:
                try:
                    data, anc, _flags, _addr = rx.recvmsg(2048, 256)
                except BlockingIOError:
                    break
                stamp, tos = 0, 0
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = TIMESPEC.unpack(value)
                        stamp = sec * 1_000_000_000 + nsec
                    elif level == socket.IPPROTO_IP and kind == socket.IP_TOS:
                        tos = value[0]
                if len(data) == self.control_bytes:
                    header, _ = decode(data)
                    condition = self.kept.pop(header.seq, None)
                    if condition is not None:
                        self.one_way[condition].append(stamp - header.send_time_ns)
                elif self.window is not None and self.window[1] <= stamp < self.window[2]:
                    cls = "video" if tos >> 2 == TrafficClass.VIDEO.dscp else "bulk"
                    counts = self.load_bytes.setdefault(self.window[0], {"bulk": 0, "video": 0})
                    counts[cls] += len(data)

    def phase(
        self,
        condition: str,
        relay: str,
        loaded: bool,
        cpu: int | None,
        measure_s: float = MEASURE_S,
    ) -> None:
        """Control at CONTROL_HZ for LEAD_S (not kept) + `measure_s` (kept), through `relay`,
        with the blaster on when `loaded`."""
        self.one_way.setdefault(condition, [])
        self.sent.setdefault(condition, 0)
        blaster = None
        if loaded:
            host, port = self.relays[relay].address
            load = ["--to", f"{host}:{port}", "--bulk", str(BULK_SHARE * RATE_BPS),
                    "--video", str(VIDEO_SHARE * RATE_BPS)]  # fmt: skip
            blaster = Peer("blaster", cpu=cpu, args=load)
        try:
            tx, rxs = self.txs[relay], list(self.rxs.values())
            period = 1_000_000_000 // CONTROL_HZ
            first = len(self.one_way[condition])
            start = time.monotonic_ns()
            keep_from, end = start + int(LEAD_S * 1e9), start + int((LEAD_S + measure_s) * 1e9)
            due = start
            window_start = 0
            while True:
                now = time.monotonic_ns()
                if now >= due:
                    if now >= end:
                        break
                    self.seq += 1
                    if now >= keep_from:
                        if not window_start:
                            window_start = time.time_ns()
                        self.kept[self.seq] = condition
                        self.sent[condition] += 1
                    tx.send(encode(self.command, stream=Stream.COMMAND, session=SESSION,
                                   seq=self.seq, send_time_ns=time.time_ns()))  # fmt: skip
                    due += period
                    if due < now:  # fell behind (a stall): skip, do not burst
                        due = now + period
                    self.window = (condition, window_start, 1 << 62) if window_start else None
                ready, _, _ = select.select(rxs, [], [], max(0, due - time.monotonic_ns()) / 1e9)
                if ready:
                    self.drain()
            window_end = time.time_ns()
            self.window = (condition, window_start, window_end)
            self.load_s[condition] = (
                self.load_s.get(condition, 0.0) + (window_end - window_start) / 1e9
            )
        finally:
            if blaster is not None:
                code = blaster.close()
                line = blaster.readline(5)
                blaster.kill()
                assert code == 0, f"blaster exited with {code}"
                self.offered.setdefault(condition, []).append(json.loads(line))
        linger_end = time.monotonic() + LINGER_S
        while time.monotonic() < linger_end:
            select.select(list(self.rxs.values()), [], [], 0.005)
            self.drain()
        self.window = None
        samples = self.one_way[condition][first:]
        self.per_round.setdefault(condition, []).append(_p(samples))

    def close(self) -> None:
        for s in (*self.txs.values(), *self.rxs.values()):
            s.close()


def test_control_p99_through_a_saturated_bottleneck(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cpus = two_cpus()
    local_cpu, relay_cpu = cpus if cpus else (None, None)
    rxs = {"priority": _stamped_receiver(), "droptail": _stamped_receiver()}
    relays: dict[str, RelayProcess] = {}
    try:
        for qdisc, rx in rxs.items():
            relays[qdisc] = RelayProcess(
                rx.getsockname(),
                ["--rate", RATE, "--queue", QUEUE, "--qdisc", qdisc],
                tmp_path,
                cpu=relay_cpu,
            )
        net = _Bottleneck(relays, rxs)
        with pinned(local_cpu):
            for relay in relays:  # the relays learn their client
                net.phase("warmup", relay, False, local_cpu, measure_s=0.1)

            def baselines() -> None:
                net.phase("unloaded", "priority", False, local_cpu)
                net.phase("fifo", "droptail", True, local_cpu)

            def priority() -> None:
                net.phase("priority", "priority", True, local_cpu)

            run_abab(benchmark, baselines, priority, blocks=ROUNDS)
        stats = {name: relay.stop() for name, relay in relays.items()}
    finally:
        for relay in relays.values():
            relay.kill()
        for rx in rxs.values():
            rx.close()
    net.close()

    conditions = ("unloaded", "priority", "fifo")
    one_way = {c: _p(net.one_way[c]) for c in conditions}
    lost = {c: net.sent[c] - len(net.one_way[c]) for c in conditions}
    loss = {c: round(lost[c] / net.sent[c], 4) for c in conditions}
    loaded = ("priority", "fifo")

    def of_rate(nbytes: float, seconds: float) -> float:
        return round(nbytes * 8 / seconds / RATE_BPS, 3)

    delivered = {c: {cls: of_rate(b, net.load_s[c]) for cls, b in net.load_bytes[c].items()}
                 for c in loaded}  # fmt: skip
    offered = {c: {cls: of_rate(sum(o[cls] for o in net.offered[c]) * BULK_BYTES,
                                sum(o["seconds"] for o in net.offered[c]))
                   for cls in ("bulk", "video")} for c in loaded}  # fmt: skip
    # Asserted: per round (the three conditions of a round run back to back), priority p99 minus
    # unloaded p99, the median over rounds; the pooled difference is reported beside it.
    excess = {
        c: [round(r["p99_us"] - u["p99_us"], 1)
            for r, u in zip(net.per_round[c], net.per_round["unloaded"], strict=True)]
        for c in loaded
    }  # fmt: skip
    median_excess = {c: round(float(np.median(v)), 1) for c, v in excess.items()}
    pooled_excess = {c: round(one_way[c]["p99_us"] - one_way["unloaded"]["p99_us"], 1)
                     for c in loaded}  # fmt: skip
    link = {"rate_bps": RATE_BPS, "queue": QUEUE, "control_hz": CONTROL_HZ,
            "bulk_serialisation_us": BULK_BYTES * 8e6 / RATE_BPS, "offered_of_rate": offered,
            "control_bytes": net.control_bytes, "delivered_of_rate": delivered}  # fmt: skip
    benchmark.extra_info.update(
        machine=machine(),
        load_average=os.getloadavg(),  # ~1 is this benchmark itself
        pinned_cpus={"sender_receiver_blaster": local_cpu, "relays": relay_cpu},
        link=link,
        rounds=ROUNDS,
        measure_s_per_round=MEASURE_S,
        one_way_us=one_way,
        per_round_one_way_us=net.per_round,
        control_lost=lost,
        control_loss=loss,
        p99_minus_unloaded_us={
            "per_round": excess,
            "median_over_rounds": median_excess,
            "pooled": pooled_excess,
        },
        relay_stats={
            name: {k: s[k] for k in ("up", "late_us", "wake_early_us", "send_errors")}
            for name, s in stats.items()
        },
        targets={"priority p99 - unloaded p99, median over rounds, us <=": ALLOWANCE_US},
    )
    print(
        f"\ncontrol one-way µs (500 Hz EF, {RATE} bottleneck, {QUEUE} queue)"
        f"\n  unloaded {one_way['unloaded']}\n  priority {one_way['priority']}"
        f"\n  fifo     {one_way['fifo']}\n  lost {lost} of {net.sent}"
        f"\n  offered/rate {offered}\n  delivered/rate {delivered}"
        f"\n  p99 - unloaded p99 µs: per round {excess}, median {median_excess}, pooled "
        f"{pooled_excess} (target: priority median <= {ALLOWANCE_US:g})"
    )
    for c in loaded:
        assert offered[c]["bulk"] >= 1.0, f"{c}: bulk offered below the rate: {offered[c]}"
        total = delivered[c]["bulk"] + delivered[c]["video"]
        assert total >= 0.9, f"{c}: the link was not full: {delivered[c]}"
    assert loss["unloaded"] < 0.01 and loss["priority"] < 0.01, f"control lost: {lost}"
    assert one_way["fifo"]["p50_us"] >= one_way["priority"]["p50_us"] + 5_000, "FIFO did not queue"
    check_targets(
        {"priority p99 - unloaded p99": median_excess["priority"]},
        {"priority p99 - unloaded p99": ALLOWANCE_US},
        "control through a saturated priority bottleneck (median over rounds)",
        unit=" µs",
    )


# ---------------------------------------------------------------------------------------------
# 3. Authenticated commands per second


def _udp_drops(port: int) -> int:
    """The kernel's drop counter of the UDP socket bound to 127.0.0.1:`port`."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[-1])
    return 0


class _Receiver:
    """A `peers.py receiver` process, the datagrams it is sent, and its trials."""

    def __init__(self, path: str, cpu: int | None) -> None:
        self.path = path
        self.peer = Peer("receiver", cpu=cpu, args=["--path", path, *KEY_ARGS])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.peer.address)
        keys, command = _keys(), _command()
        self._seal = keys.sealer(Role.STATION).seal
        self._command = command
        self._pool = [self._seal(command, stream=1, seq=i + 1, send_time_ns=i) for i in range(64)]
        self.seq = len(self._pool)
        self.trials: list[dict[str, Any]] = []

    def datagrams(self, n: int) -> list[bytes]:
        """`n` datagrams, pre-built: sealed commands with fresh sequence numbers (plain
        encoded ones for the insecure path; for the bare counter, references to a few sealed
        ones, which costs the sender the same)."""
        first, self.seq = self.seq + 1, self.seq + n
        seqs = range(first, first + n)
        command, seal = self._command, self._seal
        if self.path == "bare":
            pool = self._pool
            return [pool[i & 63] for i in range(n)]
        if self.path == "plain":
            return [bytes(encode(command, stream=Stream.COMMAND, session=SESSION, seq=s,
                                 send_time_ns=s)) for s in seqs]  # fmt: skip
        return [seal(command, stream=Stream.COMMAND, seq=s, send_time_ns=s) for s in seqs]

    def stats(self) -> dict[str, Any]:
        stdin = self.peer.proc.stdin
        assert stdin is not None
        stdin.write(b"stats\n")
        stdin.flush()
        return dict(json.loads(self.peer.readline(5)))

    def trial(self, rate: int | None, n: int) -> dict[str, Any]:
        """Send `n` datagrams at `rate` per second (None: as fast as the sender can)."""
        data = self.datagrams(n)
        port, pid = self.peer.address[1], self.peer.proc.pid
        drops0, before, cpu0 = _udp_drops(port), self.stats()["accepted"], cpu_time_ns(pid)
        took = _blast(self.sock, data, rate)
        at_end = self.stats()["accepted"] - before
        settled, last = time.monotonic() + 2.0, -1
        while time.monotonic() < settled:  # until the receiver has drained its buffer
            final = self.stats()
            if final["accepted"] == last:
                break
            last = final["accepted"]
            time.sleep(0.02)
        accepted = final["accepted"] - before
        cpu = cpu_time_ns(pid) - cpu0
        result = {
            "rate": rate, "sent": n, "sent_per_s": round(n / took), "accepted": accepted,
            "accepted_per_s": round(accepted / took), "at_end_per_s": round(at_end / took),
            "loss": round(1 - accepted / n, 5), "backlog_at_end": round(1 - at_end / n, 5),
            "kernel_drops": _udp_drops(port) - drops0, "refused": final.get("refused", 0),
            "receiver_cpu_us_per_datagram": round(cpu / max(accepted, 1) / 1e3, 3),
        }  # fmt: skip
        result["ok"] = (
            result["loss"] < MAX_LOSS
            and result["backlog_at_end"] < MAX_LOSS
            and (rate is None or result["sent_per_s"] >= 0.98 * rate)
            and result["refused"] == 0
        )
        self.trials.append(result)
        return result

    def close(self) -> None:
        self.sock.close()
        self.peer.close()
        self.peer.kill()


def _blast(sock: socket.socket, data: list[bytes], rate: int | None) -> float:
    """Send `data` paced at `rate` per second (by elapsed time, catching up in bursts after a
    stall); returns the seconds it took."""
    send, monotonic_ns, n = sock.send, time.monotonic_ns, len(data)
    per_ns = rate / 1e9 if rate else 0.0
    i = 0
    start = monotonic_ns()
    while i < n:
        target = min(n, int((monotonic_ns() - start) * per_ns) + 1) if rate else n
        while i < target:
            with contextlib.suppress(OSError):  # ENOBUFS: counted as lost at the receiver
                send(data[i])
            i += 1
    return (monotonic_ns() - start) / 1e9


def test_authenticated_commands_per_second(benchmark) -> None:  # type: ignore[no-untyped-def]
    cpus = two_cpus()
    sender_cpu, receiver_cpu = cpus if cpus else (None, None)
    receivers: dict[str, _Receiver] = {}
    try:
        for path in ("secure", "plain", "bare"):
            receivers[path] = _Receiver(path, receiver_cpu)
        ceiling: dict[str, dict[str, Any]] = {}
        finals: dict[str, dict[str, Any]] = {}

        def measure() -> None:
            for path, r in receivers.items():  # one path after the other, each in one go
                ceiling[path] = r.trial(None, OVERLOAD_N)
                top = ceiling[path]["at_end_per_s"]  # accepted while the buffer overflowed
                for share in CONFIRM:
                    rate = int(round(share * top, -3))
                    finals[path] = r.trial(rate, int(rate * FINAL_S))
                    if finals[path]["ok"]:
                        break

        with pinned(sender_cpu):
            benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for r in receivers.values():
            r.close()

    per_s = {path: finals[path]["accepted_per_s"] for path in finals}
    # The receiver kept up with a sender sending as fast as it can: the sender is the limit.
    bound = {path: c["loss"] < MAX_LOSS and c["backlog_at_end"] < MAX_LOSS
             for path, c in ceiling.items()}  # fmt: skip
    names = {"secure/insecure": ("secure", "plain"), "secure/bare": ("secure", "bare"),
             "insecure/bare": ("plain", "bare")}  # fmt: skip
    ratio = {pair: round(per_s[a] / per_s[b], 3) for pair, (a, b) in names.items()}
    benchmark.extra_info.update(
        machine=machine(),
        load_average=os.getloadavg(),  # ~1 is this benchmark itself
        pinned_cpus={"sender": sender_cpu, "receiver": receiver_cpu},
        receive_path="telepresence.udp.open_udp (uvloop DatagramProtocol) -> "
        "RobotCore.receive_datagram; bare: a uvloop DatagramProtocol counting",
        datagram_bytes={path: len(r.datagrams(1)[0]) for path, r in receivers.items()},
        ceiling=ceiling,
        ceiling_per_s={path: c["at_end_per_s"] for path, c in ceiling.items()},
        sender_bound=bound,
        trials={path: r.trials for path, r in receivers.items()},
        final=finals,
        accepted_per_s=per_s,
        ratio=ratio,
        targets={"secure accepted_per_s >=": RATE_TARGET},
    )
    shown = ("loss", "kernel_drops", "backlog_at_end", "receiver_cpu_us_per_datagram")
    brief = {p: {k: f[k] for k in shown} for p, f in finals.items()}
    print(
        f"\naccepted/s over {FINAL_S:g} s, < 1 % loss: {per_s} ratios {ratio}"
        f"\n  ceiling (overloaded) /s: { {p: c['at_end_per_s'] for p, c in ceiling.items()} }"
        f"\n  sender-bound: {bound}\n  finals: {brief}"
    )
    for path, f in finals.items():
        assert f["refused"] == 0, f"{path}: the receiver refused datagrams: {f}"
    assert finals["secure"]["ok"], f"secure: no rate held < 1 % loss: {finals['secure']}"
    # Enforced: authentication keeps at least half the insecure receive rate (measured
    # 0.71-0.84x), and the 100k/s (measured 153k-172k/s, 5.7-6.3 µs per datagram).
    assert per_s["secure"] >= 0.5 * per_s["plain"], f"secure/insecure rate: {per_s}"
    assert per_s["secure"] >= RATE_TARGET, (
        f"authenticated commands/s: {per_s['secure']} < {RATE_TARGET} "
        f"(insecure {per_s['plain']}, bare {per_s['bare']}); docs/benchmarks.md §7"
    )
