"""The far ends of the benchmarks, each run as a child process (this is a 2-core machine: the
benchmark process gets one core, the peer the other).

    python bench/peers.py {bare,runtime,sink,forward} FD [--to HOST:PORT] [--cpu N]
    python bench/peers.py {secure,runtime-stages} FD [--secret HEX --session N] [--stages]
    python bench/peers.py aead-floor FD --secret HEX --session N [--aead BACKEND]
    python bench/peers.py receiver FD --path {bare,plain,secure} [--secret HEX --session N]
    python bench/peers.py blaster FD --to HOST:PORT --bulk BIT/S [--video BIT/S]

FD is an already bound UDP socket passed by the parent (no port race). Every peer prints
``ready`` once serving. The echo servers run on a uvloop event loop and exit when their stdin
reaches EOF (the parent closed it or died), so a crashed benchmark never leaves one behind.

- ``bare``: a bare uvloop `DatagramProtocol` doing ``transport.sendto(data, addr)``: the floor.
- ``runtime``: the robot endpoint's real receive path. The runtime's own UDP adapter
  (`telepresence.udp.open_udp`, which stamps the arrival time) feeds each datagram to
  `RobotCore.receive_datagram` (decode, session check, `SequenceWindow`, `CommandGuard` with
  the sim-arm manifest, the pending slot, the "decoded" stamp); the command is then taken from
  the pending slot, as the control tick would, and echoed at once: re-encoded under the
  runtime's own header and sent back through the same adapter.
- ``sink``: the receiving half of the naive 1 kHz baseline of `bench_control_rate.py`: a
  blocking socket that counts datagrams until one equal to `SINK_STOP` arrives, then prints
  the count.
- ``forward``: the bare floor of a userspace UDP forwarder, for `bench_netsim.py`: a blocking
  ``recvfrom`` on FD and ``send`` on a socket connected to ``--to`` (the relay's socket
  set-up: a listening socket passed by descriptor, a connected socket towards the server).
  It exits when its stdin reaches EOF.
- ``secure``: the secure robot endpoint's receive path, echoing, for `bench_transport.py`: as
  ``runtime``, but the `RobotCore` has ``secure=SecureSessions(lease)`` with one session's keys
  (`SessionKeys.derive` from ``--secret`` and ``--session``, as the station derives them) and
  the lease taken by that session; the echo is the checked command re-sealed with the robot's
  `Sealer` under its own sequence numbers. With ``--stages`` it also times each stage of the
  server's path (see `_Stages`) and prints their percentiles as one JSON line at exit.
- ``aead-floor``: the least any Python peer can do per sealed datagram with a given
  ChaCha20-Poly1305 (``--aead``: a backend of `telepresence.aead`, default the runtime's own),
  for `bench_transport.py`: a bare uvloop `DatagramProtocol` that unpacks the 32-byte header
  (one precompiled `struct` call), opens the body with the station's key (header as associated
  data), and echoes the plaintext sealed with the robot's key under its own sequence numbers:
  the AEAD work of ``secure`` without the runtime (no message parsing, checks, numpy arrays or
  sequence window).
- ``runtime-stages``: ``runtime``'s echo with ``--stages`` timing (the insecure counterpart of
  ``secure --stages``, so that both profiles come from the same code).
- ``receiver``: how many datagrams a receive path takes per second, for `bench_transport.py`:
  the runtime's UDP adapter (`open_udp` on uvloop) feeding ``RobotCore.receive_datagram``
  (``--path plain``: insecure; ``--path secure``: with the session's keys and lease, as
  ``secure``), or a bare uvloop `DatagramProtocol` that only counts (``--path bare``). Each
  ``stats`` line on stdin is answered with one JSON line of counters; EOF ends it.
- ``blaster``: saturating traffic for `bench_transport.py`: 1200-byte datagrams to ``--to``,
  unmarked "bulk" at ``--bulk`` bit/s from FD and, with ``--video``, AF41-marked "video" from
  a second socket, paced by elapsed time every ~0.5 ms. At stdin EOF it prints one JSON line
  (datagrams sent per flow, seconds) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

SINK_STOP = b"stop"
"""The datagram that ends a sink (shorter than any datagram the sender counts)."""


class BareEcho(asyncio.DatagramProtocol):
    """Sends every datagram straight back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        if not sys.stdin.buffer.read1(4096) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)


async def _serve_protocol(sock: socket.socket, protocol: Any) -> None:
    """Serve `protocol` (a DatagramProtocol factory) on `sock` until stdin closes."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(protocol, sock=sock)
    print("ready", flush=True)
    try:
        await _until_stdin_closes()
    finally:
        transport.close()


async def serve_bare(sock: socket.socket) -> None:
    await _serve_protocol(sock, BareEcho)


async def serve_aead_floor(sock: socket.socket, keys: Any, backend: str | None) -> None:
    import struct

    from telepresence.aead import cipher
    from telepresence.wire.header import HEADER

    open_ = cipher(keys.station_to_robot, backend).open
    seal = cipher(keys.robot_to_station, backend).seal
    unpack, pack, nonce = HEADER.unpack_from, HEADER.pack, struct.Struct("<IQ").pack
    seq = 0

    class Floor(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            nonlocal seq
            magic, version, mtype, flags, stream, session, length, _, sq, _ = unpack(data)
            plain = open_(nonce(stream, sq), data, 32)
            if plain is None:
                raise ValueError(f"datagram {sq} does not verify")
            seq += 1
            header = pack(magic, version, mtype, flags, stream, session, length, 0, seq,
                          time.monotonic_ns())  # fmt: skip
            self.transport.sendto(seal(nonce(stream, seq), header, plain), addr)

    await _serve_protocol(sock, Floor)


def serve_sink(sock: socket.socket) -> None:
    sock.setblocking(True)
    print("ready", flush=True)
    received = 0
    recv = sock.recv
    while recv(2048) != SINK_STOP:
        received += 1
    print(received, flush=True)


def _exit_on_stdin_eof() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


def serve_forward(sock: socket.socket, to: tuple[str, int]) -> None:
    out = socket.socket(sock.family, socket.SOCK_DGRAM)
    out.connect(to)
    sock.setblocking(True)
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    print("ready", flush=True)
    recvfrom, send = sock.recvfrom, out.send
    while True:
        data, _addr = recvfrom(65535)
        send(data)


LEASE_TTL_NS = 3600 * 1_000_000_000
"""Lease of the benchmark peers' session: an hour, so that an idle pause never lapses it (the
robot's own default is 2 s, renewed by every command)."""


def _session_keys(secret_hex: str, session: int) -> Any:
    from telepresence.security import SessionKeys

    return SessionKeys.derive(bytes.fromhex(secret_hex), session)


def robot_core(keys: Any) -> Any:
    """The sim-arm `RobotCore` of the benchmarks: insecure when `keys` is None, else secure
    with `keys` added and the lease taken by their session."""
    from robots.sim_arm import SimArm
    from telepresence.control.lease import ControlLease
    from telepresence.endpoint import EndpointConfig, RobotCore, SecureSessions

    secure = None
    if keys is not None:
        secure = SecureSessions(ControlLease(LEASE_TTL_NS))
        secure.add(keys)
        secure.lease.take(keys.session, time.monotonic_ns())
    core = RobotCore(
        SimArm(), EndpointConfig(control_rate_hz=1000.0), clock=time.monotonic_ns, secure=secure
    )
    core.start(time.monotonic_ns())
    return core


class _Stages:
    """Per-datagram stage times of an echo server, in place (monotonic ns, ~0.05 µs a read):

    - ``adapter``: the adapter's arrival stamp -> the core starts opening/decoding (the
      adapter's handler call, `receive_datagram`'s entry and the timing shim's call);
    - ``open`` (secure) or ``decode`` (plain): `open_datagram` / `decode` themselves;
    - ``checks``: the rest of `receive_datagram` (lease, session, window, guard, pending slot);
    - ``reply``: taking the pending command and sealing (secure) or encoding (plain) the echo;
    - ``send``: handing the reply to the transport (`sendto`);
    - ``server``: arrival stamp -> reply handed over (the sum of the above).

    The open/decode split comes from wrapping ``telepresence.endpoint.open_datagram`` (or
    ``decode``) with a timing shim, in this process only.
    """

    NAMES = ("adapter", "open", "checks", "reply", "send", "server")

    def __init__(self, capacity: int = 200_000) -> None:
        self.rows: list[tuple[int, int, int, int, int, int]] = []
        self.capacity = capacity
        self.mark = [0, 0]  # open start, open end

    def wrap(self, inner: Any) -> Any:
        mark, clock = self.mark, time.monotonic_ns

        def timed(*args: Any) -> Any:
            t = clock()
            out = inner(*args)
            mark[0], mark[1] = t, clock()
            return out

        return timed

    def add(self, arrived: int, received: int, replied: int, sent: int) -> None:
        if len(self.rows) < self.capacity:
            o0, o1 = self.mark
            self.rows.append((o0 - arrived, o1 - o0, received - o1, replied - received,
                              sent - replied, sent - arrived))  # fmt: skip

    def summary(self, opened: str) -> dict[str, Any]:
        import numpy as np

        a = np.asarray(self.rows, dtype=np.float64).reshape(-1, len(self.NAMES)) / 1e3
        out: dict[str, Any] = {"n": int(a.shape[0])}
        for i, name in enumerate(self.NAMES):
            col = a[:, i]
            p50, p99, p999 = np.percentile(col, (50, 99, 99.9)) if col.size else (0, 0, 0)
            out[opened if name == "open" else name] = {
                "p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2),
                "p99_9_us": round(float(p999), 2),
            }  # fmt: skip
        return out


async def serve_echo(sock: socket.socket, keys: Any, stages: bool) -> None:
    """``runtime`` and ``runtime-stages`` (keys None, without and with stage timing) and
    ``secure`` (keys given): see the module docstring."""
    import telepresence.endpoint
    from telepresence.udp import open_udp
    from telepresence.wire import encode

    core = robot_core(keys)
    monotonic_ns = time.monotonic_ns
    receive = core.receive_datagram
    timing = _Stages() if stages else None
    if timing is not None:  # the open/decode split: wrap what receive_datagram calls
        name = "decode" if keys is None else "open_datagram"
        setattr(telepresence.endpoint, name, timing.wrap(getattr(telepresence.endpoint, name)))
    seal = None if keys is None else core.secure.sealers[keys.session].seal
    seq = 0

    def on_datagram(data: bytes, addr: Any, now: int) -> None:
        nonlocal seq
        receive(data, addr, now)
        if timing is not None:
            received = monotonic_ns()
        # What the control tick does first: take the freshest command out of the pending slot.
        pending, core._pending = core._pending, None
        if pending is None:  # malformed, forged, duplicate, stale or rejected: no reply
            return
        header = pending.header
        seq += 1
        if seal is None:
            reply: bytes | bytearray = encode(
                pending.command, stream=header.stream, session=header.session, seq=seq,
                send_time_ns=monotonic_ns(),
            )  # fmt: skip
        else:  # re-sealed with the robot's key, under the robot's own sequence numbers
            reply = seal(
                pending.command, stream=header.stream, seq=seq, send_time_ns=monotonic_ns()
            )
        if timing is None:
            udp.send(reply, addr)
            return
        replied = monotonic_ns()
        udp.send(reply, addr)
        timing.add(now, received, replied, monotonic_ns())

    udp = await open_udp(on_datagram, sock=sock)
    print("ready", flush=True)
    try:
        await _until_stdin_closes()
    finally:
        assert udp.transport is not None
        udp.transport.close()
        core.close()
    if timing is not None:
        summary = timing.summary("decode" if keys is None else "open")
        print(json.dumps({"stages_us": summary, "status": core.status()}), flush=True)
    if udp.handler_errors or core.status()["counters"]["received"] != seq:
        print(f"handler errors: {udp.handler_errors}, status {core.status()}", file=sys.stderr,
              flush=True)  # fmt: skip
        raise SystemExit(1)


class _Count(asyncio.DatagramProtocol):
    """Counts datagrams, nothing else."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


async def serve_receiver(sock: socket.socket, path: str, keys: Any) -> None:
    from telepresence.udp import RECV_BUFFER, open_udp

    loop = asyncio.get_running_loop()
    core = None
    if path == "bare":
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)  # as open_udp does
        transport, counter = await loop.create_datagram_endpoint(_Count, sock=sock)
    else:
        core = robot_core(keys if path == "secure" else None)
        udp = await open_udp(core.receive_datagram, sock=sock)
        transport = udp.transport

    def stats() -> dict[str, Any]:
        if core is None:
            return {"received": counter.received, "accepted": counter.received}
        c = core.counters
        refused = c.malformed + c.duplicate + c.stale + c.dropped + c.rejected
        refused += core.counters.forged + core.counters.unknown_session
        return {"received": c.received, "accepted": c.received - refused, "refused": refused,
                "superseded": c.superseded, "handler_errors": udp.handler_errors}  # fmt: skip

    done = loop.create_future()
    fd = sys.stdin.fileno()
    pending = b""

    def on_stdin() -> None:
        nonlocal pending
        chunk = sys.stdin.buffer.read1(4096)
        if not chunk:
            if not done.done():
                done.set_result(None)
            return
        pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.strip() == b"stats":
                print(json.dumps(stats()), flush=True)

    print("ready", flush=True)
    loop.add_reader(fd, on_stdin)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        assert transport is not None
        transport.close()
        if core is not None:
            core.close()


BLAST_BYTES = 1200
"""Payload of a bulk or video datagram (the link model counts UDP payload bytes)."""


def serve_blaster(
    sock: socket.socket, to: tuple[str, int], bulk_bps: float, video_bps: float
) -> None:
    from telepresence.qos import TrafficClass

    sock.connect(to)  # unmarked: best effort, below every class the relay knows
    flows = [(sock, bulk_bps / (8 * BLAST_BYTES))]
    if video_bps:
        video = socket.socket(sock.family, socket.SOCK_DGRAM)
        video.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TrafficClass.VIDEO.tos)  # AF41
        video.connect(to)
        flows.append((video, video_bps / (8 * BLAST_BYTES)))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()
    payload = bytes(BLAST_BYTES)
    sent = [0] * len(flows)
    print("ready", flush=True)
    start = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - start
        for i, (s, per_s) in enumerate(flows):
            for _ in range(int(elapsed * per_s) + 1 - sent[i]):  # owed by now (catches up)
                with contextlib.suppress(OSError):  # ECONNREFUSED once the relay is gone
                    s.send(payload)
                sent[i] += 1
        time.sleep(0.0005)
    elapsed = time.monotonic() - start
    print(json.dumps({"bulk": sent[0], "video": sent[1] if video_bps else 0,
                      "seconds": elapsed, "bytes": BLAST_BYTES}), flush=True)  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode",
        choices=("bare", "runtime", "sink", "forward", "secure", "runtime-stages", "receiver",
                 "blaster", "aead-floor"),
    )  # fmt: skip
    parser.add_argument("fd", type=int, help="a bound UDP socket passed by the parent")
    parser.add_argument("--to", metavar="HOST:PORT", help="where `forward` and `blaster` send")
    parser.add_argument("--cpu", type=int, help="run on this CPU only")
    parser.add_argument("--secret", help="session secret, 64 hex digits (secure paths)")
    parser.add_argument("--session", type=int, help="session id (secure paths)")
    parser.add_argument("--stages", action="store_true", help="time the echo's stages")
    parser.add_argument("--aead", help="aead-floor's ChaCha20-Poly1305 (telepresence.aead)")
    parser.add_argument("--path", choices=("bare", "plain", "secure"), help="receiver path")
    parser.add_argument("--bulk", type=float, default=0.0, help="blaster bulk bit/s")
    parser.add_argument("--video", type=float, default=0.0, help="blaster AF41 video bit/s")
    args = parser.parse_args(argv)
    if args.cpu is not None:  # pin before anything starts a thread (numpy's BLAS pool)
        os.sched_setaffinity(0, {args.cpu})
    mode = args.mode
    sock = socket.socket(fileno=args.fd)
    if mode == "sink":
        serve_sink(sock)
        return 0
    if mode == "forward":
        if not args.to:
            parser.error("forward needs --to HOST:PORT")
        host, _, port = args.to.rpartition(":")
        serve_forward(sock, (host, int(port)))
        return 0
    if mode == "blaster":
        if not args.to or not args.bulk:
            parser.error("blaster needs --to HOST:PORT and --bulk BIT/S")
        host, _, port = args.to.rpartition(":")
        serve_blaster(sock, (host, int(port)), args.bulk, args.video)
        return 0
    import uvloop

    keys = None
    if mode in ("secure", "aead-floor") or (mode == "receiver" and args.path == "secure"):
        if not args.secret or not args.session:
            parser.error(f"{mode} needs --secret HEX and --session N")
        keys = _session_keys(args.secret, args.session)
    if mode == "aead-floor":
        serve: Any = serve_aead_floor(sock, keys, args.aead)
    elif mode in ("runtime", "secure", "runtime-stages"):
        serve = serve_echo(sock, keys, args.stages or mode == "runtime-stages")
    elif mode == "receiver":
        if not args.path:
            parser.error("receiver needs --path bare|plain|secure")
        serve = serve_receiver(sock, args.path, keys)
    else:
        serve = serve_bare(sock)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
