"""The station's control-plane client: a ZeroMQ DEALER with CURVE security (asyncio adapter).

It opens a session (`hello` -> `welcome`: session id, data-plane secret, manifest, data
addresses), syncs clocks (four timestamps per exchange), reserves bandwidth, takes and keeps
the control lease (renewing it in the background), and says `bye` when it closes. A robot that
refuses this operator's key is reported as `AccessRefused`, with the key to add to the robot's
allowlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from telepresence.clocksync import OffsetEstimator
from telepresence.control.keys import KeyPair
from telepresence.control.messages import (
    Bye,
    ClockReply,
    ClockRequest,
    ControlMessage,
    Error,
    Grant,
    Hello,
    LeaseRelease,
    LeaseState,
    LeaseTake,
    Refuse,
    Reserve,
    Welcome,
    decode_message,
    encode_message,
)
from telepresence.exceptions import (
    AccessRefused,
    ControlRefused,
    RemoteProtocolError,
    RobotUnreachable,
)

__all__ = ["ControlClient"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=ControlMessage)


class ControlClient:
    """One session with one robot's control plane."""

    def __init__(
        self,
        endpoint: str,
        *,
        keypair: KeyPair | None,
        robot_public_key: bytes | None,
        station: str,
        role: str = "control",
        clock: Callable[[], int],
        renew_every_s: float = 0.5,
    ) -> None:
        if (keypair is None) != (robot_public_key is None):
            raise ValueError("a secure session needs both our key pair and the robot's key")
        self.endpoint = endpoint
        self.keypair = keypair
        self.robot_public_key = robot_public_key
        self.station = station
        self.role = role
        self.clock = clock
        self.renew_every_s = renew_every_s
        self.welcome: Welcome | None = None
        self.lease: LeaseState | None = None
        self.clock_offset = OffsetEstimator()
        self.on_lease: Callable[[LeaseState], None] = lambda state: None
        self.on_bye: Callable[[Bye], None] = lambda bye: None
        """Called when the robot ends the session (its `bye`: closing, revoked, expired)."""
        self.ended: Bye | None = None
        """The robot's `bye`, once it ended the session."""
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._inbox: asyncio.Queue[ControlMessage] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._failure: BaseException | None = None
        self._keepalive_pending = False

    # -- connection -------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> Welcome:
        """Open the session; raises `AccessRefused` or `RobotUnreachable`."""
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        if self.keypair is not None:
            sock.curve_publickey, sock.curve_secretkey = self.keypair
            sock.curve_serverkey = self.robot_public_key
        monitor = sock.get_monitor_socket()
        sock.connect(self.endpoint)
        self._sock = sock
        self._tasks.append(asyncio.create_task(self._watch(monitor)))
        self._tasks.append(asyncio.create_task(self._receive()))
        await self._send(Hello(station=self.station, role=self.role))
        welcome = await self._expect(Welcome, timeout_s, what="welcome")
        self.welcome = welcome
        self._tasks.append(asyncio.create_task(self._keepalive()))
        return welcome

    async def _keepalive(self) -> None:
        """Keep the session alive (the robot forgets sessions silent for 3 s) and the clock
        estimate fresh: one clock exchange a second, answered into `clock_offset`."""
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                await asyncio.sleep(1.0)
                self._keepalive_pending = True
                await self._send(ClockRequest(t1=self.clock()))

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Turn handshake failures into errors the user can act on."""
        try:
            while True:
                event = await recv_monitor_message(monitor)
                kind = event["event"]
                if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    key = self.keypair[0].decode() if self.keypair else "?"
                    self._fail(AccessRefused(
                        f"the robot at {self.endpoint} refused this operator's key {key}: ask "
                        "the robot's owner to add it to the robot's --authorized-keys"
                    ))  # fmt: skip
                elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                              zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):  # fmt: skip
                    self._fail(AccessRefused(
                        f"the secure handshake with {self.endpoint} failed: is --robot-key the "
                        "robot's public key, and does the robot run with security on?"
                    ))  # fmt: skip
        except (asyncio.CancelledError, zmq.ZMQError):
            pass
        finally:
            monitor.close(0)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._inbox.put_nowait(Error(reason=str(exc)))

    async def _receive(self) -> None:
        assert self._sock is not None
        try:
            while True:
                frames = await self._sock.recv_multipart()
                try:
                    message = decode_message(frames)
                except RemoteProtocolError as exc:
                    log.warning("ignored a malformed control message: %s", exc)
                    continue
                if isinstance(message, ClockReply) and self._keepalive_pending:
                    self._keepalive_pending = False
                    self.clock_offset.add(message.t1, message.t2, message.t3, self.clock())
                    continue
                if isinstance(message, LeaseState):
                    self.lease = message
                    self.on_lease(message)
                if isinstance(message, Bye):
                    log.warning("the robot ended the session: %s", message.reason)
                    self.ended = message
                    self.on_bye(message)
                await self._inbox.put(message)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def _send(self, message: ControlMessage) -> None:
        assert self._sock is not None
        await self._sock.send_multipart(encode_message(message))

    async def _expect(self, kind: type[M], timeout_s: float, *, what: str) -> M:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise RobotUnreachable(
                    f"no {what} from the robot's control plane at {self.endpoint} within "
                    f"{timeout_s:g} s: is `telepresence robot` running there?"
                )
            try:
                message = await asyncio.wait_for(self._inbox.get(), left)
            except TimeoutError:
                continue
            if self._failure is not None:
                raise self._failure
            if isinstance(message, kind):
                return message
            if isinstance(message, Refuse):
                raise ControlRefused(f"the robot refused {message.request}: {message.reason}")
            if isinstance(message, Error):
                raise ControlRefused(f"the robot reported an error: {message.reason}")

    # -- requests ---------------------------------------------------------------------------

    async def sync_clock(self, exchanges: int = 16, timeout_s: float = 2.0) -> OffsetEstimator:
        """Run clock-sync exchanges; the estimate is robot clock minus station clock."""
        for _ in range(exchanges):
            await self._send(ClockRequest(t1=self.clock()))
            reply = await self._expect(ClockReply, timeout_s, what="clock reply")
            self.clock_offset.add(reply.t1, reply.t2, reply.t3, self.clock())
        return self.clock_offset

    async def take_lease(self, timeout_s: float = 2.0) -> LeaseState:
        """Take control; `ControlRefused` says who holds it."""
        await self._send(LeaseTake())
        while True:
            state = await self._expect(LeaseState, timeout_s, what="lease answer")
            if state.you_hold:
                self._tasks.append(asyncio.create_task(self._renew()))
                return state

    async def _renew(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                await asyncio.sleep(self.renew_every_s)
                await self._send(LeaseTake())

    async def release_lease(self) -> None:
        await self._send(LeaseRelease())

    async def reserve(self, **fields: Any) -> Grant:
        """Reserve bandwidth for a stream (fields of `Reserve`); `ControlRefused` with the
        robot's reason when it does not fit."""
        await self._send(Reserve(**fields))
        return await self._expect(Grant, 2.0, what="reservation answer")

    async def close(self) -> None:
        """Say bye and release everything."""
        if self._sock is not None and self._failure is None:
            with contextlib.suppress(zmq.ZMQError):
                await self._sock.send_multipart(encode_message(Bye(reason="station closing")),
                                                zmq.NOBLOCK)  # fmt: skip
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            self._sock.close(0)
        if self._ctx is not None:
            self._ctx.term()
