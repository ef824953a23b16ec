"""A UDP relay that puts an emulated link between clients and a server, both directions.

Clients send to the relay's listening address; for each client the relay opens its own socket
towards the server, so replies find their way back to the client that caused them. Each
direction has its own `LinkModel` (up: clients -> server, down: server -> clients).

Timing: event-loop timers round to about 1 ms, too coarse for sub-millisecond delays, so the
relay runs its own loop in a thread: `select()` (microsecond timeouts) with the thread's timer
slack reduced to 1 ns, waking early by the wake-up latency it has learned and spinning the last
few tens of microseconds, so a packet leaves within tens of µs of its due time.

Traffic classes for the priority queue come from the DSCP bits of each datagram (read with
``IP_RECVTOS``) through a class map; the DSCP mark is kept on the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from netsim.link import LinkConfig, LinkModel

__all__ = ["DEFAULT_CLASS_MAP", "Relay", "RelayConfig", "dscp_class"]

log = logging.getLogger(__name__)

_IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
_MAX_DATAGRAM = 65535
_BATCH = 64
_SPIN_NS = 400_000
_WAKE_QUANTILE = 0.99
_MARGIN_NS = 15_000

DEFAULT_CLASS_MAP: dict[int, int] = {
    46: 0,  # EF: control, haptics, audio (RFC 8837)
    44: 0,  # VOICE-ADMIT
    40: 1,  # CS5
    34: 1,
    36: 1,
    38: 1,  # AF41-43: interactive video
    32: 1,  # CS4
    26: 2,
    28: 2,
    30: 2,
    18: 2,
    20: 2,
    22: 2,
    24: 2,
    16: 2,  # AF3x, AF2x, CS3, CS2
}
"""DSCP -> traffic class (0 first). Anything not listed (best effort, CS1) is class 3."""


def dscp_class(tos: int, class_map: dict[int, int], default: int = 3) -> int:
    """Traffic class of a datagram from its TOS byte (DSCP is the upper six bits)."""
    return class_map.get(tos >> 2, default)


@dataclass(kw_only=True)
class RelayConfig:
    """Where the relay listens, where it forwards, and what each direction does."""

    listen: tuple[str, int]
    """Address clients send to (port 0: any free port)."""
    server: tuple[str, int]
    """Address of the server behind the emulated link."""
    up: LinkConfig = field(default_factory=LinkConfig)
    """Clients -> server."""
    down: LinkConfig = field(default_factory=LinkConfig)
    """Server -> clients."""
    seed: int = 0
    """Seed of both directions' random draws (the down direction uses seed + 1)."""
    class_map: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_CLASS_MAP))
    """DSCP value -> traffic class, for the priority queue."""
    max_clients: int = 1024
    """Most clients served at once; datagrams from further clients are dropped."""
    busy_poll_ns: int = 0
    """Spin for at least this long before a datagram is due, instead of sleeping through it:
    trades CPU for timing precision on machines whose wake-ups have a long tail (VMs)."""


def _reduce_timer_slack() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)


class _Lateness:
    """Departure minus due time of every datagram, in a preallocated ring."""

    def __init__(self, size: int = 1 << 17) -> None:
        self._ns = np.zeros(size, dtype=np.int64)
        self.count = 0

    def add(self, ns: int) -> None:
        self._ns[self.count % self._ns.size] = ns
        self.count += 1

    def summary(self) -> dict[str, float | None]:
        data = self._ns[: min(self.count, self._ns.size)] / 1e3
        if not data.size:
            return {"p50": None, "p90": None, "p99": None, "p999": None, "max": None}
        p50, p90, p99, p999 = np.percentile(data, (50, 90, 99, 99.9))
        return {
            "p50": round(float(p50), 1),
            "p90": round(float(p90), 1),
            "p99": round(float(p99), 1),
            "p999": round(float(p999), 1),
            "max": round(float(data.max()), 1),
        }


class _Client:
    __slots__ = ("addr", "sock")

    def __init__(self, addr: Any, sock: socket.socket) -> None:
        self.addr = addr
        self.sock = sock


class Relay:
    """The relay. Use as a context manager (sync or async): it runs in a thread meanwhile.

    ``with Relay(config) as relay: relay.address`` — or ``serve_forever()`` in the foreground.
    """

    def __init__(self, config: RelayConfig, *, sock: socket.socket | None = None) -> None:
        self.config = config
        family = socket.AF_INET6 if ":" in config.listen[0] else socket.AF_INET
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(config.listen)
        self._listen = sock
        self._listen.setblocking(False)
        self._family = self._listen.family
        self._classify = any(c.qdisc == "priority" for c in (config.up, config.down))
        self._tos: dict[socket.socket, int] = {}
        self._recv_tos(self._listen)
        # Outages and traces run on the relay's own timeline, from when it starts.
        start = time.monotonic_ns()
        self.up: LinkModel[tuple[_Client, bytes, int]] = LinkModel(
            config.up, seed=config.seed, start_ns=start
        )
        self.down: LinkModel[tuple[_Client, bytes, int]] = LinkModel(
            config.down, seed=config.seed + 1, start_ns=start
        )
        self._clients: dict[Any, _Client] = {}
        self._by_fd: dict[int, _Client] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._early_ns = max(100_000, config.busy_poll_ns)
        self._spin_ns = max(_SPIN_NS, config.busy_poll_ns + _MARGIN_NS)
        self._overshoots: list[int] = []
        self.lateness = _Lateness()
        """How late datagrams were handed to the kernel relative to their due time."""
        self._lock = threading.Lock()
        self.unknown_dropped = 0
        """Datagrams dropped because the client table was full."""
        self.send_errors = 0
        """Datagrams the kernel refused to send (e.g. server port closed)."""
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) clients should send to."""
        host, port = self._listen.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Run the relay in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="netsim-relay", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to end soon (safe from a signal handler or another thread)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def stop(self) -> None:
        """Stop the loop and close every socket."""
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        for c in self._clients.values():
            c.sock.close()
        self._tos.clear()
        self._clients.clear()
        self._by_fd.clear()
        for s in (self._listen, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Relay:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Per-direction counts and imposed-delay percentiles (JSON-ready)."""
        with self._lock:
            return {
                "listen": f"{self.address[0]}:{self.address[1]}",
                "server": f"{self.config.server[0]}:{self.config.server[1]}",
                "clients": len(self._clients),
                "up": self.up.stats.summary(),
                "down": self.down.stats.summary(),
                "late_us": self.lateness.summary(),
                "wake_early_us": round(self._early_ns / 1e3, 1),
                "unknown_dropped": self.unknown_dropped,
                "send_errors": self.send_errors,
            }

    # -- the loop -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Relay until `stop()` is called (blocking)."""
        _reduce_timer_slack()
        monotonic_ns = time.monotonic_ns
        while not self._stop.is_set():
            with self._lock:
                due = self._next_due()
            now = monotonic_ns()
            if due is None:
                timeout: float | None = 0.2
            else:
                wait = due - now - self._early_ns
                timeout = wait / 1e9 if wait > 0 else 0.0
            readers = [self._listen, self._wake_r, *(c.sock for c in self._clients.values())]
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                raise
            if self._stop.is_set():
                return
            with self._lock:
                for s in ready:
                    self._drain(s)
                if not ready and due is not None and timeout:
                    now = monotonic_ns()
                    self._learn(now - (due - self._early_ns))
                    if 0 < due - now <= self._spin_ns:
                        while monotonic_ns() < due:  # the last stretch: spin
                            pass
                self._flush(monotonic_ns())

    def _spin_until(self, due: int, readers: list[socket.socket]) -> None:
        """Wait for `due` without sleeping, still taking in datagrams as they arrive (their
        delay starts when they arrive, not when the spin ends)."""
        monotonic_ns = time.monotonic_ns
        while monotonic_ns() < due:
            ready, _, _ = select.select(readers, [], [], 0)
            for s in ready:
                self._drain(s)

    def _learn(self, overshoot: int) -> None:
        """Wake early by the 95th percentile of recent wake-up latencies (plus a margin), so
        that nearly every wake-up lands before the due time and the rest is spun."""
        self._overshoots.append(min(max(overshoot, 0), self._spin_ns))
        if len(self._overshoots) >= 64:
            ranked = sorted(self._overshoots)
            learned = ranked[int(len(ranked) * _WAKE_QUANTILE)] + _MARGIN_NS
            self._early_ns = max(learned, self.config.busy_poll_ns)
            self._overshoots.clear()

    def _next_due(self) -> int | None:
        a, b = self.up.next_time(), self.down.next_time()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def _drain(self, s: socket.socket) -> None:
        if s is self._wake_r:
            with contextlib.suppress(BlockingIOError):
                s.recv(64)
            return
        is_listen = s is self._listen
        for _ in range(_BATCH):
            try:
                data, anc, _flags, addr = s.recvmsg(_MAX_DATAGRAM, 64)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # ICMP from a closed port on the far side
            now = time.monotonic_ns()
            tos = 0
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind in (_IP_RECVTOS, socket.IP_TOS):
                    tos = value[0]
            cls = dscp_class(tos, self.config.class_map) if self._classify else 0
            if is_listen:
                client = self._client(addr)
                if client is None:
                    self.unknown_dropped += 1
                    continue
                self.up.send((client, data, tos), len(data), now, cls)
            else:
                client = self._by_fd[s.fileno()]
                self.down.send((client, data, tos), len(data), now, cls)

    def _client(self, addr: Any) -> _Client | None:
        client = self._clients.get(addr)
        if client is None:
            if len(self._clients) >= self.config.max_clients:
                return None
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._recv_tos(sock)
            sock.connect(self.config.server)
            client = _Client(addr, sock)
            self._clients[addr] = client
            self._by_fd[sock.fileno()] = client
            log.info("new client %s:%s via local port %s", addr[0], addr[1], sock.getsockname()[1])
        return client

    def _recv_tos(self, sock: socket.socket) -> None:
        if sock.family == socket.AF_INET:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTOS, 1)

    def _flush(self, now: int) -> None:
        for model, upward in ((self.up, True), (self.down, False)):
            due = model.next_time()
            if due is None or due > now:
                continue
            for due_ns, (client, data, tos) in model.deliver_timed(now):
                sock = client.sock if upward else self._listen
                try:
                    if tos != self._tos.get(sock, 0) and sock.family == socket.AF_INET:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
                        self._tos[sock] = tos
                    self.lateness.add(time.monotonic_ns() - due_ns)  # handed to the kernel
                    if upward:
                        sock.send(data)
                    else:
                        sock.sendto(data, client.addr)
                except OSError as exc:
                    self.send_errors += 1
                    if exc.errno not in (errno.ECONNREFUSED, errno.EAGAIN):
                        log.debug("send failed: %s", exc)
