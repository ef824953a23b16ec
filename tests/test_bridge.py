"""The bridge driver against real driver processes over ipc://: the reference server in a
subprocess, a hand-written fake driver process in a thread, and the real endpoint end to end."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import Keys

from robots.api import JointCommand, RobotState
from robots.bridge import BridgeConfig, BridgeDriver, DriverProcessError, DriverUnavailable
from robots.bridge.protocol import PROTOCOL_VERSION
from robots.conformance import check_driver
from robots.plugins import describe_drivers, load_driver_class
from robots.sim_arm import SimArm, SimArmConfig

SERVER = [sys.executable, "-m", "robots.bridge", "serve"]
LIVENESS_MS = 200.0


class Server:
    """The reference driver process, as a subprocess that can be killed and started again."""

    def __init__(self, endpoint: str, *args: str) -> None:
        self.endpoint = endpoint
        self.args = args
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Server:
        self.process = subprocess.Popen(
            [*SERVER, "--driver", "sim-arm", "--bind", self.endpoint, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self) -> str:
        """SIGTERM, wait, and return what it logged."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=10)
        return err

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "arm.sock"
    assert len(str(path).encode()) <= 107, "ipc path too long for a Unix socket"
    yield f"ipc://{path}"
    path.unlink(missing_ok=True)  # a killed server leaves its socket file behind


@pytest.fixture
def server(endpoint: str) -> Iterator[Server]:
    srv = Server(endpoint).start()
    yield srv
    srv.close()


def make_driver(endpoint: str, **options: Any) -> BridgeDriver:
    options = {"liveness_ms": LIVENESS_MS, "startup_timeout_ms": 10_000, **options}
    return BridgeDriver(BridgeConfig(endpoint=endpoint, **options))


class Ticker:
    """Drives a connected bridge at 500 Hz like the endpoint: apply (optional), then read."""

    def __init__(self, driver: BridgeDriver) -> None:
        self.driver = driver
        self.ref = 0
        self.sent: dict[int, int] = {}

    def tick(self, target: float | None = None) -> tuple[RobotState | None, list[Exception]]:
        errors: list[Exception] = []
        now = time.monotonic_ns()
        if target is not None:
            self.ref += 1
            try:
                self.driver.apply(JointCommand(positions=np.full(6, target), ref=self.ref), now)
                self.sent[self.ref] = now
            except DriverUnavailable as exc:
                errors.append(exc)
        state = None
        try:
            state = self.driver.read(now)
        except (DriverUnavailable, DriverProcessError) as exc:
            errors.append(exc)
        time.sleep(0.002)
        return state, errors

    def run(self, seconds: float, target: float | None = None) -> RobotState:
        end = time.monotonic() + seconds
        state = None
        while time.monotonic() < end:
            state, errors = self.tick(target)
            assert not errors, errors
        assert state is not None
        return state

    def until(
        self,
        condition: Callable[[RobotState | None, list[Exception]], bool],
        timeout: float,
        target: float | None = None,
    ) -> float:
        """Seconds until ``condition(state, errors)`` holds; fails after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            state, errors = self.tick(target)
            if condition(state, errors):
                return time.monotonic() - start
        raise AssertionError(f"condition not met within {timeout} s")


# -- against the reference server ----------------------------------------------------------------


def test_manifest_is_fetched_from_the_driver_process(server: Server) -> None:
    driver = make_driver(server.endpoint)
    try:
        assert driver.manifest.to_dict() == SimArm(SimArmConfig()).manifest.to_dict()
        assert not driver.is_connected
    finally:
        driver.close()


def test_without_endpoint_the_manifest_is_a_placeholder_and_drivers_lists_it() -> None:
    started = time.monotonic()
    manifest = BridgeDriver().manifest
    assert "placeholder" in manifest.kind and "driver process" in manifest.kind
    assert time.monotonic() - started < 0.1  # no I/O
    assert load_driver_class("bridge") is BridgeDriver
    listed = {d["name"]: d for d in describe_drivers()["drivers"]}
    assert "placeholder" in listed["bridge"]["manifest"]["kind"]
    assert "endpoint" in {o["name"] for o in listed["bridge"]["config"]}


def test_no_driver_process_is_reported_after_the_startup_timeout(endpoint: str) -> None:
    driver = BridgeDriver(BridgeConfig(endpoint=endpoint, startup_timeout_ms=300))
    started = time.monotonic()
    with pytest.raises(
        DriverUnavailable, match=r"within 300 ms \(no answer yet\).*python -m robots.bridge serve"
    ):
        _ = driver.manifest
    assert 0.25 < time.monotonic() - started < 2
    driver.close()


def test_commands_move_the_robot_and_state_streams(server: Server) -> None:
    driver = make_driver(server.endpoint)
    try:
        driver.connect(time.monotonic_ns())
        ticker = Ticker(driver)
        first = ticker.run(0.05)
        np.testing.assert_allclose(first.joints.positions, 0.0)  # type: ignore[union-attr]
        # The state streams with no command: each read brings the wrist wrench samples the
        # driver process pushed since the previous read, with their own times.
        times: list[int] = []
        for _ in range(30):
            state, errors = ticker.tick()
            assert not errors and state is not None
            times.extend(w.time_ns for w in state.wrenches)
        assert len(times) >= 15 and times == sorted(times) and len(set(times)) == len(times)
        moved = ticker.run(0.6, target=0.5)
        np.testing.assert_allclose(moved.joints.positions, 0.5, atol=0.01)  # type: ignore[union-attr]
        ref, at = moved.actuated_ref, moved.actuated_ns
        assert ref is not None and at is not None and ref in ticker.sent
        assert ticker.sent[ref] + 2_000_000 <= at <= moved.time_ns  # sim-arm's 2 ms delay
        assert driver.status()["malformed"] == 0
    finally:
        driver.close()


def test_killed_server_is_reported_and_a_restarted_one_is_picked_up(server: Server) -> None:
    driver = make_driver(server.endpoint)
    try:
        driver.connect(time.monotonic_ns())
        ticker = Ticker(driver)
        ticker.run(0.2, target=0.3)
        server.kill()
        killed = time.monotonic()
        seen: dict[str, float] = {}

        def both_report(state: RobotState | None, errors: list[Exception]) -> bool:
            for exc in errors:
                assert isinstance(exc, DriverUnavailable), exc
                what = "read" if "unavailable" in str(exc) else "apply"
                seen.setdefault(what, time.monotonic() - killed)
            return len(seen) == 2

        ticker.until(both_report, timeout=2.0, target=0.3)
        assert seen["apply"] < LIVENESS_MS / 1e3 + 0.1, seen
        assert seen["read"] < LIVENESS_MS / 1e3 + 0.1, seen
        with pytest.raises(DriverUnavailable):
            driver.hold(time.monotonic_ns())
        server.start()
        recovered = ticker.until(lambda state, errors: not errors, timeout=10.0, target=-0.3)
        assert recovered < 5
        moved = ticker.run(0.6, target=-0.3)
        np.testing.assert_allclose(moved.joints.positions, -0.3, atol=0.01)  # type: ignore[union-attr]
        status = driver.status()
        assert status["link"] == "live" and status["losses"] == 1 and status["recoveries"] == 1
    finally:
        driver.close()


def test_conformance_kit_passes_against_the_server(server: Server) -> None:
    report = check_driver(BridgeDriver, BridgeConfig(endpoint=server.endpoint))
    assert report.ok, str(report)


def test_second_endpoint_is_refused_while_the_first_is_in_control(server: Server) -> None:
    first = make_driver(server.endpoint)
    second = make_driver(server.endpoint, startup_timeout_ms=300)
    try:
        first.connect(time.monotonic_ns())
        with pytest.raises(DriverUnavailable, match="busy"):
            second.connect(time.monotonic_ns())
        first.close()  # says goodbye: the driver process forgets it at once
        second.connect(time.monotonic_ns())
        assert second.read(time.monotonic_ns()).joints is not None
    finally:
        first.close()
        second.close()


def test_server_stops_on_sigterm_and_removes_its_socket_file(server: Server) -> None:
    path = Path(server.endpoint.removeprefix("ipc://"))
    driver = make_driver(server.endpoint)
    _ = driver.manifest  # it is up
    driver.close()
    assert path.exists()
    err = server.terminate()
    assert server.process is not None and server.process.returncode == 0, err
    assert "serving sim-arm" in err
    assert not path.exists()


# -- against a fake driver process ---------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class FakeDriverProcess:
    """A driver process written by hand on a raw ROUTER, in a thread: answers hello and connect
    like the protocol says, streams a fixed state, and sends whatever is queued in `inject`."""

    def __init__(self, endpoint: str) -> None:
        self.manifest = SimArm(SimArmConfig()).manifest
        self.endpoint = endpoint
        self.inject: list[list[bytes]] = []
        self.received: list[str] = []
        self.positions = [0.1] * 6
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeDriverProcess:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def send_raw(self, *messages: list[bytes]) -> None:
        with self._lock:
            self.inject.extend(messages)

    def _state(self) -> dict[str, Any]:
        return {
            "time_ns": time.monotonic_ns(),
            "joints": {"positions": self.positions, "gripper": 0.0},
            "wrenches": [],
        }

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.bind(self.endpoint)
        self._ready.set()
        peer = None
        try:
            while not self._stop.is_set():
                if router.poll(2):
                    identity, mtype, body = router.recv_multipart()
                    request = json.loads(body)
                    self.received.append(mtype.decode())
                    if mtype == b"hello":
                        reply = {
                            "id": request["id"],
                            "protocol": PROTOCOL_VERSION,
                            "manifest": self.manifest.to_dict(),
                            "reports_actuation": False,
                        }
                        router.send_multipart([identity, b"manifest", json.dumps(reply).encode()])
                    elif mtype == b"connect":
                        peer = identity
                        reply = {"id": request["id"], "state": self._state()}
                        router.send_multipart([identity, b"connected", json.dumps(reply).encode()])
                if peer is not None:
                    with self._lock:
                        raw, self.inject = self.inject, []
                    for frames in raw:
                        router.send_multipart([peer, *frames])
                    router.send_multipart([peer, b"state", json.dumps(self._state()).encode()])
        finally:
            router.close(0)
            context.term()
            Path(self.endpoint.removeprefix("ipc://")).unlink(missing_ok=True)


MALFORMED = [
    [b"state", b"{not json"],
    [b"state"],
    [b"state", b"{}", b"{}"],
    [b"bogus", b"{}"],
    [b"apply", b"{}"],  # a type only the endpoint sends
    [b"state", b"[1, 2]"],
    [b"state", b'{"time_ns": 1, "joints": {"positions": [NaN, 0, 0, 0, 0, 0], "gripper": 0}}'],
    [b"state", b'{"time_ns": 1, "joints": {"positions": [1e999, 0, 0, 0, 0, 0], "gripper": 0}}'],
    [b"state", b'{"time_ns": 1, "joints": {"positions": [0, 0, 0], "gripper": 0}}'],
    [b"state", b'{"time_ns": 1, "joints": {"positions": [0, 0, 0, 0, 0, "0"], "gripper": 0}}'],
    [b"state", b'{"time_ns": 1, "joints": {"positions": [0, 0, 0, 0, 0, 0]}}'],  # no gripper
    [b"state", b'{"time_ns": 1.5, "joints": {"positions": [0, 0, 0, 0, 0, 0], "gripper": 0}}'],
    [b"state", b'{"time_ns": 1, "joints": null}'],
    [b"manifest", b'{"id": 1, "protocol": 1, "manifest": {"robot_id": ""}}'],  # stale anyway
    [b"\xff\xfe", b"\xff"],
    [b"state", b"[" * 100_000],
]


def test_malformed_messages_from_the_driver_process_are_counted_and_ignored(endpoint: str) -> None:
    with FakeDriverProcess(endpoint) as fake:
        driver = make_driver(endpoint)
        try:
            driver.connect(time.monotonic_ns())
            fake.send_raw(*MALFORMED)
            ticker = Ticker(driver)
            ticker.until(
                lambda s, e: driver.status()["malformed"] >= len(MALFORMED) - 1, timeout=2.0
            )
            fake.positions = [0.2] * 6
            state = ticker.run(0.05)  # reads never raised, and valid states still come through
            np.testing.assert_allclose(state.joints.positions, 0.2)  # type: ignore[union-attr]
            # the stale manifest reply is not malformed-checked (no request with that id)
            assert driver.status()["malformed"] == len(MALFORMED) - 1
            assert driver.status()["link"] == "live"
        finally:
            driver.close()
        wait_for(lambda: "close" in fake.received)
        assert fake.received[:2] == ["hello", "connect"]


class _BadManifest:
    def to_dict(self) -> dict[str, Any]:
        return {"robot_id": "x", "kind": "arm", "control_modes": ["joint_position"],
                "control_rate_hz": 500.0, "joints": []}  # fmt: skip


def test_a_manifest_the_endpoint_cannot_take_fails_the_start_with_the_reason(endpoint: str) -> None:
    with FakeDriverProcess(endpoint) as fake:
        fake.manifest = _BadManifest()  # type: ignore[assignment]
        driver = make_driver(endpoint, startup_timeout_ms=300)
        try:
            with pytest.raises(DriverUnavailable) as err:
                driver.manifest  # noqa: B018
        finally:
            driver.close()
    message = str(err.value)
    assert "its last message was malformed" in message, message
    assert "joint_position control needs at least one joint" in message
    assert "is it running?" not in message  # it is, and it answered


def test_actuation_is_reported_at_apply_when_the_driver_process_reports_none(endpoint: str) -> None:
    with FakeDriverProcess(endpoint) as fake:
        driver = make_driver(endpoint)
        try:
            driver.connect(time.monotonic_ns())
            assert driver.read(time.monotonic_ns()).actuated_ref is None
            now = time.monotonic_ns()
            driver.apply(JointCommand(positions=np.zeros(6), ref=7), now)
            state = driver.read(now + 1)
            assert (state.actuated_ref, state.actuated_ns) == (7, now)
        finally:
            driver.close()
        wait_for(lambda: "apply" in fake.received)


def test_error_messages_are_raised_by_the_next_read(endpoint: str) -> None:
    with FakeDriverProcess(endpoint) as fake:
        driver = make_driver(endpoint)
        try:
            driver.connect(time.monotonic_ns())
            error = {"code": "driver_error", "message": "servo 3 overheated", "op": "apply"}
            fake.send_raw([b"error", json.dumps(error).encode()])
            ticker = Ticker(driver)
            raised: list[Exception] = []

            def got_error(state: RobotState | None, errors: list[Exception]) -> bool:
                raised.extend(errors)
                return bool(raised)

            ticker.until(got_error, timeout=2.0)
            assert isinstance(raised[0], DriverProcessError)
            assert raised[0].code == "driver_error" and "servo 3 overheated" in str(raised[0])
            ticker.run(0.02)  # reported once; reads work again
        finally:
            driver.close()


def test_not_connected_error_makes_the_bridge_resync(endpoint: str) -> None:
    with FakeDriverProcess(endpoint) as fake:
        driver = make_driver(endpoint)
        try:
            driver.connect(time.monotonic_ns())
            error = {"code": "not_connected", "message": "send connect first", "op": "ping"}
            fake.send_raw([b"error", json.dumps(error).encode()])
            Ticker(driver).until(lambda s, e: driver.status()["recoveries"] == 1, timeout=2.0)
        finally:
            driver.close()
        wait_for(lambda: fake.received.count("connect") == 2)


# -- end to end with the real endpoint -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_robot_endpoint_drives_a_driver_process_end_to_end(server: Server, tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "robot.json"
    cli = [sys.executable, "-m", "telepresence"]
    keys = Keys(tmp_path / "keys")
    robot_args = [
        "robot", "--driver", "bridge", "--bridge", server.endpoint,
        "--listen", f"127.0.0.1:{port}", "--duration", "3", "--json", str(out),
        *keys.robot_args(),
    ]  # fmt: skip
    station_args = [
        "station", "--connect", f"127.0.0.1:{port + 1}", "--duration", "1", "--wait", "5",
        "--json", str(tmp_path / "station.json"), *keys.station_args(),
    ]  # fmt: skip
    robot = subprocess.Popen(
        [*cli, *robot_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        station = subprocess.run([*cli, *station_args], capture_output=True, text=True, timeout=30)
        stdout, stderr = robot.communicate(timeout=30)
    finally:
        if robot.poll() is None:
            robot.kill()
            robot.communicate()
    assert station.returncode == 0, station.stderr
    assert robot.returncode == 0, stderr
    assert "robot sim-arm-0 (bridge)" in stdout
    status = json.loads(out.read_text())
    sent = json.loads((tmp_path / "station.json").read_text())["station"]["commands_sent"]
    assert sent >= 250  # 1 s at 500 Hz, on a loaded machine
    assert status["counters"]["applied"] >= 0.7 * sent, (sent, status)
    assert status["driver_errors"] == 0
    assert status["mode"] == "stopped"
    # the device stage: the bridge hop plus sim-arm's 2 ms actuation delay, as the driver
    # process reports it
    assert "applied -> actuated" in station.stdout


def test_the_station_sees_the_robot_hold_while_its_driver_process_is_down(
    server: Server, tmp_path: Path
) -> None:
    port = _free_port()
    cli = [sys.executable, "-m", "telepresence"]
    keys = Keys(tmp_path / "keys")
    robot_json, station_json = tmp_path / "robot.json", tmp_path / "station.json"
    robot = subprocess.Popen(
        [*cli, "robot", "--driver", "bridge", "--bridge", server.endpoint,
         "--listen", f"127.0.0.1:{port}", "--duration", "8", "--json", str(robot_json),
         *keys.robot_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    station = subprocess.Popen(
        [*cli, "station", "--connect", f"127.0.0.1:{port + 1}", "--duration", "4", "--wait", "5",
         "--json", str(station_json), *keys.station_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)  # the station is commanding by now (it waits for the robot first)
        server.kill()
        time.sleep(0.5)
        server.start()
        _, st_err = station.communicate(timeout=30)
        robot.send_signal(signal.SIGINT)
        rb_out, rb_err = robot.communicate(timeout=30)
    finally:
        for p in (robot, station):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert station.returncode == 0, st_err
    modes = [c["mode"] for c in json.loads(station_json.read_text())["robot_modes"]]
    i = modes.index("holding")  # the robot said so while the driver process was down
    assert "active" in modes[:i] and "active" in modes[i:], modes
    assert "reports HOLDING although commands are being sent" in st_err
    assert "active again after" in st_err
    status = json.loads(robot_json.read_text())
    assert status["counters"]["dropped"] > 0  # commands that arrived while it was down
    assert status["driver"]["losses"] == 1 and status["driver"]["recoveries"] == 1, status
    assert status["driver"]["available"] and status["driver"]["problem"] in ("", None)
    assert "failed" in rb_err and "works again after" in rb_err
    assert "losses 1, recoveries 1" in rb_out  # in the summary it prints, too
