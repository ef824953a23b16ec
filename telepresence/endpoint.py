"""The robot endpoint's core: admits commands, runs the control tick, reports telemetry (sans-IO).

Design: datagrams are fed in with `receive_datagram(data, addr, now)`; the control loop calls
`tick(now)` at the control rate; whatever must be sent is collected from `datagrams_to_send()`.
The core never touches a socket or reads the time itself, except through the `clock` it is
given, used only to stamp "decoded" (after decoding, inside the receive call) and the send time
of telemetry. A command counts as applied at the `now` of the tick that hands it to the driver,
the same time the driver is given, so device time is measured on the driver's own timeline.

Receive path (per datagram): decode (malformed -> counted, dropped) -> session check (only the
session in control is heard; another may take control when the robot is not ACTIVE) -> sequence
window (duplicates, and for commands anything not newer than the newest, are dropped) -> command
guard (NaN/inf, sizes, mode -> rejected; out-of-limits values clamped) -> the pending slot
(latest wins: a command still pending when a newer one arrives is superseded).

Tick: the pending command, if not older than the age limit, feeds the deadman; in ACTIVE mode it
is applied; entering HOLDING or STOPPED calls the driver's hold or stop. Then the driver is read,
and at the telemetry rate the state and a TELEMETRY report go to the session in control.

Driver failures: a driver call that raises makes the driver *unavailable*, and the core calls
`hold` once (unless `hold` or `stop` is what failed). It stays unavailable until the call that
failed works again: an `apply` (each new command is tried, and counted as dropped if it fails)
or, for any other call, a `read` (commands are dropped untried). Meanwhile the robot reports
HOLDING where it would report ACTIVE, in its TELEMETRY and heartbeat answers, so the station
sees that its commands do not move it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from robots.api import Command, Driver, RobotState
from robots.exceptions import InvalidCommand
from robots.limits import CommandGuard
from telepresence.aead import DEFAULT_BACKEND as AEAD_BACKEND
from telepresence.control.lease import ControlLease
from telepresence.deadman import Deadman
from telepresence.exceptions import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    UnknownSessionError,
)
from telepresence.native import IMPLEMENTATION as HOT_PATH
from telepresence.security import Opener, Sealer, SessionKeys, open_datagram
from telepresence.seqwindow import SequenceWindow, SeqVerdict
from telepresence.streams import Stream
from telepresence.wire import (
    COMMAND_TYPES,
    Counters,
    Header,
    Heartbeat,
    MessageType,
    RobotMode,
    Role,
    Telemetry,
    decode,
    encode,
)

__all__ = ["EndpointConfig", "RobotCore"]

_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__
log = logging.getLogger(__name__)

Address = Any  # whatever the transport uses (a (host, port) tuple for UDP)


@dataclass(kw_only=True)
class EndpointConfig:
    """Timing of the robot endpoint."""

    control_rate_hz: float = 500.0
    """Control loop rate: how often the freshest command is applied (1-10000 Hz)."""
    hold_after_s: float = 0.050
    """No valid command for this long: the driver holds (> 0)."""
    stop_after_s: float = 0.500
    """No valid command for this long: the driver stops (>= hold_after_s)."""
    max_command_age_s: float = 0.050
    """A command that waited longer than this since it arrived is stale, never applied (> 0)."""
    telemetry_rate_hz: float = 100.0
    """Rate of state and TELEMETRY datagrams to the station in control (0.1-10000 Hz)."""
    sender_clock_offset_ns: int | None = None
    """Our clock minus the station's, when known (0 on one host): then a command's age also
    counts its time on the network, from its send time."""

    def __post_init__(self) -> None:
        if not 1 <= self.control_rate_hz <= 10_000:
            raise ConfigError(f"control rate must be 1-10000 Hz, got {self.control_rate_hz:g}")
        if not 0.1 <= self.telemetry_rate_hz <= 10_000:
            raise ConfigError(
                f"telemetry rate must be 0.1-10000 Hz, got {self.telemetry_rate_hz:g}"
            )
        if not self.max_command_age_s > 0:
            raise ConfigError(f"max command age must be > 0 s, got {self.max_command_age_s:g}")
        # hold/stop are checked by Deadman with a message naming both options.
        Deadman(round(self.hold_after_s * 1e9), round(self.stop_after_s * 1e9))


class _Pending(NamedTuple):
    """The freshest checked command, waiting for the control tick (built with `_new_tuple`:
    no Python-level constructor on the receive path)."""

    command: Command
    header: Header
    received_ns: int
    decoded_ns: int
    clamped: bool


@dataclass(slots=True)
class _Stamps:
    stream: int
    seq: int
    sent_ns: int
    received_ns: int
    decoded_ns: int
    applied_ns: int


_HISTORY = 256  # applied commands remembered while waiting for their actuation report
_LOG_EVERY_NS = 1_000_000_000  # a driver failure of one kind is logged at most once a second
# Enum members as module globals: on Python 3.11 `MessageType.HEARTBEAT` goes through the
# enum's descriptor (60 ns warm, several times that on the cold caches between datagrams).
_HEARTBEAT = MessageType.HEARTBEAT
_DUPLICATE, _NEWEST, _TOO_OLD = SeqVerdict.DUPLICATE, SeqVerdict.NEWEST, SeqVerdict.TOO_OLD
_ACTIVE = RobotMode.ACTIVE
_ARRIVALS = 256  # arrival times of accepted commands kept for `command_arrivals`
_HEARTBEAT_ANSWER_NS = 50_000_000  # at most one heartbeat answer per path every 50 ms


@dataclass
class _DriverFault:
    """The driver is unavailable: which call failed first, when, the error count then, and
    whether the failure was logged."""

    call: str
    since: int
    errors: int
    logged: bool


class SecureSessions:
    """The sessions the control plane has opened, with their data-plane keys, and the control
    lease that says which one may command (sans-IO)."""

    def __init__(self, lease: ControlLease) -> None:
        self.lease = lease
        self.openers: dict[int, Opener] = {}
        self.sealers: dict[int, Sealer] = {}

    def add(self, keys: SessionKeys) -> None:
        self.openers[keys.session] = keys.opener(Role.ROBOT)
        self.sealers[keys.session] = keys.sealer(Role.ROBOT)

    def remove(self, session: int) -> None:
        self.openers.pop(session, None)
        self.sealers.pop(session, None)


class RobotCore:
    """Sans-IO robot endpoint around one driver.

    Without `secure`, datagrams travel in clear and any session may take control when the
    robot is not ACTIVE (``--insecure``: benchmarks only). With `secure`, only datagrams sealed
    with the key of a session the control plane opened are heard, and only the holder of the
    control lease may command; everything else is counted and dropped.
    """

    def __init__(
        self,
        driver: Driver,
        config: EndpointConfig,
        *,
        clock: Callable[[], int],
        secure: SecureSessions | None = None,
    ) -> None:
        self.driver = driver
        self.secure = secure
        self.config = config
        self.manifest = driver.manifest
        self.counters = Counters()
        """What became of the datagrams received; sent in every TELEMETRY."""
        self.driver_errors = 0
        self._driver_down: _DriverFault | None = None
        """Set while the driver is unavailable."""
        self._driver_logged: dict[str, int] = {}
        self.deadman = Deadman(round(config.hold_after_s * 1e9), round(config.stop_after_s * 1e9))
        self._clock = clock
        self._guard = CommandGuard(self.manifest)
        self._reports_actuation = type(driver).reports_actuation
        self._max_age_ns = round(config.max_command_age_s * 1e9)
        self._telemetry_period_ns = round(1e9 / config.telemetry_rate_hz)
        self._next_telemetry = 0
        self._session: int | None = None
        self._peer: Address | None = None
        self._windows: dict[tuple[int, int], SequenceWindow] = {}
        self._pending: _Pending | None = None
        self._applied: dict[int, _Stamps] = {}
        self._next_ref = 1
        self._report: tuple[_Stamps, int, bool] | None = None
        self._state: RobotState | None = None
        self._outbox: list[tuple[bytes | bytearray, Address]] = []
        self._arrivals: list[int] = []
        self._heartbeat_answered: dict[Address, int] = {}
        self._observers: dict[int, Address] = {}
        self._seqs: dict[int, dict[Stream, int]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, now: int) -> None:
        """Connect the driver; the robot starts STOPPED until the first valid command."""
        self.driver.connect(now)
        self._state = self.driver.read(now)

    def close(self) -> None:
        """Stop and close the driver; a driver that fails here is logged, not raised."""
        try:
            if self.driver.is_connected:
                self.driver.stop(self._clock())
        except Exception:
            self.driver_errors += 1
            log.exception("driver %s: stop failed while closing", type(self.driver).__name__)
        finally:
            try:
                self.driver.close()
            except Exception:
                self.driver_errors += 1
                log.exception("driver %s: close failed", type(self.driver).__name__)

    @property
    def mode(self) -> RobotMode:
        """The safety state the robot reports: the deadman's, except HOLDING instead of ACTIVE
        while the driver is unavailable (commands arrive but move nothing)."""
        mode = self.deadman.mode
        if mode is _ACTIVE and self._driver_down is not None:
            return RobotMode.HOLDING
        return mode

    @property
    def driver_available(self) -> bool:
        """False from a driver call that raised until a `read` succeeds again."""
        return self._driver_down is None

    @property
    def session(self) -> int | None:
        """The session in control (or last in control)."""
        return self._session

    @property
    def peer(self) -> Address | None:
        """Where telemetry goes: the latest address of the session in control."""
        return self._peer

    # -- receive path ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: int) -> None:
        """Feed one received datagram (arrival time `now`). Never raises for bad input."""
        c = self.counters
        c.received += 1
        secure = self.secure
        try:
            if secure is None:
                header, message = decode(data)
            else:
                header, message = open_datagram(data, secure.openers)
        except DecodeError as exc:
            c.malformed += 1
            log.debug("malformed datagram from %s: %s", addr, exc)
            return
        except UnknownSessionError:
            c.unknown_session += 1
            return
        except AuthenticationError as exc:
            c.forged += 1
            log.debug("forged datagram from %s: %s", addr, exc)
            return
        mtype = header.type
        is_command = mtype in COMMAND_TYPES
        if not (is_command or mtype is _HEARTBEAT):
            c.dropped += 1
            return
        session = header.session
        if secure is None:
            if session != self._session:
                if self._session is not None and self.deadman.mode is _ACTIVE:
                    c.dropped += 1  # another session is in control
                    return
                self._take_control(session, addr)
        elif is_command and not secure.lease.holds(session, now):
            c.dropped += 1  # only the holder of the control lease commands
            return
        key = (session, header.stream)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SequenceWindow()
        verdict = window.accept(header.seq)
        if verdict is _DUPLICATE:
            if not is_command and session == self._session:
                self._answer_heartbeat(addr, now)  # the copy that came by another path
            c.duplicate += 1
            return
        if verdict is not _NEWEST and (is_command or verdict is _TOO_OLD):
            c.stale += 1
            return
        # Only an authenticated, fresh datagram may move control, the telemetry address or the
        # lease: a replayed one never does.
        if (
            secure is not None
            and session != self._session
            and (is_command or self._session is None or secure.lease.holder != self._session)
        ):
            self._take_control(session, addr)
        if session == self._session:
            self._peer = addr  # the path of the freshest first copy: the best live path
            if not is_command:
                self._answer_heartbeat(addr, now)
        elif secure is not None:
            self._observers[session] = addr  # another session watching: it gets telemetry too
        if not is_command:
            return
        try:
            command, clamped = self._guard.check(message)
        except InvalidCommand as exc:
            c.rejected += 1
            log.debug("rejected command %d: %s", header.seq, exc)
            return
        if secure is not None and not secure.lease.touch(session, now):
            c.dropped += 1  # the lease lapsed meanwhile
            return
        if self._pending is not None:
            c.superseded += 1
        self._pending = _new_tuple(_Pending, (command, header, now, self._clock(), clamped))
        if len(self._arrivals) < _ARRIVALS:
            self._arrivals.append(now)

    def _take_control(self, session: int, addr: Address) -> None:
        if self._session is not None:
            log.info("session %08x takes control (was %08x)", session, self._session)
        else:
            log.info("session %08x takes control from %s", session, addr)
        if self.secure is not None and self._session is not None and self._peer is not None:
            self._observers[self._session] = self._peer  # the former controller may watch on
        self._observers.pop(session, None)
        self._session = session
        self._peer = addr
        if self.secure is None:  # clear datagrams have no replay protection worth keeping
            self._windows = {k: w for k, w in self._windows.items() if k[0] == session}
        self._applied.clear()
        self._report = None
        if self._pending is not None:
            self.counters.superseded += 1
            self._pending = None

    # -- control tick ---------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """One control period: apply the freshest valid command, run the deadman, read state,
        and queue telemetry when it is due."""
        pending, self._pending = self._pending, None
        if pending is not None:
            age = now - pending.received_ns
            offset = self.config.sender_clock_offset_ns
            if offset is not None:
                age = max(age, now - (pending.header.send_time_ns + offset))
            if age >= self._max_age_ns:
                self.counters.stale += 1
                pending = None
            else:
                self.deadman.feed(pending.received_ns)
        change = self.deadman.poll(now)
        down = self._driver_down
        if pending is not None:
            if down is not None and down.call != "apply":
                self.counters.dropped += 1  # the driver is unavailable: nothing is applied
            elif self.deadman.mode is RobotMode.ACTIVE:
                self._apply(pending, now)  # after a failed apply, each command is the probe
            else:
                self.counters.stale += 1
        if change is RobotMode.HOLDING:
            log.info("no valid command for %.0f ms: holding", self.config.hold_after_s * 1e3)
            self._call_driver(self.driver.hold, now)
        elif change is RobotMode.STOPPED:
            log.info("no valid command for %.0f ms: stopping", self.config.stop_after_s * 1e3)
            self._call_driver(self.driver.stop, now)
        elif change is RobotMode.ACTIVE:
            log.info(
                "commands arriving: active" if self._driver_down is None
                else "commands arriving, but the driver is unavailable: holding"
            )  # fmt: skip
        try:
            self._state = self.driver.read(now)
        except Exception as exc:
            self._driver_failed("read", exc, now)
        else:
            down = self._driver_down
            if down is not None and down.call != "apply":
                self._driver_back(now)
            self._note_actuation(self._state)
        if now >= self._next_telemetry:
            self._next_telemetry += self._telemetry_period_ns
            if self._next_telemetry <= now:  # first report, or fell behind: restart the cadence
                self._next_telemetry = now + self._telemetry_period_ns
            if self._peer is not None:
                self._queue_telemetry(now)

    def _apply(self, p: _Pending, now: int) -> None:
        ref = self._next_ref
        self._next_ref += 1
        p.command.ref = ref
        try:
            self.driver.apply(p.command, now)
        except Exception as exc:
            self.counters.dropped += 1  # it never reached the driver
            self._driver_failed("apply", exc, now)
            return
        if self._driver_down is not None and self._driver_down.call == "apply":
            self._driver_back(now)
        applied = now  # the driver's timeline: the command was applied at the tick's `now`
        c = self.counters
        c.applied += 1
        if p.clamped:
            c.clamped += 1
        h = p.header
        stamps = _Stamps(h.stream, h.seq, h.send_time_ns, p.received_ns, p.decoded_ns, applied)
        self._applied[ref] = stamps
        if len(self._applied) > _HISTORY:
            del self._applied[next(iter(self._applied))]
        if not self._reports_actuation:
            self._report = (stamps, applied, False)

    def _note_actuation(self, state: RobotState) -> None:
        ref = state.actuated_ref
        if ref is None or state.actuated_ns is None:
            return
        stamps = self._applied.get(ref)
        if stamps is None:
            return
        for old in [r for r in self._applied if r < ref]:
            del self._applied[old]
        self._report = (stamps, state.actuated_ns, True)

    def _call_driver(self, method: Callable[[int], None], now: int) -> None:
        try:
            method(now)
        except Exception as exc:
            self._driver_failed(method.__name__, exc, now)

    def _driver_failed(self, what: str, exc: Exception, now: int) -> None:
        """Count a driver failure. The first one makes the driver unavailable and holds the
        robot. It is logged (the traceback the first time each call fails) unless the same call
        failed less than a second before, in which case an outage still going on after a
        second is logged then; the recovery is logged when the failure was."""
        self.driver_errors += 1
        down = self._driver_down
        if down is not None:
            if not down.logged and now - down.since >= _LOG_EVERY_NS:
                down.logged = True
                log.warning(
                    "driver %s: %s failing for %.0f ms (%d failed calls): holding; commands are "
                    "not applied until it works again",
                    type(self.driver).__name__, down.call, (now - down.since) / 1e6,
                    self.driver_errors - down.errors + 1,
                )  # fmt: skip
            return
        last = self._driver_logged.get(what)
        logged = last is None or now - last >= _LOG_EVERY_NS
        self._driver_down = _DriverFault(what, now, self.driver_errors, logged)
        if logged:
            self._driver_logged[what] = now
            log.warning(
                "driver %s: %s failed (%s): holding; commands are not applied until it works again",
                type(self.driver).__name__,
                what,
                exc,
                exc_info=last is None,
            )
        if what not in ("hold", "stop"):
            self._call_driver(self.driver.hold, now)

    def _driver_back(self, now: int) -> None:
        down = self._driver_down
        assert down is not None
        self._driver_down = None
        if down.logged:
            log.warning(
                "driver %s works again after %.0f ms (%d failed calls): commands are applied again",
                type(self.driver).__name__,
                (now - down.since) / 1e6,
                self.driver_errors - down.errors + 1,
            )

    # -- send path ------------------------------------------------------------------------

    def forget_session(self, session: int) -> None:
        """The control plane closed `session`: drop its windows and sequence numbers."""
        self._observers.pop(session, None)
        self._windows = {k: w for k, w in self._windows.items() if k[0] != session}
        self._seqs.pop(session, None)
        if self._session == session:
            self._session = self._peer = None
            self._pending = None  # a closed session's command is never applied
            self._report = None
            self._applied.clear()

    def _answer_heartbeat(self, addr: Address, now: int) -> None:
        last = self._heartbeat_answered.get(addr)
        if last is not None and now - last < _HEARTBEAT_ANSWER_NS:
            return
        self._heartbeat_answered[addr] = now
        if len(self._heartbeat_answered) > 64:  # paths come and go: forget the oldest
            del self._heartbeat_answered[next(iter(self._heartbeat_answered))]
        self._send(
            Heartbeat(role=Role.ROBOT, mode=self.mode),
            Stream.ROBOT_HEARTBEAT,
            self._clock(),
            to=addr,
        )

    def _send(
        self,
        message: object,
        stream: Stream,
        now: int,
        to: Address = None,
        session: int | None = None,
    ) -> None:
        peer = self._peer if to is None else to
        session = self._session if session is None else session
        assert session is not None and peer is not None
        seqs = self._seqs.get(session)
        if seqs is None:  # numbering starts at 1 per session and never restarts within one
            seqs = self._seqs[session] = dict.fromkeys(Stream, 0)
        seq = seqs[stream] = seqs[stream] + 1
        if self.secure is None:
            data: bytes | bytearray = encode(
                message, stream=stream, session=session, seq=seq, send_time_ns=now
            )
        else:
            sealer = self.secure.sealers.get(session)
            if sealer is None:
                return
            data = sealer.seal(message, stream=stream, seq=seq, send_time_ns=now)
        self._outbox.append((data, peer))

    def _queue_telemetry(self, now: int) -> None:
        # TELEMETRY goes first: its send time is stamped last thing before it leaves, and the
        # station stamps its arrival before decoding anything else of this burst.
        t = Telemetry(mode=self.mode, counters=self.counters)
        if self._report is not None:
            s, actuated, known = self._report
            t.command_stream, t.command_seq, t.command_sent_ns = s.stream, s.seq, s.sent_ns
            t.received_ns, t.decoded_ns, t.applied_ns = s.received_ns, s.decoded_ns, s.applied_ns
            t.actuated_ns, t.actuated_known = actuated, known
        state = self._state
        for session, to in [(None, None), *self._observers.items()]:
            self._send(t, Stream.TELEMETRY, self._clock(), to=to, session=session)
            if state is not None:
                if state.joints is not None:
                    self._send(state.joints, Stream.JOINT_STATE, now, to=to, session=session)
                if state.base is not None:
                    self._send(state.base, Stream.BASE_STATE, now, to=to, session=session)
                for wrench in state.wrenches[-1:]:
                    self._send(wrench, Stream.FORCE_TORQUE, now, to=to, session=session)

    def command_arrivals(self) -> list[int]:
        """Arrival times of the commands accepted since the last call (at most 256), for an
        adapter that aligns its control ticks to the station's sending phase."""
        out, self._arrivals = self._arrivals, []
        return out

    def datagrams_to_send(self) -> list[tuple[bytes | bytearray, Address]]:
        """Datagrams queued since the last call, with their destination."""
        out, self._outbox = self._outbox, []
        return out

    def status(self) -> dict[str, Any]:
        """JSON-ready counters and state."""
        down = self._driver_down
        try:
            own = self.driver.status()
        except Exception as exc:  # a status that fails must not take the report down
            own = {"status_error": f"{type(exc).__name__}: {exc}"}
        return {
            "mode": self.mode.name.lower(),
            "session": self._session,
            "secure": self.secure is not None,
            "aead": AEAD_BACKEND if self.secure is not None else None,
            "hot_path": HOT_PATH,  # "c" (telepresence._native) or "python"
            "counters": self.counters.as_dict(),
            "driver_errors": self.driver_errors,
            "driver": {
                "name": type(self.driver).__name__,
                "available": down is None,
                "failed_call": None if down is None else down.call,
                **own,
            },
        }
