"""Asyncio adapters that run the robot endpoint and the operator station on real UDP sockets.

Each wires a sans-IO core to a `UdpEndpoint` and a `PreciseTicker`: datagrams go into the core
as they arrive, the ticker calls the core's tick at the control rate, and whatever the core
queued is sent straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from telepresence.aio import PreciseTicker
from telepresence.control.server import ControlServer, ServerSession
from telepresence.endpoint import RobotCore
from telepresence.exceptions import RobotUnreachable
from telepresence.qos import Grant, Scheduler, TrafficClass
from telepresence.security import SessionKeys
from telepresence.sender import (
    DEFAULT_LINK_CAPACITY_BPS,
    IPV4_UDP_OVERHEAD,
    IPV6_UDP_OVERHEAD,
    PacedSender,
    grants_of,
    local_grant,
    pacer_config,
    robot_specs,
    station_specs,
)
from telepresence.station import PathStats, StationCore
from telepresence.streams import Stream
from telepresence.udp import UdpEndpoint, open_udp

__all__ = ["RobotUnreachable", "run_station", "serve_robot"]

log = logging.getLogger(__name__)


ALIGN_MARGIN_NS = 200_000
"""With tick alignment, a control tick comes this long after the commands' typical arrival."""
_ALIGN_EVERY = 100  # ticks between alignment decisions
_ALIGN_MIN_SAMPLES = 32
_ALIGN_MIN_CONCENTRATION = 0.9


def alignment_shift(
    arrivals: list[int], tick_ns: int, period_ns: int, margin_ns: int = ALIGN_MARGIN_NS
) -> int | None:
    """How far to move the tick schedule so that ticks come `margin_ns` after the commands'
    typical arrival, or None when arrivals are not phase-locked to the ticks (too few, or
    spread over the period, e.g. a station sending at another rate).

    Phases are circular: the mean direction of the arrivals' phases within the period, and
    the resultant length as the measure of how concentrated they are."""
    if len(arrivals) < _ALIGN_MIN_SAMPLES:
        return None
    phase = (np.asarray(arrivals, dtype=np.int64) - tick_ns) % period_ns
    angle = phase * (2 * np.pi / period_ns)
    c, s = float(np.cos(angle).mean()), float(np.sin(angle).mean())
    if np.hypot(c, s) < _ALIGN_MIN_CONCENTRATION:
        return None
    mean_phase = (np.arctan2(s, c) % (2 * np.pi)) * period_ns / (2 * np.pi)
    shift = int(round(mean_phase + margin_ns)) % period_ns  # noqa: RUF046 (numpy float)
    if shift > period_ns // 2:
        shift -= period_ns
    return shift


class _Lateness:
    """How late control ticks ran, kept in a preallocated ring (µs percentiles on demand)."""

    def __init__(self, size: int = 1 << 16) -> None:
        self._ns = np.zeros(size, dtype=np.int64)
        self._n = 0

    def add(self, ns: int) -> None:
        self._ns[self._n % self._ns.size] = ns
        self._n += 1

    def summary(self) -> dict[str, float | int | None]:
        data = self._ns[: min(self._n, self._ns.size)] / 1e3
        if not data.size:
            return {"ticks": 0, "p50_us": None, "p99_us": None, "p999_us": None, "max_us": None}
        p50, p99, p999 = np.percentile(data, (50, 99, 99.9))
        return {
            "ticks": self._n,
            "p50_us": round(float(p50), 1),
            "p99_us": round(float(p99), 1),
            "p999_us": round(float(p999), 1),
            "max_us": round(float(data.max()), 1),
        }


async def _wait(stop: asyncio.Event, duration: float | None) -> None:
    if duration is None:
        await stop.wait()
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)


async def serve_robot(
    core: RobotCore,
    *,
    local: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    align_ticks: bool = True,
    control: ControlServer | None = None,
    more_paths: list[tuple[str, int]] | None = None,
    link_capacity_bps: float = DEFAULT_LINK_CAPACITY_BPS,
) -> dict[str, Any]:
    """Run the robot endpoint until `stop` is set or `duration` seconds pass; return status.

    Everything the robot sends leaves through a `PacedSender` pacing at `link_capacity_bps`:
    its streams are granted from the configured rates for the sessions open (the one in
    control and the observers), scheduled by class (heartbeat answers first, force/torque,
    then state and telemetry) and marked with their class's DSCP.

    `more_paths` are further UDP addresses to serve (one per network path, e.g. a fibre and
    a 5G interface); the core sees each datagram's address as ``(path index, address)``, so
    replies leave by the path they are meant for.

    With `align_ticks`, the control ticks' phase follows the station's: when commands arrive
    phase-locked to the ticks (the station sends at the control rate, or a divisor of it),
    the schedule moves so that each tick comes `ALIGN_MARGIN_NS` after the typical arrival,
    instead of anywhere up to a whole period later (the rate stays the same).

    With `control`, the control-plane server runs alongside: sessions it opens get their
    data-plane keys in the core, and sessions it closes are forgotten."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    # The robot sends state and telemetry: marked as the telemetry class (docs/qos.md).
    udps: list[Any] = []
    try:
        for i, (where, on) in enumerate([(local, sock), *((p, None) for p in more_paths or [])]):
            udps.append(
                await open_udp(
                    lambda data, addr, now, i=i: core.receive_datagram(data, (i, addr), now),  # type: ignore[misc]
                    local=where,
                    sock=on,
                    tos=TrafficClass.TELEMETRY.tos,
                )
            )
        addresses = [u.transport.get_extra_info("sockname") for u in udps if u.transport]
        address = addresses[0]
        sender = _sender(udps, link_capacity_bps)

        def regrant() -> None:  # the robot's streams, for the sessions open now
            secure = core.secure
            receivers = 1 if secure is None else max(1, len(secure.sealers))
            specs = robot_specs(
                joints=len(core.manifest.joints),
                telemetry_rate_hz=core.config.telemetry_rate_hz,
                receivers=receivers,
                paths=len(udps),
                secure=secure is not None,
                overhead=sender.overhead,
            )
            sender.grant(_reserve_own(control, specs))

        regrant()
        core.start(time.monotonic_ns())
        if control is not None:
            _attach_control(core, control, addresses, regrant)
            endpoint = await control.start()
            log.info("control plane on %s (%s)", endpoint, "secure" if core.secure else "insecure")
    except BaseException:  # a path or the control plane failed to open: undo the rest
        for u in udps:
            if u.transport is not None:
                u.transport.close()
        if core.driver.is_connected:
            core.close()
        raise
    lateness = _Lateness()
    period = round(1e9 / core.config.control_rate_hz)
    ticks = 0
    shifts: list[int] = []

    def on_tick(tick_ns: int) -> None:
        nonlocal ticks
        now = time.monotonic_ns()
        lateness.add(now - tick_ns)
        core.tick(now)
        for data, (path, addr) in core.datagrams_to_send():
            send(data, data[6] | data[7] << 8, ((udps[path], addr),))  # header: stream u16 LE
        ticks += 1
        if align_ticks and ticks % _ALIGN_EVERY == 0:
            shift = alignment_shift(core.command_arrivals(), tick_ns, period)
            if shift is not None and abs(shift) > ALIGN_MARGIN_NS // 4:
                ticker.shift(shift)
                shifts.append(shift)
                core.command_arrivals()  # measured against the old schedule: start afresh

    send = sender.send
    ticker = PreciseTicker(loop, period, on_tick, name="control-loop")
    log.info(
        "robot endpoint %s listening on %s:%s at %g Hz",
        core.manifest.robot_id,
        address[0],
        address[1],
        core.config.control_rate_hz,
    )
    ticker.start()
    try:
        await _wait(stop, duration)
    finally:
        ticker.stop()
        await asyncio.sleep(0)  # let a tick already handed to the loop run first
        if control is not None:
            await control.close()
        core.close()
        sender.close()
        for u in udps:
            if u.transport is not None:
                u.transport.close()
    return {
        "address": f"{address[0]}:{address[1]}",
        "paths": [f"{a[0]}:{a[1]}" for a in addresses],
        **core.status(),
        "tick_lateness": lateness.summary(),
        "tick_overruns": ticker.overruns,
        "tick_alignment_shifts_us": [round(x / 1e3, 1) for x in shifts[-20:]],
        "handler_errors": sum(u.handler_errors for u in udps),
        "sender": {**sender.summary(), "send_dropped": sum(u.send_dropped for u in udps)},
        "control": None if control is None else control.status(),
    }


def _reserve_own(control: ControlServer | None, specs: list[Any]) -> list[Grant]:
    """The robot's own streams, entered in the control plane's downlink admission (so what
    stations reserve ``down`` is admitted against what is left) and granted to its sender. A
    stream that does not fit is still sent, on a local grant, and the refusal is logged: the
    robot's state and telemetry are never silenced by a reservation."""
    if control is None:
        return grants_of(specs)
    admission = control.state.admission["down"]
    grants = []
    for spec in specs:
        result = admission.change(spec) if spec.stream in admission else admission.request(spec)
        if isinstance(result, Grant):
            grants.append(result)
        else:
            log.warning("the robot's own %s (downlink): %s", spec.label, result.message)
            grants.append(local_grant(spec))
    return grants


def _sender(udps: list[UdpEndpoint], capacity_bps: float) -> PacedSender:
    """A paced sender for these endpoints (IPv6 headers counted when the first one is v6)."""
    sock = udps[0].sock
    v6 = sock is not None and sock.family == socket.AF_INET6
    return PacedSender(
        Scheduler(pacer_config(capacity_bps)),
        overhead=IPV6_UDP_OVERHEAD if v6 else IPV4_UDP_OVERHEAD,
    )


def _attach_control(
    core: RobotCore,
    control: ControlServer,
    addresses: list[Any],
    regrant: Callable[[], None] = lambda: None,
) -> None:
    """Wire the control plane's sessions to the data plane's keys, windows and grants."""
    state = control.state
    state.data_addresses = [
        f"{'' if a[0] in ('0.0.0.0', '::') else a[0]}:{a[1]}" for a in addresses
    ]

    def opened(session: ServerSession) -> None:
        if core.secure is not None:
            core.secure.add(SessionKeys.derive(session.secret, session.session))
        regrant()

    def closed(session: ServerSession) -> None:
        if core.secure is not None:
            core.secure.remove(session.session)
        core.forget_session(session.session)
        regrant()

    state.on_open, state.on_close = opened, closed


def data_address(advertised: str, control_host: str) -> tuple[str, int]:
    """A robot's advertised data address; an empty host means the control plane's host."""
    host, _, port = advertised.rpartition(":")
    return (host or control_host or "127.0.0.1"), int(port)


async def run_station(
    core: StationCore,
    remote: tuple[str, int] | list[tuple[str, int]],
    *,
    duration: float | None,
    stop: asyncio.Event | None = None,
    wait_for_robot_s: float = 5.0,
    grace_s: float = 0.2,
    grants: Sequence[Grant] = (),
    link_capacity_bps: float = DEFAULT_LINK_CAPACITY_BPS,
) -> dict[str, Any]:
    """Connect to a robot, drive it for `duration` seconds (or until `stop`), return the
    summary. Raises `RobotUnreachable` if no robot answers within `wait_for_robot_s`.

    With several robot addresses (paths), every command and heartbeat is sent on each: the
    robot keeps the first copy, so losing a path costs no time at all.

    Everything goes through a `PacedSender` pacing at `link_capacity_bps`: commands are
    policed to the command stream's grant (from `grants`, what the robot granted; without
    one, a local grant sized by `station_specs` once the robot's joints are known),
    heartbeats to a local grant. A command over its grant is dropped and counted
    (``policed``), never queued: the next one follows within a control period."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    remotes = [remote] if isinstance(remote, tuple) else list(remote)
    if len(core.paths) != len(remotes):
        core.paths = [PathStats(f"{h}:{p}") for h, p in remotes]
    udps: list[Any] = []
    try:
        for i, address in enumerate(remotes):
            # Commands and heartbeats are the control class: Expedited Forwarding.
            udps.append(
                await open_udp(
                    lambda data, addr, now, i=i: core.receive_datagram(data, now, i),  # type: ignore[misc]
                    remote=address,
                    tos=TrafficClass.CONTROL.tos,
                )
            )
    except BaseException:  # one path failed to open: close the others
        for u in udps:
            if u.transport is not None:
                u.transport.close()
        raise
    where = ", ".join(f"{h}:{p}" for h, p in remotes)
    sender = _sender(udps, link_capacity_bps)
    secure = core.secure

    def specs(joints: int) -> Any:
        return station_specs(
            joints=joints,
            control_rate_hz=core.config.control_rate_hz,
            heartbeat_rate_hz=core.config.heartbeat_rate_hz,
            secure=secure,
            overhead=sender.overhead,
        )

    sender.grant([local_grant(specs(1).heartbeat), *grants])
    targets = tuple((udp, None) for udp in udps)
    c = core.counters

    def send_all(data: bytes | bytearray, stream: int) -> bool:
        if not sender.send(data, stream, targets):
            return False
        for stats in core.paths:
            stats.sent += 1
        return True

    async def heartbeats() -> None:
        period = 1.0 / core.config.heartbeat_rate_hz
        while True:
            send_all(core.heartbeat(time.monotonic_ns()), Stream.STATION_HEARTBEAT)
            await asyncio.sleep(period)

    beat = asyncio.create_task(heartbeats())
    ticker: PreciseTicker | None = None
    try:
        deadline = loop.time() + wait_for_robot_s
        while core.robot is None:
            if loop.time() > deadline:
                raise RobotUnreachable(
                    f"no answer from a robot at {where} within {wait_for_robot_s:g} s: is "
                    "`telepresence robot` running there, and can UDP reach it?"
                )
            if stop.is_set():
                return core.summary()
            await asyncio.sleep(0.005)
        log.info("robot answered (%s); driving at %g Hz", where, core.config.control_rate_hz)
        if sender.scheduler.grant(Stream.COMMAND) is None:
            joints = core.robot.joints
            n = 1 if joints is None else len(joints.positions)
            sender.grant([local_grant(specs(n).command)])

        def on_tick(tick_ns: int) -> None:
            data = core.tick(time.monotonic_ns())
            if data is not None and not send_all(data, Stream.COMMAND):
                c["commands_sent"] -= 1  # over the grant: dropped here, never sent
                c["policed"] += 1

        period = round(1e9 / core.config.control_rate_hz)
        ticker = PreciseTicker(loop, period, on_tick, name="station-loop")
        ticker.start()
        await _wait(stop, duration)
        ticker.stop()
        beat.cancel()
        await asyncio.sleep(grace_s)  # the robot's last telemetry is still on its way
    finally:
        if ticker is not None:
            ticker.stop()
        beat.cancel()
        if core.input is not None:
            core.input.close()
        sender.close()
        for udp in udps:
            assert udp.transport is not None
            udp.transport.close()
    summary = core.summary()
    summary["sender"] = {**sender.summary(), "send_dropped": sum(u.send_dropped for u in udps)}
    return summary
