"""Thin asyncio UDP adapter: feeds received datagrams, with their arrival time, to a core.

The protocol object holds no protocol logic. `datagram_received` stamps the arrival with
`time.monotonic_ns()` and calls the handler; a handler that raises is logged and counted, and
the endpoint keeps running (a malformed datagram must never stop it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, cast

__all__ = ["UdpEndpoint", "open_udp", "parse_hostport"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Any, int], None]

RECV_BUFFER = 4 * 1024 * 1024


class UdpEndpoint(asyncio.DatagramProtocol):
    """Datagram protocol that hands every datagram to `handler(data, addr, now_ns)`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self.sock: socket.socket | None = None
        """The socket itself (for `send_marked`); the transport owns and closes it."""
        self.tos: int | None = None
        """The socket's own TOS byte: what `send` marks datagrams with."""
        self.handler_errors = 0
        self.socket_errors = 0
        self.send_dropped = 0
        """Datagrams `send_marked` could not hand to the kernel (its send buffer was full)."""
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic_ns()
        try:
            self.handler(data, addr, now)
        except Exception:
            self.handler_errors += 1
            log.exception("datagram handler failed (datagram dropped)")

    def error_received(self, exc: Exception) -> None:
        # e.g. ICMP port unreachable after the peer went away: not fatal for a datagram socket.
        self.socket_errors += 1
        log.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def send(self, data: bytes | bytearray, addr: Any = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def send_marked(self, data: bytes | bytearray, addr: Any, tos: int) -> None:
        """Send `data` marked with the TOS byte `tos`: through the transport when it is the
        socket's own mark, else with the mark as ancillary data (``IP_TOS`` / ``IPV6_TCLASS``
        in ``sendmsg``, one system call, the socket's own mark unchanged)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = self.sock
        if tos == self.tos or sock is None:
            transport.sendto(data, addr)
            return
        if sock.family == socket.AF_INET6:
            mark = [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos.to_bytes(4, sys.byteorder))]
        else:
            mark = [(socket.IPPROTO_IP, socket.IP_TOS, tos.to_bytes(4, sys.byteorder))]
        try:
            if addr is None:
                sock.sendmsg([data], mark)
            else:
                sock.sendmsg([data], mark, 0, addr)
        except (BlockingIOError, InterruptedError):
            self.send_dropped += 1
        except OSError as exc:
            self.socket_errors += 1
            log.debug("send failed: %s", exc)


def parse_hostport(text: str, *, what: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) with an error naming the option."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what} must be HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{what}: port {number} is out of range 0-65535")
    return host, number


def set_tos(sock: socket.socket, tos: int) -> None:
    """Mark the socket's datagrams with a TOS byte (IPv4) or traffic class (IPv6)."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    except OSError as exc:
        log.warning("could not set DSCP mark 0x%02x: %s", tos, exc)


async def open_udp(
    handler: Handler,
    *,
    local: tuple[str, int] | None = None,
    remote: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    tos: int | None = None,
) -> UdpEndpoint:
    """Open a UDP endpoint bound to `local` and/or connected to `remote` (or on `sock`);
    `tos` marks every datagram it sends (DSCP << 2, e.g. EF = 184)."""
    loop = asyncio.get_running_loop()
    if sock is None:
        family = socket.AF_INET6 if ":" in ((local or remote or ("",))[0]) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if local is not None:
                sock.bind(local)
            if remote is not None:
                sock.connect(remote)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    except OSError:
        log.debug("could not enlarge the receive buffer")
    if tos is not None:
        set_tos(sock, tos)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(handler), sock=sock
    )
    protocol.transport = transport  # uvloop may call connection_made only on the next turn
    protocol.sock, protocol.tos = sock, tos or 0
    return protocol
