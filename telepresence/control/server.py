"""The robot's control-plane server: a ZeroMQ ROUTER with CURVE security (asyncio adapter).

Design: `ControlState` is the sans-IO core — sessions, the control lease, reservations — fed
one decoded message at a time with the time passed in, returning the replies. `ControlServer`
is the thin asyncio/pyzmq adapter around it: CURVE server socket, ZAP allowlist, receive loop.

Identity: the robot has a CURVE key pair; only operators whose public key is in the allowlist
complete the CURVE handshake (ZAP answers 400 to any other, and the operator's side sees the
refusal as a failed handshake). Each `hello` opens a session with a fresh 32-byte secret from
which both ends derive the data-plane keys.

Live allowlist: the server follows the allowlist's file or directory (`keys.Allowlist`): it
checks it at each handshake and every `check_every_s`, and `reload()` reads it at once (SIGHUP).
A bad version is logged and shown in `status()`, and the list in force stays. The sessions of
an operator whose key was removed are closed (`ControlState.revoke`: `bye` to that station,
`on_close` drops its data-plane keys, its lease and reservations are released), and whatever
that connection sends later is answered with `error` (CURVE authenticated it at its handshake,
which ZeroMQ does not repeat, so the server checks the key of every message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from telepresence.control.keys import Allowlist, AllowlistChange, KeyPair
from telepresence.control.lease import ControlLease
from telepresence.control.messages import (
    PROTOCOL,
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
    Release,
    Reserve,
    Welcome,
    decode_message,
    encode_message,
)
from telepresence.exceptions import ConfigError, RemoteProtocolError
from telepresence.qos import AdmissionControl, Refusal

__all__ = ["NOT_ALLOWED", "REVOKED", "ControlServer", "ControlState", "ServerSession"]

log = logging.getLogger(__name__)


@dataclass
class ServerSession:
    """One operator's session, as the robot sees it."""

    session: int
    identity: bytes
    """ZeroMQ routing id of the operator's socket."""
    operator: str
    """Name from the allowlist (or ``anonymous`` when insecure)."""
    station: str
    role: str
    secret: bytes
    last_seen_ns: int
    streams: dict[tuple[str, int], Any] = field(default_factory=dict)
    key: bytes = b""
    """The operator's CURVE public key (Z85) from the handshake; empty when insecure."""


Reply = tuple[bytes, ControlMessage]
"""(routing id, message) to send."""


class ControlState:
    """Sans-IO core of the control plane on the robot."""

    def __init__(
        self,
        *,
        manifest: dict[str, Any],
        data_addresses: list[str],
        control_rate_hz: float,
        secure: bool,
        link_capacity_bps: float,
        lease_ttl_ns: int = 2_000_000_000,
        session_timeout_ns: int = 3_000_000_000,
    ) -> None:
        self.manifest = manifest
        self.data_addresses = data_addresses
        self.control_rate_hz = control_rate_hz
        self.secure = secure
        self.lease = ControlLease(lease_ttl_ns)
        self.session_timeout_ns = session_timeout_ns
        self.admission = {
            "up": AdmissionControl(round(link_capacity_bps)),
            "down": AdmissionControl(round(link_capacity_bps)),
        }
        self.sessions: dict[int, ServerSession] = {}
        self._by_identity: dict[bytes, int] = {}
        self.on_open: Callable[[ServerSession], None] = lambda s: None
        """Called when a session opens (the data plane learns its keys)."""
        self.on_close: Callable[[ServerSession], None] = lambda s: None
        """Called when a session ends."""

    # -- helpers ----------------------------------------------------------------------------

    def _lease_state(self, session: ServerSession | None, now: int) -> LeaseState:
        holder = self.lease.holder
        remaining = self.lease.remaining_ns(now)
        station = self.sessions[holder].station if holder in self.sessions else None
        return LeaseState(
            holder=holder,
            holder_station=station,
            you_hold=session is not None and holder == session.session,
            expires_in_ms=None if remaining is None else remaining / 1e6,
        )

    def broadcast_lease(self, now: int) -> list[Reply]:
        return [(s.identity, self._lease_state(s, now)) for s in self.sessions.values()]

    def _release_streams(self, session: ServerSession) -> None:
        for direction, stream in list(session.streams):
            self.admission[direction].release(stream)
        session.streams.clear()

    def close_session(self, session: ServerSession, reason: str) -> None:
        self.sessions.pop(session.session, None)
        self._by_identity.pop(session.identity, None)
        self.lease.release(session.session)
        self._release_streams(session)
        log.info("session %08x (%s) closed: %s", session.session, session.operator, reason)
        self.on_close(session)

    def expire(self, now: int) -> list[Reply]:
        """Lapse the lease and forget silent sessions; returns lease updates to send."""
        out: list[Reply] = []
        for s in list(self.sessions.values()):
            if now - s.last_seen_ns > self.session_timeout_ns:
                self.close_session(s, "silent for too long")
        lost = self.lease.expire(now)
        if lost is not None:
            if lost in self.sessions:
                self._release_streams(self.sessions[lost])
            out = self.broadcast_lease(now)
        return out

    # -- messages ---------------------------------------------------------------------------

    def revoke(self, keys: Collection[bytes], reason: str, now: int) -> list[Reply]:
        """Close the sessions of the operators whose public keys are in `keys` (removed from
        the allowlist), as any session closes; returns a `bye` with `reason` to each of their
        stations and, if any closed, the lease as it now stands to every remaining session."""
        out: list[Reply] = []
        for s in list(self.sessions.values()):
            if s.key and s.key in keys:
                out.append((s.identity, Bye(reason=reason)))
                self.close_session(s, reason)
        if out:
            out += self.broadcast_lease(now)
        return out

    def handle(
        self, identity: bytes, operator: str, message: ControlMessage, now: int, key: bytes = b""
    ) -> list[Reply]:
        """One message from `identity` (authenticated as public `key`, when secure); returns
        the replies."""
        sid = self._by_identity.get(identity)
        session = self.sessions.get(sid) if sid is not None else None
        if isinstance(message, Hello):
            return self._hello(identity, operator, message, session, now, key)
        if session is None:
            return [(identity, Error(reason=f"{message.NAME} before hello: open a session first"))]
        session.last_seen_ns = now
        if isinstance(message, ClockRequest):
            return [(identity, ClockReply(t1=message.t1, t2=now, t3=now))]
        if isinstance(message, LeaseTake):
            if session.role != "control":
                return [
                    (
                        identity,
                        Refuse(
                            request=message.NAME,
                            code="observer",
                            reason="this session observes; open one with role control",
                        ),
                    )
                ]
            before = self.lease.holder
            decision = self.lease.take(session.session, now)
            if not decision.granted:
                holder = self.sessions.get(decision.holder or 0)
                who = f"{holder.operator} at {holder.station}" if holder else decision.reason
                return [
                    (
                        identity,
                        Refuse(
                            request=message.NAME,
                            code="lease_held",
                            reason=f"control is held by {who}",
                        ),
                    )
                ]
            if before != session.session:
                log.info("session %08x (%s) takes control", session.session, session.operator)
                return self.broadcast_lease(now)
            return [(identity, self._lease_state(session, now))]
        if isinstance(message, LeaseRelease):
            if self.lease.release(session.session):
                log.info("session %08x releases control", session.session)
                self._release_streams(session)  # its reservations were for controlling
                return self.broadcast_lease(now)
            return [(identity, self._lease_state(session, now))]
        if isinstance(message, Reserve):
            if session.role != "control":
                return [
                    (
                        identity,
                        Refuse(
                            request=message.NAME,
                            code="observer",
                            reason="an observer session reserves no bandwidth",
                        ),
                    )
                ]
            return [(identity, self._reserve(session, message))]
        if isinstance(message, Release):
            if session.streams.pop((message.direction, message.stream), None) is None:
                return [
                    (
                        identity,
                        Refuse(
                            request=message.NAME,
                            code="not_yours",
                            reason=f"stream {message.stream} ({message.direction}) "
                            "holds no reservation of this session",
                        ),
                    )
                ]
            self.admission[message.direction].release(message.stream)
            return []
        if isinstance(message, Bye):
            self.close_session(session, message.reason or "bye")
            return self.broadcast_lease(now)
        return [(identity, Error(reason=f"{message.NAME} is not a request a robot answers"))]

    def _hello(
        self,
        identity: bytes,
        operator: str,
        hello: Hello,
        old: ServerSession | None,
        now: int,
        key: bytes,
    ) -> list[Reply]:
        if hello.protocol != PROTOCOL:
            return [
                (
                    identity,
                    Refuse(
                        request="hello",
                        code="protocol",
                        reason=f"this robot speaks {PROTOCOL}, not {hello.protocol}",
                    ),
                )
            ]
        if hello.role not in ("control", "observe"):
            return [
                (
                    identity,
                    Refuse(
                        request="hello",
                        code="role",
                        reason=f"role must be control or observe, not {hello.role!r}",
                    ),
                )
            ]
        replaced_holder = old is not None and self.lease.holder == old.session
        if old is not None:
            self.close_session(old, "replaced by a new hello")
        sid = secrets.randbits(32) or 1
        while sid in self.sessions:
            sid = secrets.randbits(32) or 1
        session = ServerSession(
            session=sid,
            identity=identity,
            operator=operator,
            station=hello.station or "?",
            role=hello.role,
            secret=secrets.token_bytes(32),
            last_seen_ns=now,
            key=key,
        )
        self.sessions[sid] = session
        self._by_identity[identity] = sid
        log.info("session %08x opened by %s (%s, %s)", sid, operator, session.station, hello.role)
        self.on_open(session)
        welcome = Welcome(
            session=sid,
            secret=session.secret.hex(),
            manifest=self.manifest,
            data_addresses=self.data_addresses,
            secure=self.secure,
            control_rate_hz=self.control_rate_hz,
        )
        if replaced_holder:  # everyone learns the lease is free
            return [(identity, welcome), *self.broadcast_lease(now)]
        return [(identity, welcome), (identity, self._lease_state(session, now))]

    def _reserve(self, session: ServerSession, req: Reserve) -> ControlMessage:
        admission = self.admission.get(req.direction)
        if admission is None:
            return Refuse(
                request="reserve",
                code="invalid",
                reason=f"direction must be up or down, not {req.direction!r}",
            )
        result = admission.request_fields(
            {
                "stream": req.stream,
                "traffic_class": req.traffic_class,
                "rate_bps": req.rate_bps,
                "burst_bytes": req.burst_bytes,
                "max_packet_bytes": req.max_packet_bytes,
            }
        )
        if isinstance(result, Refusal):
            return Refuse(request="reserve", code=result.reason.value, reason=result.message)
        session.streams[(req.direction, req.stream)] = result
        spec = result.spec
        return Grant(
            stream=spec.stream,
            traffic_class=spec.traffic_class.label,
            rate_bps=spec.rate_bps,
            burst_bytes=spec.burst_bytes,
            max_packet_bytes=spec.max_packet_bytes,
            dscp=int(result.dscp),
            direction=req.direction,
        )


REVOKED = "the operator's key was removed from the robot's allowlist"
"""Reason given (`bye`, logs) when a session closes because its key left the allowlist."""

NOT_ALLOWED = "this operator's key is no longer on the robot's allowlist"
"""`error` reason for a message from a connection whose key has left the allowlist."""


class ControlServer:
    """asyncio adapter: a ROUTER socket, CURVE server, ZAP allowlist, around `ControlState`.

    `authorized` is the allowlist: an `Allowlist`, or `AuthorizedKeys` as `load_authorized_keys`
    returns them (the server then follows their file or directory), or a fixed mapping of Z85
    public key -> name; None with `keypair` None for an insecure control plane."""

    def __init__(
        self,
        state: ControlState,
        *,
        bind: str,
        keypair: KeyPair | None,
        authorized: Mapping[bytes, str] | Allowlist | None,
        clock: Callable[[], int],
        check_every_s: float = 1.0,
    ) -> None:
        if (keypair is None) != (authorized is None):
            raise ValueError("secure control plane needs both the robot key and the allowlist")
        if not check_every_s > 0:
            raise ValueError(f"check_every_s must be > 0 s, got {check_every_s}")
        self.state = state
        self.bind = bind
        self.keypair = keypair
        self.allowlist: Allowlist | None = (
            authorized
            if isinstance(authorized, Allowlist) or authorized is None
            else Allowlist(authorized)
        )
        """The operators admitted, followed on disk; None when insecure."""
        self.clock = clock
        self.check_every_ns = round(check_every_s * 1e9)
        self.errors = 0
        """Malformed messages received."""
        self.revoked_messages = 0
        """Messages from a connection whose operator key has left the allowlist."""
        self.revoked_sessions = 0
        """Sessions closed because their operator key left the allowlist."""
        self.endpoint: str | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox: list[Reply] = []
        self._next_check_ns: int | None = None

    @property
    def authorized(self) -> dict[bytes, str] | None:
        """The allowlist in force: Z85 public key -> name (None when insecure)."""
        return None if self.allowlist is None else self.allowlist.keys

    async def start(self) -> str:
        """Bind and start serving; returns the bound endpoint (the port filled in)."""
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting station replaces its old pipe
        if self.keypair is not None and self.allowlist is not None:
            self._auth = AsyncioAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback(
                domain="*", credentials_provider=_ZapAllowlist(self)
            )
            sock.curve_publickey, sock.curve_secretkey = self.keypair
            sock.curve_server = True
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            self._ctx.term()
            self._ctx = self._auth = None
            raise ConfigError(f"cannot bind the control plane to {self.bind}: {exc}") from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._task = asyncio.create_task(self._serve())
        return self.endpoint

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            await self._flush()
            for s in list(self.state.sessions.values()):
                await self._send(s.identity, Bye(reason="robot shutting down"))
            self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.term()

    # -- the allowlist ----------------------------------------------------------------------

    def reload(self) -> AllowlistChange | None:
        """Read the allowlist now, changed on disk or not (bind it to SIGHUP), and close the
        sessions of operators no longer on it. Returns what changed, or None if nothing was
        read: a bad version is logged and kept in `status()`, and the list in force stays."""
        return self._refresh(force=True)

    def check_allowlist(self) -> AllowlistChange | None:
        """Read the allowlist if it changed on disk (the server does so at each handshake and
        every `check_every_s`); otherwise as `reload`."""
        return self._refresh(force=False)

    def _refresh(self, *, force: bool) -> AllowlistChange | None:
        allowlist = self.allowlist
        if allowlist is None:
            return None
        had_error = allowlist.error is not None
        try:
            change = allowlist.reload() if force else allowlist.check()
        except ConfigError as exc:
            log.error(
                "allowlist not reloaded, keeping the %d key(s) in force: %s",
                len(allowlist.keys),
                exc,
            )
            return None
        except Exception:  # a bug here must not take the ZAP handler, and every handshake, down
            log.exception(
                "allowlist not reloaded, keeping the %d key(s) in force", len(allowlist.keys)
            )
            return None
        if change is None:
            return None
        if not change and not had_error:
            log.debug("allowlist %s read again: no change", allowlist.source)
            return change
        log.info(
            "allowlist %s reloaded, %d key(s): %s",
            allowlist.source,
            len(allowlist.keys),
            change.describe(),
        )
        if change.removed:
            replies = self.state.revoke(change.removed.keys(), REVOKED, self.clock())
            self.revoked_sessions += sum(isinstance(m, Bye) for _, m in replies)
            self._outbox += replies
        return change

    def _admit(self, key: bytes) -> bool:
        """ZAP: may this CURVE public key (Z85) complete its handshake?"""
        self.check_allowlist()
        assert self.allowlist is not None
        ok = key in self.allowlist.keys
        if not ok:
            log.warning("refused an operator key not on the allowlist: %s", key.decode())
        return ok

    def status(self) -> dict[str, Any]:
        """For the robot's status: sessions, counters and the allowlist (path, number of keys,
        last good read, last error; None when insecure)."""
        return {
            "endpoint": self.endpoint,
            "sessions": len(self.state.sessions),
            "malformed": self.errors,
            "revoked_sessions": self.revoked_sessions,
            "revoked_messages": self.revoked_messages,
            "allowlist": None if self.allowlist is None else self.allowlist.status(),
        }

    # -- messages ---------------------------------------------------------------------------

    async def _send(self, identity: bytes, message: ControlMessage) -> None:
        assert self._sock is not None
        try:
            await self._sock.send_multipart([identity, *encode_message(message)], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("control reply to a slow station dropped (%s)", message.NAME)

    async def send_all(self, replies: list[Reply]) -> None:
        for identity, message in replies:
            await self._send(identity, message)

    async def _flush(self) -> None:
        """Send what `reload` and the handshake check queued (they cannot await)."""
        while self._outbox:
            replies, self._outbox = self._outbox, []
            await self.send_all(replies)

    async def _serve(self) -> None:
        assert self._sock is not None
        sock = self._sock
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        while True:
            events = dict(await poller.poll(timeout=100))
            now = self.clock()
            if self._next_check_ns is None or now >= self._next_check_ns:
                self._next_check_ns = now + self.check_every_ns
                self.check_allowlist()
            await self._flush()
            if sock in events:
                frames = await sock.recv_multipart(copy=False)
                identity = frames[0].bytes
                try:
                    user_id = str(frames[-1].get("User-Id") or "anonymous")
                except zmq.ZMQError:
                    user_id = "anonymous"
                operator, key = user_id, b""
                if self.allowlist is not None:
                    key = user_id.encode()
                    name = self.allowlist.keys.get(key)
                    if name is None:  # authenticated at its handshake, removed since
                        self.revoked_messages += 1
                        await self._send(identity, Error(reason=NOT_ALLOWED))
                        continue
                    operator = name
                try:
                    message = decode_message([f.bytes for f in frames[1:]])
                except RemoteProtocolError as exc:
                    self.errors += 1
                    await self._send(identity, Error(reason=str(exc)))
                    continue
                await self.send_all(self.state.handle(identity, operator, message, now, key))
            await self.send_all(self.state.expire(now))


class _ZapAllowlist:
    """ZAP credentials provider: is this CURVE public key (Z85) allowed? The server checks
    the allowlist on disk first."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server

    def callback(self, domain: str, key: bytes) -> bool:
        return self.server._admit(key)
