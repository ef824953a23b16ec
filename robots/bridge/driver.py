"""`BridgeDriver`: a `Driver` whose robot lives in another process, reached over ZeroMQ.

The thin I/O adapter around `robots.bridge.link.BridgeLink`: one DEALER socket connected to the
driver process's ROUTER. `apply`, `hold` and `stop` are one non-blocking send each; `read`
drains what arrived (non-blocking), runs the link's timers and returns the newest state. Only
the startup (fetching the manifest, `connect`) waits, bounded by ``startup_timeout_ms``.

Why plain sockets with ``NOBLOCK`` and not ``zmq.asyncio`` (convention 10): the `Driver` API is
synchronous and is called from inside the endpoint's control tick, which must not await; a
non-blocking send and a non-blocking drain do all the bridge needs without yielding to the loop.

Socket options, and why:

- ``IMMEDIATE=1``: messages are queued only to a completed connection, so while the driver
  process is down `apply` fails at once (instead of queueing commands for a process that may
  come back seconds later);
- ``SNDHWM=16``: a driver process that stops reading makes `apply` fail within a few ticks;
- ``RCVHWM=64``: states beyond that, if the endpoint stalls, are dropped by the driver process's
  ROUTER rather than piling up;
- ``LINGER=0`` (100 ms for the final ``close`` message); reconnection is libzmq's, every
  ``min(retry_ms, 100)`` ms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from robots._sim import check_range
from robots.api import Command, ControlMode, Driver, DriverConfig, Manifest, RobotState
from robots.bridge.exceptions import DriverProcessError, DriverUnavailable
from robots.bridge.link import BridgeLink, LinkStatus
from robots.bridge.protocol import MessageType, command_to_json, encode
from robots.exceptions import DriverConfigError, InvalidCommand, NotConnected

__all__ = ["BridgeConfig", "BridgeDriver"]

log = logging.getLogger(__name__)

_SNDHWM = 16
_RCVHWM = 64
_MAX_DRAIN = 256
"""Messages handled per `read` at most, so a flooding driver process cannot stall the tick."""
_CLOSE_LINGER_MS = 100
_IPC_PATH_MAX = 107
"""Longest ipc:// path (bytes) a Unix-domain socket address can hold on Linux."""


@dataclass(kw_only=True)
class BridgeConfig(DriverConfig):
    """Options of the ``bridge`` driver (``--driver-config KEY=VALUE``)."""

    robot_id: str = "bridge-0"
    """Names the placeholder manifest only; the real robot_id comes from the driver process."""
    endpoint: str = ""
    """ZeroMQ address the driver process is bound to: ipc://PATH (same host), or tcp://HOST:PORT;
    empty only to list the driver (placeholder manifest, no I/O)."""
    startup_timeout_ms: float = 5000.0
    """How long fetching the manifest and connect() wait for the driver process, ms, in
    (0, 600000]."""
    liveness_ms: float = 200.0
    """No message from the driver process for this long: it is reported unavailable, ms, in
    [5, 60000] (the driver process sends something at least every 50 ms)."""
    heartbeat_ms: float = 50.0
    """Send a ping when nothing was sent to the driver process for this long, ms, in
    [1, 60000]."""
    retry_ms: float = 100.0
    """While the driver process is unavailable, try to re-sync this often, ms, in [1, 60000]."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_range(
            name, "startup_timeout_ms", self.startup_timeout_ms, 0, 600_000, unit="ms", lo_open=True
        )
        check_range(name, "liveness_ms", self.liveness_ms, 5, 60_000, unit="ms")
        check_range(name, "heartbeat_ms", self.heartbeat_ms, 1, 60_000, unit="ms")
        check_range(name, "retry_ms", self.retry_ms, 1, 60_000, unit="ms")
        ep = self.endpoint
        if not isinstance(ep, str):
            raise ValueError(f"{name}.endpoint must be a string, got {ep!r}")
        if ep.startswith("ipc://"):
            path = ep[len("ipc://") :]
            if not path or len(path.encode()) > _IPC_PATH_MAX:
                raise ValueError(
                    f"{name}.endpoint: an ipc:// path must have 1 to {_IPC_PATH_MAX} bytes, "
                    f"got {len(path.encode())}"
                )
        elif ep and not ep.startswith("tcp://"):
            raise ValueError(
                f"{name}.endpoint must be ipc://PATH or tcp://HOST:PORT (or empty), got {ep!r}"
            )


class BridgeDriver(Driver):
    """The ``bridge`` driver: forwards every call to a driver process over ZeroMQ.

    ``manifest``: with no ``endpoint`` (the default config, which `telepresence drivers`
    lists), a placeholder that says the manifest comes from the driver process. With an
    endpoint, the first access fetches the driver process's manifest, waiting up to
    ``startup_timeout_ms`` (raising `DriverUnavailable` if it does not answer), and keeps it:
    a restarted driver process must report the same manifest to be taken back.

    While the driver process is unavailable (gone, silent for ``liveness_ms``, or not keeping
    up), `apply`, `read`, `hold` and `stop` raise `DriverUnavailable`, and the bridge re-syncs
    every ``retry_ms`` on its own; an ``error`` message from the driver process is raised as
    `DriverProcessError` by the next `read`.
    """

    config_class = BridgeConfig
    reports_actuation = True
    """The driver process's reports, or, if it says it makes none, the time each ``apply``
    left the endpoint."""
    config: BridgeConfig

    def __init__(self, config: BridgeConfig | None = None) -> None:
        cfg = config if config is not None else BridgeConfig()
        if not isinstance(cfg, BridgeConfig):
            raise TypeError(f"BridgeDriver needs a BridgeConfig, got {type(cfg).__name__}")
        super().__init__(cfg)
        self._link = BridgeLink(
            cfg.endpoint or "(no endpoint set)",
            liveness_ns=round(cfg.liveness_ms * 1e6),
            heartbeat_ns=round(cfg.heartbeat_ms * 1e6),
            retry_ns=round(cfg.retry_ms * 1e6),
        )
        self._placeholder = Manifest(
            robot_id=cfg.robot_id,
            kind="out-of-process driver (placeholder: the manifest comes from the driver "
            "process at endpoint=...)",
            control_modes=(ControlMode.EE_POSE,),
            control_rate_hz=500.0,
        )
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._unsent: list[list[bytes]] = []
        self._connected = False

    # -- Driver API ------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        manifest = self._link.manifest
        if manifest is not None:
            return manifest
        if not self.config.endpoint:
            return self._placeholder
        self._open()
        self._link.fetch_manifest(time.monotonic_ns())
        self._wait(lambda: self._link.manifest is not None, "fetching the manifest")
        assert self._link.manifest is not None
        log.info(
            "driver process at %s: robot %s (%s)",
            self.config.endpoint,
            self._link.manifest.robot_id,
            self._link.manifest.kind,
        )
        return self._link.manifest

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, now_ns: int) -> None:
        if not self.config.endpoint:
            raise DriverConfigError(
                "the bridge driver needs the driver process's address: --driver-config "
                "endpoint=ipc://PATH (start one with `python -m robots.bridge serve --driver "
                "sim-arm --bind ipc://PATH`)",
                option="endpoint",
            )
        self._open()
        self._link.connect(now_ns)
        self._wait(lambda: self._link.status is LinkStatus.LIVE, "connecting")
        self._connected = True

    def apply(self, command: Command, now_ns: int) -> None:
        self._require_connection("apply")
        self._link.require_live(now_ns)
        try:
            frames = encode(MessageType.APPLY, command_to_json(command, now_ns))
        except ValueError as exc:
            raise InvalidCommand(f"command {command.ref} cannot be sent: {exc}") from exc
        self._send(frames, "apply")
        self._link.applied(command.ref, now_ns)

    def read(self, now_ns: int) -> RobotState:
        self._require_connection("read")
        link = self._link
        self._drain(now_ns)
        link.poll(now_ns)
        self._flush(keep=False)
        link.require_live(now_ns)
        errors = link.take_errors()
        if errors:
            code, message, op = errors[-1]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise DriverProcessError(
                f"driver process at {self.config.endpoint}: {code} in {op}: {message}{more}",
                code=code,
                op=op,
            )
        return link.take_state(now_ns)

    def hold(self, now_ns: int) -> None:
        self._control(MessageType.HOLD, now_ns)

    def stop(self, now_ns: int) -> None:
        self._control(MessageType.STOP, now_ns)

    def close(self) -> None:
        socket, context = self._socket, self._context
        self._connected = False
        if socket is None or context is None:
            return
        self._link.close(time.monotonic_ns())
        self._unsent.clear()
        self._flush(keep=False)
        self._socket = self._context = None
        socket.close(linger=_CLOSE_LINGER_MS)
        context.term()

    # -- diagnostics -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """JSON-ready link status and counters."""
        link = self._link
        return {
            "endpoint": self.config.endpoint,
            "link": link.status.value,
            "problem": link.problem,
            "malformed": link.malformed,
            "remote_errors": link.remote_errors,
            "losses": link.losses,
            "recoveries": link.recoveries,
        }

    # -- I/O -------------------------------------------------------------------------------------

    def _require_connection(self, what: str) -> None:
        if not self._connected:
            raise NotConnected(f"BridgeDriver.{what}() called before connect() or after close()")

    def _control(self, mtype: MessageType, now_ns: int) -> None:
        self._require_connection(mtype.value)
        self._link.require_live(now_ns)
        self._send(encode(mtype, {"now_ns": now_ns}), mtype.value)
        self._link.sent(now_ns)

    def _open(self) -> None:
        if self._socket is not None:
            return
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, _SNDHWM)
        socket.setsockopt(zmq.RCVHWM, _RCVHWM)
        socket.setsockopt(zmq.RECONNECT_IVL, max(1, min(round(self.config.retry_ms), 100)))
        try:
            socket.connect(self.config.endpoint)
        except zmq.ZMQError as exc:
            socket.close()
            context.term()
            raise DriverConfigError(
                f"endpoint {self.config.endpoint!r}: {exc}", option="endpoint"
            ) from exc
        self._context, self._socket = context, socket

    def _send(self, frames: list[bytes], what: str) -> None:
        socket = self._socket
        assert socket is not None
        try:
            socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            raise DriverUnavailable(
                f"driver process at {self.config.endpoint} cannot take the {what} message: "
                f"not connected, or not reading ({_SNDHWM} messages queued)"
            ) from None
        except zmq.ZMQError as exc:
            raise DriverUnavailable(f"sending {what} to {self.config.endpoint}: {exc}") from exc

    def _drain(self, now: int) -> None:
        socket = self._socket
        assert socket is not None
        receive = self._link.receive
        for _ in range(_MAX_DRAIN):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            receive(frames, now)

    def _flush(self, *, keep: bool) -> None:
        """Send what the link queued; on EAGAIN keep the rest for the next try (``keep``, at
        startup) or drop it (the link's timers send again what matters)."""
        socket = self._socket
        assert socket is not None
        frames = self._unsent + self._link.frames_to_send()
        self._unsent = []
        for i, message in enumerate(frames):
            try:
                socket.send_multipart(message, zmq.NOBLOCK)
            except zmq.Again:
                if keep:
                    self._unsent = frames[i:][-4:]
                else:
                    log.debug("dropped %d control message(s): not connected", len(frames) - i)
                return

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        """Pump the link until ``done()`` or ``startup_timeout_ms`` (startup only)."""
        socket = self._socket
        assert socket is not None
        timeout_ns = round(self.config.startup_timeout_ms * 1e6)
        deadline = time.monotonic_ns() + timeout_ns
        while True:
            now = time.monotonic_ns()
            self._drain(now)
            self._link.poll(now)
            self._flush(keep=True)
            if done():
                return
            if now >= deadline:
                hint = ""
                if not self._link.heard:
                    hint = (
                        "; is it running? e.g. `python -m robots.bridge serve --driver sim-arm "
                        f"--bind {self.config.endpoint}`"
                    )
                raise DriverUnavailable(
                    f"driver process at {self.config.endpoint}: {what} did not complete within "
                    f"{self.config.startup_timeout_ms:g} ms ({self._link.problem}){hint}"
                )
            flags = zmq.POLLIN | (zmq.POLLOUT if self._unsent else 0)
            socket.poll(min(5, max(1, (deadline - now) // 1_000_000)), flags)
