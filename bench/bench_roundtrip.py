"""Command round trip through the runtime on loopback, against a bare uvloop UDP echo.

Both sides ping-pong one datagram at a time from a blocking UDP socket in this process to a
server in a child process (client and server pinned to one core each of the two):

- baseline: a datagram of the size of an encoded 6-joint JointCommand (96 bytes), echoed by a
  bare uvloop `DatagramProtocol` (``transport.sendto(data, addr)``);
- runtime: the client encodes a JointCommand with `telepresence.wire.encode` and sends it; the
  server runs the robot endpoint's real receive path (the runtime's UDP adapter, then
  `RobotCore.receive_datagram`: decode, session, `SequenceWindow`, `CommandGuard` with the
  sim-arm manifest), takes the command as the control tick would and echoes it back: the
  runtime encodes the checked command again under its own header; the client decodes the echo
  and checks it is this command.

Baseline and runtime blocks of `BLOCK` round trips alternate (ABAB) so both see the same noise.
Targets: runtime p50 <= 1.3x bare p50 and p99 <= 1.5x bare p99, each the median over block
pairs of the per-pair ratio (the pooled ratios, and p99.9, are reported beside them).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from benchkit import (
    Peer,
    block_ratio,
    check_targets,
    machine,
    percentiles_us,
    pinned,
    ratios,
    run_abab,
    two_cpus,
)

from robots.api import JointCommand
from telepresence.streams import Stream
from telepresence.wire import MessageType, decode, encode

# This machine is shared: a benchmark that misses a target is measured once more; a
# regression misses both times, a neighbour's burst rarely twice (docs/benchmarks.md).
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

BLOCKS = 20
BLOCK = 1000  # round trips per block: 20k per side in all
WARMUP = 2000
P50_TARGET = 1.3
P99_TARGET = 1.5
SESSION = 0x5EED


def _command() -> JointCommand:
    return JointCommand(positions=np.linspace(-0.5, 0.5, 6), gripper=0.5)


def _client(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    sock.settimeout(2.0)  # a lost datagram fails the benchmark instead of hanging it
    return sock


@pytest.fixture  # per attempt: a rerun's sequence numbers start again at 1, and a server that
# kept its window from the first attempt would drop them all as stale
def servers() -> Iterator[tuple[tuple[str, int], tuple[str, int], int | None]]:
    cpus = two_cpus()
    peer_cpu = cpus[1] if cpus else None
    with Peer("bare", cpu=peer_cpu) as bare, Peer("runtime", cpu=peer_cpu) as runtime:
        yield bare.address, runtime.address, cpus[0] if cpus else None
        assert runtime.close() == 0, "the runtime echo server reported handler errors"
        assert bare.close() == 0


def test_command_round_trip_vs_bare_uvloop_echo(benchmark, servers) -> None:  # type: ignore[no-untyped-def]
    bare_address, runtime_address, client_cpu = servers
    bare_sock, runtime_sock = _client(bare_address), _client(runtime_address)
    command = _command()
    first = float(command.positions[0])
    payload = bytes(len(encode(command, stream=1, session=1, seq=1, send_time_ns=0)))
    reply_bytes = 0
    bare_blocks: list[np.ndarray] = []
    runtime_blocks: list[np.ndarray] = []
    # Where a runtime round trip goes, from two more clock reads and the echo's own stamp
    # (~0.2 µs added to a ~100 µs round trip): client encode, client decode, and command
    # stamped -> echo stamped (uplink + server receive path, on the one shared clock).
    parts: list[tuple[int, int, int]] = []
    seq = 0
    clock = time.perf_counter_ns
    monotonic_ns = time.monotonic_ns

    def bare_block(n: int = BLOCK, keep: bool = True) -> None:
        samples = np.empty(n, dtype=np.int64)
        send, recv = bare_sock.send, bare_sock.recv
        for i in range(n):
            t0 = clock()
            send(payload)
            recv(2048)
            samples[i] = clock() - t0
        if keep:
            bare_blocks.append(samples)

    def runtime_block(n: int = BLOCK, keep: bool = True) -> None:
        nonlocal seq, reply_bytes
        samples = np.empty(n, dtype=np.int64)
        send, recv = runtime_sock.send, runtime_sock.recv
        note = parts.append if keep else lambda _: None
        for i in range(n):
            t0 = clock()
            seq += 1
            stamped = monotonic_ns()
            data = encode(command, stream=Stream.COMMAND, session=SESSION, seq=seq,
                          send_time_ns=stamped)  # fmt: skip
            t1 = clock()
            send(data)
            reply = recv(2048)
            t2 = clock()
            header, echo = decode(reply)
            t3 = clock()
            samples[i] = t3 - t0
            if header.type is not MessageType.JOINT_COMMAND or echo.positions[0] != first:
                raise AssertionError(f"reply to command {seq} is not its echo: {header}")
            note((t1 - t0, t3 - t2, header.send_time_ns - stamped))
        reply_bytes = len(reply)
        if keep:
            runtime_blocks.append(samples)

    try:
        with pinned(client_cpu):
            bare_block(WARMUP, keep=False)
            runtime_block(WARMUP, keep=False)
            run_abab(benchmark, bare_block, runtime_block, blocks=BLOCKS)
            p50_ratio = block_ratio(runtime_blocks, bare_blocks, 50)
            p99_ratio = block_ratio(runtime_blocks, bare_blocks, 99)
            extended = p50_ratio > P50_TARGET or p99_ratio > P99_TARGET
            if extended:
                # Close to the line on a shared machine: measure as long again and judge all
                # blocks together (more samples, not a second chance at the same few).
                for _ in range(BLOCKS):
                    bare_block()
                    runtime_block()
                p50_ratio = block_ratio(runtime_blocks, bare_blocks, 50)
                p99_ratio = block_ratio(runtime_blocks, bare_blocks, 99)
    finally:
        bare_sock.close()
        runtime_sock.close()

    bare = percentiles_us(np.concatenate(bare_blocks))
    runtime = percentiles_us(np.concatenate(runtime_blocks))
    split = np.array(parts, dtype=np.int64)
    breakdown = {
        name: percentiles_us(split[:, i])
        for i, name in enumerate(("client_encode", "client_decode", "command_to_echo_stamped"))
    }  # fmt: skip
    benchmark.extra_info.update(
        machine=machine(),
        pinned_cpus={"client": client_cpu, "server": None if client_cpu is None else "other"},
        datagram_bytes={"command": len(payload), "echo": reply_bytes},
        blocks=len(bare_blocks),
        extended_to_double_length=extended,
        round_trips_per_block=BLOCK,
        bare_uvloop_echo=bare,
        runtime=runtime,
        pooled_ratio=ratios(runtime, bare),
        block_median_ratio={"p50": p50_ratio, "p99": p99_ratio},
        runtime_breakdown=breakdown,
        per_block_p50_p99_us={
            side: [np.round(np.percentile(b, (50, 99)) / 1e3, 1).tolist() for b in blocks]
            for side, blocks in (("bare", bare_blocks), ("runtime", runtime_blocks))
        },
        targets={"p50": P50_TARGET, "p99": P99_TARGET},
    )
    print(f"\nround trip µs  bare {bare}\n               runtime {runtime}\n"
          f"  ratios: pooled {ratios(runtime, bare)}, block median p50 {p50_ratio} "
          f"p99 {p99_ratio} (targets {P50_TARGET}, {P99_TARGET})\n  runtime parts "
          f"{ {k: v['p50_us'] for k, v in breakdown.items()} } (p50 µs)")  # fmt: skip
    assert len(runtime_blocks) == len(bare_blocks) in (BLOCKS, 2 * BLOCKS)
    check_targets(
        {"p50": p50_ratio, "p99": p99_ratio},
        {"p50": P50_TARGET, "p99": P99_TARGET},
        "runtime round trip / bare uvloop echo",
    )
