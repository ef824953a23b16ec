"""The operator station's core: samples input, sends commands, profiles telemetry (sans-IO).

Design: the station first sends heartbeats (`heartbeat(now)`) until the robot answers with a
state datagram, which tells it what the robot is (`RobotView`); then the input source is made,
and every control tick `tick(now)` returns one encoded command. Received datagrams go to
`receive_datagram(data, now)`: state updates the view, TELEMETRY gives one latency sample for
each newly reported command, and a clock-offset exchange (t1 command sent, t2 received by the
robot, t3 telemetry sent, t4 telemetry received).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robots.api import BaseState, JointState
from telepresence.aead import DEFAULT_BACKEND as AEAD_BACKEND
from telepresence.clocksync import OffsetEstimator
from telepresence.exceptions import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    UnknownSessionError,
)
from telepresence.inputs import InputSource, RobotView
from telepresence.native import IMPLEMENTATION as HOT_PATH
from telepresence.profiler import LatencyProfile
from telepresence.security import SessionKeys
from telepresence.seqwindow import SequenceWindow, SeqVerdict
from telepresence.streams import Stream
from telepresence.wire import Heartbeat, MessageType, RobotMode, Role, Telemetry, decode, encode

__all__ = ["StationConfig", "StationCore"]

log = logging.getLogger(__name__)

_PATH_DEAD_NS = 500_000_000  # a path silent this long (others not) counts as down
_RING = 1 << 16  # commands remembered for matching telemetry (131 s at 500 Hz)
_MODES_KEPT = 1000  # robot mode changes kept for the summary
_COMMANDING_MIN_NS = 20_000_000  # commanding: a command sent within 3 periods, at least this
_WARN_EVERY_NS = 5_000_000_000  # "the robot does not move" at most this often

InputFactory = Callable[[RobotView, int], InputSource]


@dataclass(kw_only=True)
class StationConfig:
    """Settings of the operator station."""

    control_rate_hz: float = 500.0
    """Commands per second (1-10000 Hz)."""
    heartbeat_rate_hz: float = 10.0
    """Heartbeats per second (0.1-1000 Hz); they keep telemetry coming while idle."""
    session: int | None = None
    """Session id (a random non-zero u32 when None)."""
    clock_offset_ns: int | None = None
    """Robot clock minus station clock, when known (0 on one host); None: estimate it."""

    def __post_init__(self) -> None:
        if not 1 <= self.control_rate_hz <= 10_000:
            raise ConfigError(f"control rate must be 1-10000 Hz, got {self.control_rate_hz:g}")
        if not 0.1 <= self.heartbeat_rate_hz <= 1000:
            raise ConfigError(f"heartbeat rate must be 0.1-1000 Hz, got {self.heartbeat_rate_hz:g}")
        if self.session is not None and not 0 < self.session < 2**32:
            raise ConfigError(f"session must be 1..2**32-1, got {self.session}")


@dataclass
class PathStats:
    """One network path to the robot (one robot data address)."""

    address: str
    sent: int = 0
    """Datagrams sent on this path (every command and heartbeat goes on every path)."""
    received: int = 0
    """Authenticated datagrams of our session received on this path, copies included."""
    last_rx_ns: int | None = None
    downlink: list[tuple[int, int]] = field(default_factory=list)
    """(robot send time, our arrival time) of the robot's heartbeat answers on this path."""


class StationCore:
    """Sans-IO operator station."""

    def __init__(
        self,
        config: StationConfig,
        make_input: InputFactory,
        *,
        clock: Callable[[], int],
        keys: SessionKeys | None = None,
        paths: list[str] | None = None,
        observe: bool = False,
    ) -> None:
        self.config = config
        self.observe = observe
        """An observer session: telemetry only, no input source, no commands."""
        self.secure = keys is not None
        """A secure session: datagrams are sealed and opened with the session's keys."""
        self.paths = [PathStats(a) for a in (paths or ["robot"])]
        self.session = config.session or (secrets.randbits(32) or 1)
        self._sealer = self._opener = None
        if keys is not None:  # a secure session: its id and keys come from the control plane
            self.session = keys.session
            self._sealer, self._opener = keys.sealer(Role.STATION), keys.opener(Role.STATION)
        self.robot: RobotView | None = None
        self.input: InputSource | None = None
        self.profile = LatencyProfile()
        self.clock_offset = OffsetEstimator(fixed_offset_ns=config.clock_offset_ns)
        self.last_telemetry: Telemetry | None = None
        self.joints: JointState | None = None
        self.base: BaseState | None = None
        self.counters = {
            "commands_sent": 0,
            "heartbeats_sent": 0,
            "received": 0,
            "malformed": 0,
            "duplicate": 0,
            "stale": 0,
            "foreign": 0,
            "forged": 0,
            "policed": 0,
            "telemetry": 0,
        }
        self._make_input = make_input
        self._clock = clock
        self._seq = dict.fromkeys((Stream.COMMAND, Stream.STATION_HEARTBEAT), 0)
        self._ring_seq = np.zeros(_RING, dtype=np.uint64)
        self._ring_input = np.zeros(_RING, dtype=np.int64)
        self._ring_sent = np.zeros(_RING, dtype=np.int64)
        self._windows: dict[int, SequenceWindow] = {}
        self._last_profiled = 0
        self._first_telemetry_seq: int | None = None
        self.robot_modes: list[tuple[int, RobotMode]] = []
        """The robot's safety state as its TELEMETRY reported it: (arrival, mode) at each change."""
        self._robot_mode: RobotMode | None = None
        self._last_command_ns: int | None = None
        self._not_moving_since: int | None = None
        self._warned_ns: int | None = None
        self._commanding_ns = max(_COMMANDING_MIN_NS, round(3e9 / config.control_rate_hz))
        self._loss_base = (0, 0)

    # -- send ------------------------------------------------------------------------------

    def heartbeat(self, now: int) -> bytes | bytearray:
        """One encoded heartbeat datagram."""
        self._seq[Stream.STATION_HEARTBEAT] += 1
        self.counters["heartbeats_sent"] += 1
        return self._encode(
            Heartbeat(role=Role.STATION), Stream.STATION_HEARTBEAT,
            self._seq[Stream.STATION_HEARTBEAT], now,
        )  # fmt: skip

    def _encode(self, message: object, stream: Stream, seq: int, now: int) -> bytes | bytearray:
        if self._sealer is not None:
            return self._sealer.seal(message, stream=stream, seq=seq, send_time_ns=now)
        data: bytearray = encode(
            message, stream=stream, session=self.session, seq=seq, send_time_ns=now
        )
        return data

    def tick(self, now: int) -> bytes | bytearray | None:
        """Sample the input and return the command datagram, or None (robot not yet known,
        or the input has nothing to send)."""
        if self.robot is None or self.observe:
            return None
        if self.input is None:
            self.input = self._make_input(self.robot, now)
        command = self.input.sample(now)
        if command is None:
            return None
        seq = self._seq[Stream.COMMAND] = self._seq[Stream.COMMAND] + 1
        sent = self._last_command_ns = self._clock()
        data = self._encode(command, Stream.COMMAND, seq, sent)
        i = seq & (_RING - 1)
        self._ring_seq[i] = seq
        self._ring_input[i] = now
        self._ring_sent[i] = sent
        self.counters["commands_sent"] += 1
        return data

    # -- receive ---------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: int, path: int = 0) -> None:
        """Feed one datagram from the robot that arrived at `now` on `path`. Never raises for
        bad input."""
        c = self.counters
        c["received"] += 1
        try:
            header, message = decode(data) if self._opener is None else self._opener.open(data)
        except DecodeError as exc:
            c["malformed"] += 1
            log.debug("malformed datagram: %s", exc)
            return
        except (AuthenticationError, UnknownSessionError):
            c["forged"] += 1
            return
        if header.session != self.session:
            c["foreign"] += 1
            return
        stats = self.paths[path]
        stats.received += 1
        stats.last_rx_ns = now
        if header.type is MessageType.HEARTBEAT and len(stats.downlink) < 100_000:
            stats.downlink.append((header.send_time_ns, now))
        window = self._windows.setdefault(header.stream, SequenceWindow())
        verdict = window.accept(header.seq)
        if verdict is SeqVerdict.DUPLICATE:
            c["duplicate"] += 1
            return
        if verdict is SeqVerdict.TOO_OLD:
            c["stale"] += 1
            return
        mtype = header.type
        if mtype is MessageType.TELEMETRY:
            self._on_telemetry(message, header.seq, header.send_time_ns, now)
        elif mtype is MessageType.JOINT_STATE:
            self.joints = message
            if self.robot is None:
                self.robot = RobotView(joints=_copy_joints(message))
        elif mtype is MessageType.BASE_STATE:
            self.base = message
            if self.robot is None:
                self.robot = RobotView(base=message)

    def _on_telemetry(self, t: Telemetry, seq: int, sent: int, now: int) -> None:
        self.counters["telemetry"] += 1
        if self._first_telemetry_seq is None:
            self._first_telemetry_seq = seq
            # The robot's counters span its whole life: loss is judged from here on.
            self._loss_base = (self._sent_total(), t.counters.received)
        self.last_telemetry = t
        self._note_mode(t.mode, now)
        self.profile.add_downlink(sent, now)
        if not t.command_seq or t.command_seq <= self._last_profiled:
            return
        i = t.command_seq & (_RING - 1)
        if int(self._ring_seq[i]) != t.command_seq or self._ring_sent[i] != t.command_sent_ns:
            return  # not one of ours any more (ring wrapped, or another run's session)
        self._last_profiled = t.command_seq
        self.clock_offset.add(int(self._ring_sent[i]), t.received_ns, sent, now)
        self.profile.add_command(
            input_ns=int(self._ring_input[i]),
            sent_ns=int(self._ring_sent[i]),
            received_ns=t.received_ns,
            decoded_ns=t.decoded_ns,
            applied_ns=t.applied_ns,
            actuated_ns=t.actuated_ns,
        )

    def _note_mode(self, mode: RobotMode, now: int) -> None:
        """Keep the robot's mode changes; warn when it stops moving while commands are sent."""
        was = self._robot_mode
        if mode is was:
            return
        self._robot_mode = mode
        if len(self.robot_modes) < _MODES_KEPT:
            self.robot_modes.append((now, mode))
        commanding = self._last_command_ns is not None and (
            self._clock() - self._last_command_ns < self._commanding_ns
        )
        if was is RobotMode.ACTIVE and mode is not RobotMode.ACTIVE and commanding:
            if self._warned_ns is None or now - self._warned_ns >= _WARN_EVERY_NS:
                self._warned_ns = self._not_moving_since = now
                log.warning(
                    "the robot reports %s although commands are being sent: they do not move "
                    "it (its driver may be unavailable, or the commands do not reach it; see "
                    "the robot's log and its counters)",
                    mode.name,
                )
        elif mode is RobotMode.ACTIVE and self._not_moving_since is not None:
            log.warning(
                "the robot is active again after %.0f ms", (now - self._not_moving_since) / 1e6
            )
            self._not_moving_since = None

    # -- summary ---------------------------------------------------------------------------

    def _sent_total(self) -> int:
        return sum(p.sent for p in self.paths) or (
            self.counters["commands_sent"] + self.counters["heartbeats_sent"]
        )

    @property
    def telemetry_lost(self) -> int:
        """Telemetry datagrams missing from the sequence (sent by the robot, never received)."""
        w = self._windows.get(Stream.TELEMETRY)
        if w is None or self._first_telemetry_seq is None:
            return 0
        return max(0, w.highest - self._first_telemetry_seq + 1 - self.counters["telemetry"])

    def summary(self) -> dict[str, Any]:
        """JSON-ready result: latency profile, station and robot counters, loss. The robot's
        counters are those of its latest TELEMETRY (`Counters.as_dict()`), so they include the
        datagrams it refused as `forged` or of an `unknown_session`."""
        offset = self.clock_offset.offset_ns or 0
        robot = self.last_telemetry.counters.as_dict() if self.last_telemetry else None
        base_sent, base_received = self._loss_base
        sent = self._sent_total() - base_sent
        received = (robot["received"] - base_received) if robot else 0
        last = max((p.last_rx_ns or 0 for p in self.paths), default=0)
        return {
            "session": f"{self.session:08x}",
            "aead": AEAD_BACKEND if self.secure else None,
            "hot_path": HOT_PATH,  # "c" (telepresence._native) or "python"
            "latency": self.profile.report(offset, self.clock_offset.uncertainty_ns),
            "station": dict(self.counters, telemetry_lost=self.telemetry_lost),
            "robot": robot,
            "robot_mode": self.last_telemetry.mode.name.lower() if self.last_telemetry else None,
            "robot_modes": [
                {"at_s": round((at - self.robot_modes[0][0]) / 1e9, 3), "mode": m.name.lower()}
                for at, m in self.robot_modes
            ],
            "uplink_loss": None if robot is None or not sent else max(0, sent - received) / sent,
            "paths": [self._path_summary(p, offset, last) for p in self.paths],
        }

    @staticmethod
    def _path_summary(p: PathStats, offset: int, last_rx: int) -> dict[str, Any]:
        one_way = [(rx + offset - sent) / 1e3 for sent, rx in p.downlink]
        return {
            "address": p.address,
            "sent": p.sent,
            "received": p.received,
            "live": p.last_rx_ns is not None and last_rx - p.last_rx_ns < _PATH_DEAD_NS,
            "silent_ms": None if p.last_rx_ns is None else round((last_rx - p.last_rx_ns) / 1e6, 1),
            "downlink_p50_us": round(float(np.median(one_way)), 1) if one_way else None,
        }


def _copy_joints(j: JointState) -> JointState:
    """Detach a received state from its datagram buffer."""
    return JointState(
        positions=np.array(j.positions, dtype=np.float64),
        velocities=None if j.velocities is None else np.array(j.velocities, dtype=np.float64),
        efforts=None if j.efforts is None else np.array(j.efforts, dtype=np.float64),
        gripper=j.gripper,
    )
