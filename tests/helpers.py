"""Shared test helpers: a hand-driven clock and a driver that records what it is asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from robots.api import (
    Command,
    ControlMode,
    Driver,
    GripperSpec,
    JointCommand,
    JointSpec,
    JointState,
    Manifest,
    RobotState,
)

MS = 1_000_000


class HandClock:
    """Monotonic ns clock moved by hand; each call may advance by `step` (to make stamps differ)."""

    def __init__(self, start: int = 1_000_000_000, step: int = 0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now

    def advance(self, ns: int) -> int:
        self.now += ns
        return self.now


class RecordingDriver(Driver):
    """Two joints in [-1, 1] and a gripper; remembers every call; actuation after `delay_ns`."""

    reports_actuation = True

    def __init__(self, delay_ns: int = 0, fail_apply: bool = False) -> None:
        super().__init__()
        self.gone = False
        """Set True: every call but `close` raises, as a driver whose device went away."""
        self.fail_read = False
        self.calls: list[tuple[str, int]] = []
        self.applied: list[Command] = []
        self.delay_ns = delay_ns
        self.fail_apply = fail_apply
        self.connected = False
        self.positions = np.zeros(2)
        self._pending: list[tuple[int, int]] = []
        self._actuated: tuple[int, int] | None = None

    @property
    def manifest(self) -> Manifest:
        return Manifest(
            robot_id="rec-0",
            kind="arm",
            control_modes=(ControlMode.JOINT_POSITION,),
            control_rate_hz=500,
            joints=(
                JointSpec(name="a", lower=-1, upper=1, max_velocity=2),
                JointSpec(name="b", lower=-1, upper=1, max_velocity=2),
            ),
            gripper=GripperSpec(),
        )

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, now_ns: int) -> None:
        self.calls.append(("connect", now_ns))
        self.connected = True

    def _check(self) -> None:
        if self.gone:
            raise ConnectionError("device gone")

    def apply(self, command: Command, now_ns: int) -> None:
        self.calls.append(("apply", now_ns))
        self._check()
        if self.fail_apply:
            raise RuntimeError("bus error")
        assert isinstance(command, JointCommand)
        self.applied.append(command)
        self.positions = np.array(command.positions)
        self._pending.append((command.ref, now_ns + self.delay_ns))

    def read(self, now_ns: int) -> RobotState:
        self._check()
        if self.fail_read:
            raise OSError("sensor bus timeout")
        while self._pending and self._pending[0][1] <= now_ns:
            self._actuated = self._pending.pop(0)
        ref, at = self._actuated if self._actuated else (None, None)
        return RobotState(
            time_ns=now_ns,
            joints=JointState(positions=self.positions.copy(), gripper=0.5),
            actuated_ref=ref,
            actuated_ns=at,
        )

    def hold(self, now_ns: int) -> None:
        self.calls.append(("hold", now_ns))
        self._check()

    def stop(self, now_ns: int) -> None:
        self.calls.append(("stop", now_ns))
        self._check()

    def close(self) -> None:
        self.calls.append(("close", 0))
        self.connected = False

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def joint_command(*positions: float, gripper: float | None = None, **kw: Any) -> JointCommand:
    return JointCommand(positions=np.array(positions, dtype=np.float64), gripper=gripper, **kw)


class Keys:
    """A robot key pair and one allowed operator, in `directory`, with the CLI arguments."""

    def __init__(self, directory: Any) -> None:
        import shutil
        from pathlib import Path

        from telepresence.control.keys import generate_keypair

        d = Path(directory)
        _, self.robot_secret = generate_keypair(d, "robot")
        self.robot_public = d / "robot.key"
        self.operator_public, self.operator_secret = generate_keypair(d / "alice", "alice")
        self.allowlist = d / "operators"  # public keys only, as a robot's owner keeps it
        self.allowlist.mkdir()
        shutil.copy(self.operator_public, self.allowlist)

    def add_operator(self, name: str) -> Any:
        """Another allowed operator: a key pair of their own, the public key copied into the
        allowlist; returns their secret key file."""
        import shutil

        from telepresence.control.keys import generate_keypair

        public, secret = generate_keypair(self.allowlist.parent / name, name)
        shutil.copy(public, self.allowlist)
        return secret

    def robot_args(self) -> list[str]:
        return ["--key", str(self.robot_secret), "--authorized-keys", str(self.allowlist)]

    def station_args(self) -> list[str]:
        return ["--key", str(self.operator_secret), "--robot-key", str(self.robot_public)]


def fix_length(data: bytearray) -> None:
    """Make a datagram header's body length agree with the datagram (u16 at offset 12), to
    get a mutated datagram past the length check into the body."""
    import struct

    if len(data) >= 32 and len(data) - 32 <= 0xFFFF:
        struct.pack_into("<H", data, 12, len(data) - 32)


def mutate(draw: Any, data: bytearray) -> bytes:
    """1 to 4 random mutations (flip, replace, truncate, extend, insert, delete), each followed
    at random by `fix_length`; `draw` is a hypothesis `st.composite` draw function."""
    from hypothesis import strategies as st

    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "replace", "truncate", "extend", "insert", "delete"]))
        if op in ("flip", "replace", "delete") and not data:
            continue
        if op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "replace":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x04, 0x08, 0x7F, 0x80, 0xFF]))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=24))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 8))]
        if draw(st.booleans()):
            fix_length(data)
    return bytes(data)


def control_server(robot_secret: Any, allowlist: Any, tmp_path: Any, **kw: Any) -> Any:
    """A secure `ControlServer` on an ipc endpoint in `tmp_path`, for robot "r1" (500 Hz,
    10 Mbit/s), with the robot's key file and an allowlist path; `kw` go to the server."""
    import time

    from telepresence.control.keys import load_authorized_keys, load_keypair
    from telepresence.control.server import ControlServer, ControlState

    state = ControlState(
        manifest={"robot_id": "r1"},
        data_addresses=["127.0.0.1:7000"],
        control_rate_hz=500,
        secure=True,
        link_capacity_bps=10e6,
    )
    return ControlServer(
        state,
        bind=f"ipc://{tmp_path / 'control.sock'}",
        keypair=load_keypair(robot_secret),
        authorized=load_authorized_keys(allowlist),
        clock=time.monotonic_ns,
        **kw,
    )
