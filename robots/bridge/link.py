"""The endpoint's side of the bridge protocol as a state machine (sans-IO): `BridgeLink`.

It never touches a socket or a clock. The adapter (`robots.bridge.driver`) feeds it every
message received with `receive(frames, now)`, calls `poll(now)` for its timers, and sends what
`frames_to_send()` returns. Times are the monotonic ns the endpoint passes to the driver.

States::

    IDLE ──fetch_manifest / connect──► SYNCING ──(manifest, then connected)──► LIVE
                                         ▲  │ no answer for retry_ns: send hello again  │
                                         │  ▼                                           │
                                         └──── lost: no message for liveness_ns, ◄──────┘
                                               or error not_connected
    any ──close──► CLOSED ──connect──► SYNCING

SYNCING sends ``hello`` (re-sent every ``retry_ns`` until a ``manifest`` with the same ``id``
comes back); a manifest different from the first one ever received is refused (the endpoint's
command guard was built from the first), and ``hello`` is tried again later. With the manifest,
and once `connect` has been asked for, it sends ``connect``; the ``connected`` reply carries the
current state and makes the link LIVE. LIVE pings the driver process when nothing was sent for
``heartbeat_ns``. A restarted driver process is thus picked up by the same path as the first
one: hello, manifest, connect, connected.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from robots.api import Manifest, RobotState
from robots.bridge.exceptions import BridgeProtocolError, DriverUnavailable
from robots.bridge.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    MessageType,
    decode,
    encode,
    manifest_from_json,
    state_from_json,
)

__all__ = ["BridgeLink", "LinkStatus", "RemoteError"]

log = logging.getLogger(__name__)

_MAX_WRENCHES = 64
"""Force/torque samples kept between two reads (the newest)."""
_NO_REF = 2**63


class LinkStatus(enum.Enum):
    """Where the link is; see the module docstring."""

    IDLE = "idle"
    SYNCING = "syncing"
    LIVE = "live"
    CLOSED = "closed"


RemoteError = tuple[str, str, str | None]
"""An ``error`` message: (code, message, op)."""


class BridgeLink:
    """The endpoint's side of one bridge connection.

    ``name`` names the driver process in messages (its ZeroMQ address). ``liveness_ns``: no
    message for that long and a live link is lost. ``heartbeat_ns``: a live link sends ``ping``
    when nothing was sent for that long. ``retry_ns``: while syncing, ``hello`` is sent again
    when no answer came for that long.
    """

    def __init__(self, name: str, *, liveness_ns: int, heartbeat_ns: int, retry_ns: int) -> None:
        self.name = name
        self.liveness_ns = liveness_ns
        self.heartbeat_ns = heartbeat_ns
        self.retry_ns = retry_ns
        self.status = LinkStatus.IDLE
        self.manifest: Manifest | None = None
        """The driver process's manifest, once received (it never changes afterwards)."""
        self.reports_actuation = False
        """What the driver process said in its ``manifest`` reply."""
        self.problem = "no answer yet"
        """Why the link is not live (for messages)."""
        self.malformed = 0
        """Messages from the driver process that broke the protocol (counted and ignored)."""
        self.remote_errors = 0
        """``error`` messages received."""
        self.losses = 0
        """Times a live link was lost."""
        self.recoveries = 0
        """Times a lost link became live again."""
        self.heard = False
        """True once any message came from the driver process."""
        self._outbox: list[list[bytes]] = []
        self._want_connected = False
        self._awaiting: MessageType | None = None
        self._request_id = 0
        self._requested_ns = 0
        self._last_heard = 0
        self._last_sent = 0
        self._lost_since: int | None = None
        self._state: RobotState | None = None
        self._wrenches: list[Any] = []
        self._errors: list[RemoteError] = []
        self._last_applied: tuple[int, int] | None = None
        self._first_ref = _NO_REF
        self._last_ref = -1

    # -- what the adapter asks for ---------------------------------------------------------------

    def fetch_manifest(self, now: int) -> None:
        """Ask for the manifest (``hello``); done when `manifest` is set."""
        self.status = LinkStatus.SYNCING
        self._hello(now)

    def connect(self, now: int) -> None:
        """Ask to connect (``hello`` if need be, then ``connect``); done when `status` is LIVE."""
        self._want_connected = True
        self._first_ref, self._last_ref, self._last_applied = _NO_REF, -1, None
        self.status = LinkStatus.SYNCING
        self._errors.clear()
        if self.manifest is None:
            self._hello(now)
        else:
            self._connect(now)

    def close(self, now: int) -> None:
        """Say goodbye (``close``) if connected; the link is CLOSED until `connect`."""
        if self._want_connected:
            self._queue(MessageType.CLOSE, {}, now)
        self._want_connected = False
        self._awaiting = None
        self.status = LinkStatus.CLOSED

    def require_live(self, now: int) -> None:
        """Raise `DriverUnavailable` unless the link is live (checking liveness first)."""
        if self.status is LinkStatus.LIVE and now - self._last_heard > self.liveness_ns:
            self._lose(now, f"no message for more than {self.liveness_ns / 1e6:g} ms")
        if self.status is not LinkStatus.LIVE:
            raise DriverUnavailable(self.unavailable_message(now))

    def unavailable_message(self, now: int) -> str:
        """Why commands cannot flow, for `DriverUnavailable`."""
        since = ""
        if self._lost_since is not None:
            since = f" for {(now - self._lost_since) / 1e6:.0f} ms"
        return f"driver process at {self.name} unavailable{since}: {self.problem}"

    def sent(self, now: int) -> None:
        """The adapter sent a message of its own (``apply``, ``hold``, ``stop``) at ``now``."""
        self._last_sent = now

    def applied(self, ref: int, now: int) -> None:
        """An ``apply`` with ``ref`` left at ``now`` (for a driver process that does not report
        actuation, the bridge reports this time)."""
        self._last_sent = now
        self._last_applied = (ref, now)
        if self._first_ref > ref:
            self._first_ref = ref
        self._last_ref = ref

    def take_state(self, now: int) -> RobotState:
        """The newest state received, stamped ``now``, with the wrenches received since the last
        call. Call only when live."""
        state = self._state
        assert state is not None
        wrenches, self._wrenches = self._wrenches, []
        ref, at = state.actuated_ref, state.actuated_ns
        if not self.reports_actuation:
            ref, at = self._last_applied or (None, None)
        elif ref is not None and not self._first_ref <= ref <= self._last_ref:
            ref = at = None  # not a command sent since connect (a driver process's mistake)
        return RobotState(
            time_ns=now,
            joints=state.joints,
            base=state.base,
            wrenches=wrenches,
            actuated_ref=ref,
            actuated_ns=at,
        )

    def take_errors(self) -> list[RemoteError]:
        """``error`` messages received while live, since the last call."""
        errors, self._errors = self._errors, []
        return errors

    def frames_to_send(self) -> list[list[bytes]]:
        """Messages queued since the last call."""
        out, self._outbox = self._outbox, []
        return out

    # -- timers ----------------------------------------------------------------------------------

    def poll(self, now: int) -> None:
        """Run the timers: liveness and ping while live, ``hello`` retries while syncing."""
        if self.status is LinkStatus.LIVE:
            if now - self._last_heard > self.liveness_ns:
                self._lose(now, f"no message for more than {self.liveness_ns / 1e6:g} ms")
            elif now - self._last_sent >= self.heartbeat_ns:
                self._queue(MessageType.PING, {"now_ns": now}, now)
        elif self.status is LinkStatus.SYNCING and now - self._requested_ns >= self.retry_ns:
            self._hello(now)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, frames: list[bytes], now: int) -> None:
        """Handle one message from the driver process. Never raises for bad input: a message
        that breaks the protocol is counted in `malformed` and ignored."""
        try:
            mtype, body = decode(frames)
            self._handle(mtype, body, now)
        except BridgeProtocolError as exc:
            self.malformed += 1
            self.heard = True
            if self.manifest is None:  # what a failed start reports (a re-sync keeps its reason)
                self.problem = f"its last message was malformed: {exc}"
            level = logging.WARNING if _power_of_ten(self.malformed) else logging.DEBUG
            log.log(
                level,
                "driver process at %s: ignored a malformed message (%d so far): %s",
                self.name,
                self.malformed,
                exc,
            )

    def _handle(self, mtype: MessageType, body: dict[str, Any], now: int) -> None:
        self._last_heard = now
        self.heard = True
        if mtype is MessageType.STATE:
            if self.status is LinkStatus.LIVE:
                assert self.manifest is not None
                self._store(state_from_json(body, self.manifest))
        elif mtype is MessageType.MANIFEST:
            if self._awaiting is MessageType.MANIFEST and body.get("id") == self._request_id:
                self._on_manifest(body, now)
        elif mtype is MessageType.CONNECTED:
            if self._awaiting is MessageType.CONNECTED and body.get("id") == self._request_id:
                self._on_connected(body, now)
        elif mtype is MessageType.ERROR:
            self._on_error(body, now)

    def _on_manifest(self, body: dict[str, Any], now: int) -> None:
        version = body.get("protocol")
        if version != PROTOCOL_VERSION:
            raise BridgeProtocolError(
                f"manifest: protocol {version!r}, but this endpoint speaks {PROTOCOL_VERSION}"
            )
        manifest = manifest_from_json(body.get("manifest"))
        if self.manifest is None:
            self.manifest = manifest
            self.reports_actuation = body.get("reports_actuation") is True
        elif manifest != self.manifest:
            self._awaiting = None  # try again after retry_ns: someone may restart the right one
            what = (
                f"robot {manifest.robot_id!r}, was {self.manifest.robot_id!r}"
                if manifest.robot_id != self.manifest.robot_id
                else f"robot {manifest.robot_id!r} with other joints, limits, modes or sensors"
            )
            problem = (
                f"it now reports a different manifest ({what}); restart the endpoint to drive "
                "another robot"
            )
            # Said once per mismatch, not at every retry (every retry_ns).
            level = logging.ERROR if problem != self.problem else logging.DEBUG
            self.problem = problem
            log.log(level, "driver process at %s: %s", self.name, problem)
            return
        if self._want_connected:
            self._connect(now)
        else:
            self._awaiting = None
            self.status = LinkStatus.IDLE

    def _on_connected(self, body: dict[str, Any], now: int) -> None:
        assert self.manifest is not None
        state = state_from_json(body.get("state"), self.manifest)
        self._awaiting = None
        self._wrenches.clear()
        self._store(state)
        self.status = LinkStatus.LIVE
        self.problem = ""
        if self._lost_since is not None:
            self.recoveries += 1
            log.warning(
                "driver process at %s is back after %.0f ms: re-synced (manifest checked, "
                "robot connected, state received)",
                self.name,
                (now - self._lost_since) / 1e6,
            )
            self._lost_since = None

    def _on_error(self, body: dict[str, Any], now: int) -> None:
        code = str(body.get("code"))
        message = str(body.get("message", ""))
        op = body.get("op")
        op = op if isinstance(op, str) else None
        self.remote_errors += 1
        if code == ErrorCode.NOT_CONNECTED:
            if self.status is LinkStatus.LIVE:
                self._lose(now, f"it does not know this endpoint any more ({message})")
        elif self.status is LinkStatus.LIVE:
            self._errors.append((code, message, op))
            log.warning("driver process at %s: error %s in %s: %s", self.name, code, op, message)
        elif self.status is LinkStatus.SYNCING:
            self.problem = f"error {code}: {message}"
            log.info("driver process at %s: error %s while syncing: %s", self.name, code, message)

    def _store(self, state: RobotState) -> None:
        self._state = state
        if state.wrenches:
            self._wrenches.extend(state.wrenches)
            del self._wrenches[:-_MAX_WRENCHES]

    # -- sending ---------------------------------------------------------------------------------

    def _queue(self, mtype: MessageType, body: dict[str, Any], now: int) -> None:
        self._outbox.append(encode(mtype, body))
        self._last_sent = now

    def _request(
        self, mtype: MessageType, reply: MessageType, body: dict[str, Any], now: int
    ) -> None:
        self._request_id += 1
        self._awaiting = reply
        self._requested_ns = now
        self._queue(mtype, {"id": self._request_id, **body}, now)

    def _hello(self, now: int) -> None:
        self._request(MessageType.HELLO, MessageType.MANIFEST, {"protocol": PROTOCOL_VERSION}, now)

    def _connect(self, now: int) -> None:
        self._request(MessageType.CONNECT, MessageType.CONNECTED, {"now_ns": now}, now)

    def _lose(self, now: int, reason: str) -> None:
        self.status = LinkStatus.SYNCING
        self.problem = reason
        self.losses += 1
        self._lost_since = now
        self._errors.clear()
        log.warning(
            "driver process at %s unavailable: %s; re-syncing every %.0f ms",
            self.name,
            reason,
            self.retry_ns / 1e6,
        )
        self._hello(now)


def _power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
