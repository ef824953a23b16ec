"""The far ends of the benchmarks, each run as a child process (this is a 2-core machine: the
benchmark process gets one core, the peer the other).

    python bench/peers.py {bare,runtime,sink,forward} FD [--to HOST:PORT] [--cpu N]

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
"""

from __future__ import annotations

import argparse
import asyncio
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


async def serve_bare(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(BareEcho, sock=sock)
    print("ready", flush=True)
    try:
        await _until_stdin_closes()
    finally:
        transport.close()


async def serve_runtime(sock: socket.socket) -> None:
    from robots.sim_arm import SimArm
    from telepresence.endpoint import EndpointConfig, RobotCore
    from telepresence.udp import open_udp
    from telepresence.wire import encode

    core = RobotCore(SimArm(), EndpointConfig(control_rate_hz=1000.0), clock=time.monotonic_ns)
    core.start(time.monotonic_ns())
    monotonic_ns = time.monotonic_ns
    receive = core.receive_datagram
    seq = 0

    def on_datagram(data: bytes, addr: Any, now: int) -> None:
        nonlocal seq
        receive(data, addr, now)
        # What the control tick does first: take the freshest command out of the pending slot.
        pending, core._pending = core._pending, None
        if pending is None:  # malformed, duplicate, stale or rejected: counted, no reply
            return
        header = pending.header
        seq += 1
        # Echo: the runtime re-encodes the command it decoded and checked, with its own header.
        reply = encode(
            pending.command, stream=header.stream, session=header.session, seq=seq,
            send_time_ns=monotonic_ns(),
        )  # fmt: skip
        udp.send(reply, addr)

    udp = await open_udp(on_datagram, sock=sock)
    print("ready", flush=True)
    try:
        await _until_stdin_closes()
    finally:
        assert udp.transport is not None
        udp.transport.close()
        core.close()
    if udp.handler_errors:
        print(f"handler errors: {udp.handler_errors}", file=sys.stderr, flush=True)
        raise SystemExit(1)


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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("bare", "runtime", "sink", "forward"))
    parser.add_argument("fd", type=int, help="a bound UDP socket passed by the parent")
    parser.add_argument("--to", metavar="HOST:PORT", help="where `forward` sends")
    parser.add_argument("--cpu", type=int, help="run on this CPU only")
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
    import uvloop

    serve = {"bare": serve_bare, "runtime": serve_runtime}[mode]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
