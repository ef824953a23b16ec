"""The reference driver process: any installed driver, served over the bridge protocol.

::

    python -m robots.bridge serve --driver sim-arm --bind ipc:///tmp/arm.sock \\
        [--driver-config KEY=VALUE ...] [--rate HZ] [--liveness-ms 500] [--max-age-ms 50]

It is also the worked example for a driver process in another language. The whole of it: one
ROUTER socket, bound; one loop that waits for a message or for the next state push, whichever
comes first; for each message, the routing id (frame 0) says who sent it, frame 1 its type,
frame 2 its JSON. Only one endpoint is in control at a time (the one that sent ``connect``);
the state is pushed to it at the robot's rate; if it goes quiet for ``liveness_ms`` the robot
is stopped and the endpoint forgotten. Times are this process's monotonic clock, which on one
host is the endpoint's too (ipc://).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from robots import plugins
from robots.api import Driver
from robots.bridge.exceptions import BridgeProtocolError
from robots.bridge.protocol import (
    MAX_SILENCE_MS,
    PROTOCOL_VERSION,
    TO_DRIVER,
    ErrorCode,
    MessageType,
    command_from_json,
    decode,
    encode,
    state_to_json,
)
from robots.exceptions import InvalidCommand, RobotsError
from robots.limits import CommandGuard

__all__ = ["BridgeServer", "main"]

log = logging.getLogger(__name__)


class BridgeServer:
    """Serves ``driver`` on a ROUTER socket bound to ``bind`` (call `serve`, then `close`).

    ``rate_hz``: state pushes per second (default: the manifest's control rate; at least one
    every `MAX_SILENCE_MS`). ``liveness_ms``: the endpoint in control is forgotten, and the
    robot stopped, after this long without a message from it. ``max_age_ms``: an ``apply``
    whose ``now_ns`` is older than this on arrival is dropped (it waited in a queue).
    """

    def __init__(
        self,
        driver: Driver,
        bind: str,
        *,
        rate_hz: float | None = None,
        liveness_ms: float = 500.0,
        max_age_ms: float = 50.0,
    ) -> None:
        self.driver = driver
        self.manifest = driver.manifest
        self.guard = CommandGuard(self.manifest)
        rate = rate_hz or self.manifest.control_rate_hz
        self.period_ns = round(min(1e9 / rate, MAX_SILENCE_MS * 1e6))
        self.liveness_ns = round(liveness_ms * 1e6)
        self.max_age_ns = round(max_age_ms * 1e6)
        self.peer: bytes | None = None
        """Routing id of the endpoint in control."""
        self.heard_ns = 0
        """When it was last heard from."""
        self.actuated: tuple[int, int] | None = None
        """(ref, time) of the last apply, reported for a driver that does not report actuation."""
        self.before: tuple[int | None, int | None] = (None, None)
        """The driver's actuation report when the endpoint connected (not passed on)."""
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(bind)
        except zmq.ZMQError:
            self.socket.close()
            self.context.term()
            raise
        self.ipc_path = bind[len("ipc://") :] if bind.startswith("ipc://") else None
        self.ipc_inode = os.stat(self.ipc_path).st_ino if self.ipc_path else None

    # -- the loop --------------------------------------------------------------------------------

    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Answer messages and push state until ``should_stop()`` returns True."""
        next_push = time.monotonic_ns()
        while not should_stop():
            wait_ms = math.ceil((next_push - time.monotonic_ns()) / 1e6)
            if self.socket.poll(max(0, wait_ms)):
                while True:
                    try:
                        frames = self.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self.handle(frames[0], frames[1:], time.monotonic_ns())
                    except Exception:  # a bug here must not take the robot's server down
                        log.exception("failed to handle a message from %s", frames[0].hex())
            now = time.monotonic_ns()
            if now >= next_push:
                self.push_state(now)
                next_push += self.period_ns
                if next_push <= now:  # fell behind: restart the cadence from now
                    next_push = now + self.period_ns

    def handle(self, peer: bytes, frames: list[bytes], now: int) -> None:
        """One message from the endpoint ``peer``."""
        try:
            mtype, body = decode(frames, TO_DRIVER)
        except BridgeProtocolError as exc:
            self.send(peer, MessageType.ERROR, {"code": ErrorCode.BAD_MESSAGE, "message": str(exc)})
            return
        if mtype is MessageType.HELLO:
            self.hello(peer, body)
        elif mtype is MessageType.CONNECT:
            self.connect(peer, body, now)
        elif peer != self.peer:
            self.error(peer, ErrorCode.NOT_CONNECTED, "send connect first", mtype)
        else:
            self.heard_ns = now
            if mtype is MessageType.APPLY:
                self.apply(body, now)
            elif mtype is MessageType.HOLD:
                self.call(self.driver.hold, now, mtype)
            elif mtype is MessageType.STOP:
                self.call(self.driver.stop, now, mtype)
            elif mtype is MessageType.CLOSE:
                log.info("endpoint %s left: stopping the robot", peer.hex())
                self.call(self.driver.stop, now, mtype)
                self.peer = None
            # PING: being heard is all it is for.

    def hello(self, peer: bytes, body: dict[str, Any]) -> None:
        if body.get("protocol") != PROTOCOL_VERSION:
            message = f"protocol {body.get('protocol')!r} asked, {PROTOCOL_VERSION} spoken"
            self.error(peer, ErrorCode.UNSUPPORTED_PROTOCOL, message, MessageType.HELLO)
            return
        reply = {
            "id": body.get("id"),
            "protocol": PROTOCOL_VERSION,
            "manifest": self.manifest.to_dict(),
            "reports_actuation": True,  # the driver's own reports, or the time of apply
        }
        self.send(peer, MessageType.MANIFEST, reply)

    def connect(self, peer: bytes, body: dict[str, Any], now: int) -> None:
        if self.peer not in (None, peer) and now - self.heard_ns < self.liveness_ns:
            self.error(peer, ErrorCode.BUSY, "another endpoint is in control", MessageType.CONNECT)
            return
        try:
            if self.driver.is_connected:
                self.driver.stop(now)  # a new session starts still, as after connect
            else:
                self.driver.connect(now)
            state = self.driver.read(now)
        except Exception as exc:
            self.error(peer, ErrorCode.DRIVER_ERROR, f"{type(exc).__name__}: {exc}", "connect")
            return
        log.info("endpoint %s in control", peer.hex())
        self.peer, self.heard_ns, self.actuated = peer, now, None
        self.before = (state.actuated_ref, state.actuated_ns)
        state.actuated_ref = state.actuated_ns = None  # refs of another session mean nothing
        self.send(
            peer, MessageType.CONNECTED, {"id": body.get("id"), "state": state_to_json(state)}
        )

    def apply(self, body: dict[str, Any], now: int) -> None:
        try:
            command, sent_ns = command_from_json(body)
            command, _ = self.guard.check(command)  # the endpoint checked it too: belt and braces
        except BridgeProtocolError as exc:
            self.error(self.peer, ErrorCode.BAD_MESSAGE, str(exc), MessageType.APPLY)
            return
        except InvalidCommand as exc:
            self.error(self.peer, ErrorCode.INVALID_COMMAND, str(exc), MessageType.APPLY)
            return
        if now - sent_ns > self.max_age_ns:
            age = f"{(now - sent_ns) / 1e6:.1f} ms old on arrival"
            self.error(self.peer, ErrorCode.STALE_COMMAND, age, MessageType.APPLY)
            return
        if self.call(lambda t: self.driver.apply(command, t), now, MessageType.APPLY):
            self.actuated = (command.ref, now)
        else:
            self.call(self.driver.hold, now, MessageType.HOLD)  # as the endpoint does

    def push_state(self, now: int) -> None:
        """Push the state to the endpoint in control, or stop the robot if it went quiet."""
        if self.peer is None:
            return
        if now - self.heard_ns > self.liveness_ns:
            log.warning(
                "endpoint %s quiet for %.0f ms: stopping",
                self.peer.hex(),
                1e-6 * (now - self.heard_ns),
            )
            self.call(self.driver.stop, now, MessageType.STOP)
            self.peer = None
            return
        try:
            state = self.driver.read(now)
            if not type(self.driver).reports_actuation:
                state.actuated_ref, state.actuated_ns = self.actuated or (None, None)
            elif (state.actuated_ref, state.actuated_ns) == self.before:
                state.actuated_ref = state.actuated_ns = None  # nothing of this session yet
            self.send(self.peer, MessageType.STATE, state_to_json(state))
        except Exception as exc:  # a NaN in the state is refused by encode() too
            self.error(self.peer, ErrorCode.DRIVER_ERROR, f"{type(exc).__name__}: {exc}", "read")

    # -- helpers ---------------------------------------------------------------------------------

    def call(self, method: Callable[[int], None], now: int, op: str) -> bool:
        """Call the driver; on failure tell the endpoint. True if it worked."""
        try:
            method(now)
        except Exception as exc:
            log.warning("driver %s failed: %s", op, exc)
            if self.peer is not None:
                self.error(self.peer, ErrorCode.DRIVER_ERROR, f"{type(exc).__name__}: {exc}", op)
            return False
        return True

    def error(self, peer: bytes | None, code: ErrorCode, message: str, op: str) -> None:
        if peer is not None:
            self.send(peer, MessageType.ERROR, {"code": code, "message": message, "op": op})

    def send(self, peer: bytes, mtype: MessageType, body: dict[str, Any]) -> None:
        # A ROUTER never blocks: a message to a peer that is gone or not reading is dropped.
        self.socket.send_multipart([peer, *encode(mtype, body)], zmq.NOBLOCK)

    def close(self) -> None:
        """Stop and release the robot, close the socket, remove the ipc socket file (if it is
        still the one this server bound)."""
        try:
            if self.driver.is_connected:
                self.driver.stop(time.monotonic_ns())
        finally:
            self.driver.close()
            self.socket.close()
            self.context.term()
            if self.ipc_path is not None:
                try:
                    if os.stat(self.ipc_path).st_ino == self.ipc_inode:
                        os.unlink(self.ipc_path)
                except FileNotFoundError:
                    pass


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robots.bridge serve ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m robots.bridge",
        description="Serve an installed robot driver to a telepresence endpoint over the bridge "
        "protocol (ZeroMQ), e.g. for `telepresence robot --driver bridge --driver-config "
        "endpoint=ipc:///tmp/arm.sock`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a driver until interrupted")
    serve.add_argument("--driver", required=True, help="installed driver to serve, e.g. sim-arm")
    serve.add_argument("--bind", required=True, help="ZeroMQ address, e.g. ipc:///tmp/arm.sock")
    serve.add_argument(
        "--driver-config", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    serve.add_argument("--rate", type=float, help="state pushes per second (default: manifest's)")
    serve.add_argument("--liveness-ms", type=float, default=500.0, help="default: 500")
    serve.add_argument("--max-age-ms", type=float, default=50.0, help="default: 50")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bad = [kv for kv in args.driver_config if "=" not in kv]
        if bad:
            raise ValueError(f"--driver-config takes KEY=VALUE, got {bad[0]!r}")
        options = dict(kv.split("=", 1) for kv in args.driver_config)
        driver = plugins.create_driver(args.driver, options)
        server = BridgeServer(
            driver,
            args.bind,
            rate_hz=args.rate,
            liveness_ms=args.liveness_ms,
            max_age_ms=args.max_age_ms,
        )
    except (RobotsError, ValueError, zmq.ZMQError) as exc:
        print(f"python -m robots.bridge serve: error: {exc}", file=sys.stderr)
        return 2
    log.info("serving %s (robot %s) at %s", args.driver, server.manifest.robot_id, args.bind)
    try:
        server.serve(lambda: stopping)
    finally:
        server.close()
    return 0
