"""A conformance kit for driver authors: does a driver behave as the endpoint expects?

::

    from robots.conformance import check_driver, assert_conforms

    report = check_driver(MyDriver)          # real time, at the manifest's control rate
    print(report)
    assert_conforms(MyDriver)                # in a pytest test: raises ConformanceError

For a simulated robot, pass a hand-driven clock so the run is instant and exact::

    clock = ManualClock()
    assert_conforms(SimArm, clock=clock, sleep=clock.sleep)

Checks, in order (a check whose prerequisite failed is reported as not run):

``construct``, ``manifest`` (a valid `Manifest`, ``to_dict()`` JSON-serialisable),
``not_connected_before_connect``, ``connect``, ``read_state`` (a `RobotState` with the shapes the
manifest promises), ``apply_moves`` (a mid-range command of the first control mode, sent at the
control rate, moves the robot at least half way toward it within ``timeout_s``),
``actuation_report`` (``actuated_ref``/``actuated_ns``, if reported, name a command sent and a
time between its apply and the read; a driver whose class sets ``reports_actuation = True``
must report them), ``hold``, ``stop`` (and the robot comes to rest within
``timeout_s``), ``apply_after_stop``, ``close`` (idempotent; ``is_connected`` false afterwards).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robots.api import (
    BaseVelocityCommand,
    Command,
    ControlMode,
    Driver,
    DriverConfig,
    ForceTorque,
    JointCommand,
    Manifest,
    PoseCommand,
    RobotState,
    SensorKind,
)
from robots.exceptions import ConformanceError
from robots.limits import CommandGuard

__all__ = [
    "CHECKS",
    "ConformanceCheck",
    "ConformanceReport",
    "ManualClock",
    "assert_conforms",
    "check_driver",
]

logger = logging.getLogger(__name__)

CHECKS = (
    "construct",
    "manifest",
    "not_connected_before_connect",
    "connect",
    "read_state",
    "apply_moves",
    "actuation_report",
    "hold",
    "stop",
    "apply_after_stop",
    "close",
)
"""Names of the checks, in the order they run."""

_STILL_WINDOW_S = 0.1
"""Length of the window over which the robot must be still after `stop`."""


@dataclass(slots=True)
class ConformanceCheck:
    """The outcome of one named check."""

    name: str
    """One of `CHECKS`."""
    passed: bool
    """True if the driver passed."""
    message: str = ""
    """What was seen (why it failed, or a note)."""


@dataclass(slots=True)
class ConformanceReport:
    """The outcome of `check_driver`."""

    driver: str
    """Qualified name of the driver class."""
    checks: list[ConformanceCheck] = field(default_factory=list)
    """Every check, in order."""

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[ConformanceCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def raise_for_failures(self) -> None:
        """Raise `ConformanceError` listing the failed checks, if any."""
        if not self.ok:
            lines = "\n".join(f"  {c.name}: {c.message}" for c in self.failures)
            raise ConformanceError(f"{self.driver} failed {len(self.failures)} check(s):\n{lines}")

    def __str__(self) -> str:
        lines = [f"conformance of {self.driver}: {'ok' if self.ok else 'FAILED'}"]
        for c in self.checks:
            note = f"  {c.message}" if c.message else ""
            lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}{note}")
        return "\n".join(lines)


class ManualClock:
    """A clock driven by hand: call it for the time (ns); `sleep` and `advance` move it on."""

    def __init__(self, start_ns: int = 0) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` (rounded to whole nanoseconds)."""
        self.now_ns += max(0, round(seconds * 1e9))

    def advance(self, ns: int) -> None:
        """Advance by ``ns`` nanoseconds."""
        self.now_ns += max(0, ns)


class _Abort(Exception):
    """A check failed that later checks depend on."""


class _Kit:
    def __init__(
        self,
        driver: Driver,
        manifest: Manifest,
        clock: Callable[[], int],
        sleep: Callable[[float], None],
        timeout_s: float,
        stop_tolerance: float,
        command: Command | None,
    ) -> None:
        self.driver = driver
        self.manifest = manifest
        self.guard = CommandGuard(manifest)
        self.clock = clock
        self.sleep = sleep
        self.timeout_s = timeout_s
        self.stop_tolerance = stop_tolerance
        self.period_s = 1.0 / manifest.control_rate_hz
        self.user_command = command
        self.ref = 0
        self.sent: dict[int, int] = {}
        """ref -> apply time."""
        self.actuation_problems: list[str] = []
        self.actuation_seen = False

    # -- helpers -------------------------------------------------------------------------------

    def send(self, command: Command) -> None:
        self.ref += 1
        command.ref = self.ref
        checked, _ = self.guard.check(command)
        now = self.clock()
        self.sent[self.ref] = now
        self.driver.apply(checked, now)

    def read(self) -> RobotState:
        now = self.clock()
        state = self.driver.read(now)
        if not isinstance(state, RobotState):
            raise _Abort(f"read() returned {type(state).__name__}, not RobotState")
        ref, at = state.actuated_ref, state.actuated_ns
        if ref is not None:
            self.actuation_seen = True
            if ref not in self.sent:
                self.actuation_problems.append(f"actuated_ref {ref} was never sent")
            elif at is None:
                self.actuation_problems.append(f"actuated_ref {ref} without actuated_ns")
            elif not self.sent[ref] <= at <= now:
                self.actuation_problems.append(
                    f"actuated_ns {at} of ref {ref} is outside [apply time {self.sent[ref]}, "
                    f"read time {now}]"
                )
        return state

    def tick(self, command: Command | None = None) -> RobotState:
        if command is not None:
            self.send(command)
        state = self.read()
        self.sleep(self.period_s)
        return state

    def features(self, state: RobotState) -> np.ndarray:
        """What moves: the joint positions and the base pose, as one vector."""
        parts: list[float] = []
        if state.joints is not None:
            parts.extend(np.asarray(state.joints.positions, dtype=np.float64).tolist())
        if state.base is not None:
            parts.extend((state.base.x, state.base.y, state.base.theta))
        return np.array(parts, dtype=np.float64)

    def command(self, fraction: float) -> Command:
        """A command of the first control mode, ``fraction`` of the way through each range."""
        m = self.manifest
        mode = m.control_modes[0]
        if mode is ControlMode.JOINT_POSITION:
            target = m.lower + fraction * (m.upper - m.lower)
            gripper = None
            if m.gripper is not None:
                gripper = m.gripper.lower + fraction * (m.gripper.upper - m.gripper.lower)
            return JointCommand(positions=target, gripper=gripper)
        if mode is ControlMode.BASE_VELOCITY:
            assert m.base is not None
            sign = 1.0 if fraction >= 0.5 else -1.0
            return BaseVelocityCommand(
                vx=sign * 0.5 * m.base.max_linear, wz=sign * 0.5 * m.base.max_angular
            )
        return PoseCommand(
            position=np.array([0.3, 0.0, 0.3]), orientation=np.array([0.0, 0.0, 0.0, 1.0])
        )

    def distance(self, state: RobotState, command: Command) -> float | None:
        """How far the state is from the command (normalised), or None if not measurable."""
        m = self.manifest
        if isinstance(command, JointCommand) and state.joints is not None:
            span = m.upper - m.lower
            q = np.asarray(state.joints.positions, dtype=np.float64)
            return float(np.max(np.abs(q - command.positions) / span))
        if isinstance(command, BaseVelocityCommand) and state.base is not None:
            assert m.base is not None
            return max(
                abs(state.base.vx - command.vx) / m.base.max_linear,
                abs(state.base.wz - command.wz) / m.base.max_angular,
            )
        return None

    # -- checks --------------------------------------------------------------------------------

    def read_state(self) -> str:
        now = self.clock()
        state = self.driver.read(now)
        if not isinstance(state, RobotState):
            raise _Abort(f"read() returned {type(state).__name__}, not RobotState")
        problems = _state_problems(self.manifest, state, now)
        if problems:
            raise _Abort("; ".join(problems))
        return ""

    def apply_moves(self) -> str:
        start = self.tick()
        if self.user_command is not None:
            command = self.user_command
        else:
            command = self.command(0.5)
            for fraction in (0.3, 0.7):
                d = self.distance(start, command)
                if d is None or d >= 0.1:
                    break
                command = self.command(fraction)
        d0 = self.distance(start, command)
        if d0 is None:
            for _ in range(3):
                self.tick(command)
            return "command accepted; motion not checked (no comparable state for this mode)"
        start_features = self.features(start)
        deadline = self.clock() + round(self.timeout_s * 1e9)
        d = d0
        while self.clock() <= deadline:
            state = self.tick(command)
            d = self.distance(state, command) or 0.0
            if d <= 0.5 * d0:
                return f"distance to the command {d0:.3g} -> {d:.3g} (normalised)"
            moved = float(np.max(np.abs(self.features(state) - start_features), initial=0.0))
            if isinstance(command, BaseVelocityCommand) and moved >= 0.01:
                return f"base pose moved by {moved:.3g}"
        raise _Abort(
            f"after {self.timeout_s:g} s of commands at {self.manifest.control_rate_hz:g} Hz "
            f"the state is still {d:.3g} from the command (was {d0:.3g}; normalised)"
        )

    def actuation_report(self) -> str:
        if self.actuation_problems:
            raise _Abort("; ".join(self.actuation_problems[:5]))
        declared = type(self.driver).reports_actuation
        if declared and not self.actuation_seen:
            raise _Abort(
                "reports_actuation is True but read() never set actuated_ref for a command sent"
            )
        if not declared and self.actuation_seen:
            return "actuated_ref is reported but ignored: set reports_actuation = True"
        if not declared:
            return "reports_actuation is False: the endpoint reports the apply time"
        return ""

    def get_moving(self, fraction: float) -> None:
        command = self.command(fraction)
        for _ in range(3):
            self.tick(command)

    def hold(self) -> str:
        self.get_moving(0.8)
        self.driver.hold(self.clock())
        for _ in range(3):
            self.tick()
        return ""

    def stop(self) -> str:
        self.get_moving(0.2)
        stopped_at = self.clock()
        self.driver.stop(stopped_at)
        deadline = stopped_at + round(self.timeout_s * 1e9)
        while True:
            t0, f0 = self.clock(), self.features(self.read())
            end = t0 + round(_STILL_WINDOW_S * 1e9)
            while self.clock() < end:
                self.sleep(self.period_s)
            t1, f1 = self.clock(), self.features(self.read())
            speed = self._speed(f1 - f0, (t1 - t0) * 1e-9)
            if speed <= self.stop_tolerance:
                return f"at rest {(t1 - stopped_at) * 1e-9:.3g} s after stop()"
            if t1 > deadline:
                raise _Abort(
                    f"still moving {self.timeout_s:g} s after stop(): mean speed "
                    f"{speed:.3g} of the manifest's maximum over {_STILL_WINDOW_S:g} s"
                )

    def _speed(self, delta: np.ndarray, dt_s: float) -> float:
        """Largest speed in ``delta`` over ``dt_s``, as a fraction of the manifest's maximum."""
        m = self.manifest
        worst = 0.0
        n = len(m.joints)
        for i, joint in enumerate(m.joints):
            vmax = min(joint.max_velocity, (joint.upper - joint.lower) / _STILL_WINDOW_S)
            worst = max(worst, abs(float(delta[i])) / dt_s / vmax)
        if m.base is not None and delta.size >= n + 3:
            dx, dy, dtheta = (float(v) for v in delta[n : n + 3])
            dtheta = (dtheta + math.pi) % (2 * math.pi) - math.pi
            worst = max(worst, math.hypot(dx, dy) / dt_s / m.base.max_linear)
            worst = max(worst, abs(dtheta) / dt_s / m.base.max_angular)
        return worst

    def apply_after_stop(self) -> str:
        command = self.command(0.5)
        for _ in range(3):
            self.tick(command)
        self.driver.hold(self.clock())
        return ""


def _state_problems(manifest: Manifest, state: RobotState, now: int) -> list[str]:
    problems = []
    if state.time_ns != now:
        problems.append(f"time_ns is {state.time_ns}, not the now_ns passed to read ({now})")
    n = len(manifest.joints)
    if n:
        joints = state.joints
        if joints is None:
            problems.append(f"joints is None but the manifest declares {n} joints")
        else:
            for attr in ("positions", "velocities", "efforts"):
                values = getattr(joints, attr)
                if values is None:
                    if attr == "positions":
                        problems.append("joints.positions is None")
                    continue
                shape = np.shape(values)
                if shape != (n,):
                    problems.append(f"joints.{attr} has shape {shape}, expected ({n},)")
                elif not np.isfinite(np.asarray(values, dtype=np.float64)).all():
                    problems.append(f"joints.{attr} is not finite")
            if (manifest.gripper is None) != (joints.gripper is None):
                has = "has" if manifest.gripper is not None else "has no"
                problems.append(
                    f"the manifest {has} gripper but joints.gripper is {joints.gripper}"
                )
    elif state.joints is not None:
        problems.append("joints is set but the manifest declares no joints")
    if manifest.base is not None and state.base is None:
        problems.append("base is None but the manifest declares a base")
    if manifest.base is None and state.base is not None:
        problems.append("base is set but the manifest declares no base")
    if state.base is not None and not -math.pi < state.base.theta <= math.pi:
        problems.append(f"base.theta {state.base.theta} is not wrapped to (-pi, pi]")
    n_ft = sum(1 for s in manifest.sensors if s.kind is SensorKind.FORCE_TORQUE)
    wrenches: list[object] = list(state.wrenches)
    for w in wrenches:
        if not isinstance(w, ForceTorque):
            problems.append(f"wrenches holds a {type(w).__name__}, not ForceTorque")
        elif not 0 <= w.sensor < n_ft:
            problems.append(f"wrench sensor index {w.sensor} but {n_ft} force_torque sensors")
        elif np.shape(w.force) != (3,) or np.shape(w.torque) != (3,):
            problems.append("wrench force and torque must have 3 values each")
    return problems


def check_driver(
    driver_cls: type[Driver],
    config: DriverConfig | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], None] = time.sleep,
    *,
    timeout_s: float = 2.0,
    stop_tolerance: float = 0.01,
    command: Command | None = None,
) -> ConformanceReport:
    """Run every check of `CHECKS` against a fresh instance of ``driver_cls``.

    ``clock`` returns monotonic ns and ``sleep`` waits for seconds; pass a `ManualClock` and its
    `sleep` to run a simulated driver in hand-driven time. ``timeout_s`` bounds how long the
    robot may take to move toward a command and to come to rest after `stop`;
    ``stop_tolerance`` is the speed, as a fraction of the manifest's maximum, below which the
    robot counts as still. ``command`` replaces the generated mid-range command.
    """
    report = ConformanceReport(driver=f"{driver_cls.__module__}.{driver_cls.__qualname__}")
    done: set[str] = set()

    def record(name: str, passed: bool, message: str = "") -> None:
        report.checks.append(ConformanceCheck(name, passed, message))
        done.add(name)
        (logger.debug if passed else logger.warning)("conformance %s: %s %s", name, passed, message)

    def run(name: str, check: Callable[[], str], *, fatal: bool = False) -> bool:
        try:
            record(name, True, check())
            return True
        except _Abort as exc:
            record(name, False, str(exc))
        except Exception as exc:
            record(name, False, f"raised {type(exc).__name__}: {exc}")
        if fatal:
            raise _Abort(name)
        return False

    driver: Driver | None = None
    try:
        try:
            driver = driver_cls(config) if config is not None else driver_cls()
        except Exception as exc:
            record("construct", False, f"raised {type(exc).__name__}: {exc}")
            raise _Abort("construct") from exc
        record("construct", True)
        manifest = _check_manifest(driver, record)
        run(
            "not_connected_before_connect",
            lambda: _expect(not driver.is_connected, "is_connected is True before connect()"),
        )
        kit = _Kit(driver, manifest, clock, sleep, timeout_s, stop_tolerance, command)

        def connect() -> str:
            driver.connect(clock())
            return _expect(driver.is_connected, "is_connected is False after connect()")

        run("connect", connect, fatal=True)
        run("read_state", kit.read_state, fatal=True)
        run("apply_moves", kit.apply_moves)
        run("actuation_report", kit.actuation_report)
        run("hold", kit.hold)
        run("stop", kit.stop)
        run("apply_after_stop", kit.apply_after_stop)
    except _Abort as exc:
        failed = str(exc)
        for name in CHECKS[:-1]:
            if name not in done:
                record(name, False, f"not run: {failed!r} failed")
    finally:
        if driver is not None:
            drv = driver

            def close() -> str:
                drv.close()
                drv.close()
                return _expect(not drv.is_connected, "is_connected is True after close()")

            run("close", close)
        else:
            record("close", False, "not run: 'construct' failed")
    return report


def _expect(condition: bool, problem: str) -> str:
    if not condition:
        raise _Abort(problem)
    return ""


def _check_manifest(driver: Driver, record: Callable[[str, bool, str], None]) -> Manifest:
    try:
        manifest: object = driver.manifest
        if not isinstance(manifest, Manifest):
            raise _Abort(f"manifest is a {type(manifest).__name__}, not robots.api.Manifest")
        json.dumps(manifest.to_dict(), allow_nan=False)
    except _Abort as exc:
        record("manifest", False, str(exc))
        raise _Abort("manifest") from exc
    except Exception as exc:
        record("manifest", False, f"raised {type(exc).__name__}: {exc}")
        raise _Abort("manifest") from exc
    record("manifest", True, "")
    return manifest


def assert_conforms(
    driver_cls: type[Driver],
    config: DriverConfig | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], None] = time.sleep,
    *,
    timeout_s: float = 2.0,
    stop_tolerance: float = 0.01,
    command: Command | None = None,
) -> ConformanceReport:
    """`check_driver`, then raise `ConformanceError` if any check failed (for pytest)."""
    report = check_driver(
        driver_cls,
        config,
        clock,
        sleep,
        timeout_s=timeout_s,
        stop_tolerance=stop_tolerance,
        command=command,
    )
    report.raise_for_failures()
    return report
