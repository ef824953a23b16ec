"""`telepresence demo`: a simulated robot and a station on loopback, nothing else to start.

The robot endpoint runs as a child process (`telepresence robot`) on a UDP socket this process
binds and hands over, so there is no port race; the station runs here, drives the robot with
the scripted input for the requested time, and prints the latency table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telepresence.control.keys import generate_keypair

log = logging.getLogger(__name__)

__all__ = ["run_demo"]


def _robot_command(args: argparse.Namespace, fd: int, status_file: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "telepresence",
        "robot",
        "--driver",
        args.driver,
        "--listen-fd",
        str(fd),
        "--rate",
        repr(args.rate),
        "--hold-after",
        f"{args.hold_after!r}s",
        "--stop-after",
        f"{args.stop_after!r}s",
        "--max-age",
        f"{args.max_age!r}s",
        "--telemetry-rate",
        repr(args.telemetry_rate),
        "--loop",
        args.loop,
        "--log-level",
        "warning",
        "--json",
        str(status_file),
    ]
    if not args.align_ticks:
        cmd.append("--no-align-ticks")
    for pair in args.driver_config or []:
        cmd += ["--driver-config", pair]
    return cmd


def _relay_command(args: argparse.Namespace, fd: int, robot_port: int, stats: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "netsim",
        "relay",
        "--listen-fd",
        str(fd),
        "--to",
        f"127.0.0.1:{robot_port}",
        "--profile",
        args.profile,
        "--json",
        str(stats),
    ]
    if args.distance_km is not None:
        cmd += ["--distance-km", repr(args.distance_km)]
    return cmd


def _demo_keys(tmp: Path, args: argparse.Namespace, robot_cmd: list[str]) -> str:
    """Make a robot and an operator key pair for this run; return the control endpoint."""
    keys = tmp / "keys"
    _, robot_secret = generate_keypair(keys, "robot")
    operator_public, operator_secret = generate_keypair(keys / "operator", "demo-operator")
    allowlist = keys / "authorized"  # the operator's public key only, as an owner would copy it
    allowlist.mkdir()
    shutil.copy(operator_public, allowlist)
    control = f"ipc://{tmp / 'control.sock'}"
    robot_cmd += [
        "--key",
        str(robot_secret),
        "--authorized-keys",
        str(allowlist),
        "--control",
        control,
    ]
    args.key, args.robot_key = operator_secret, str(keys / "robot.key")
    return control


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _spawn(cmd: list[str], sock: socket.socket, *, quiet: bool) -> subprocess.Popen[bytes]:
    """Start a child on an already bound socket (no port race), then drop our copy."""
    child = subprocess.Popen(
        cmd,
        pass_fds=(sock.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    sock.close()
    return child


def _stop(child: subprocess.Popen[bytes], name: str) -> None:
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in 10 s; killing it", name)
        child.kill()
        child.wait()


def _print_link(summary: dict[str, Any]) -> None:
    for side in ("up", "down"):
        s = summary["link"][side]
        print(
            f"  link {side:<4}: sent {s['sent']}, delivered {s['delivered']}, lost {s['lost']}, "
            f"queue-dropped {s['queue_dropped']}; imposed delay p50 {s['delay_p50_us']} µs, "
            f"p99 {s['delay_p99_us']} µs"
        )


def run_demo(
    args: argparse.Namespace,
    station: Callable[..., dict[str, Any]],
    print_summary: Callable[[str, dict[str, Any]], None],
    write_json: Callable[[Path | None, dict[str, Any]], None],
) -> int:
    """Run the demo; return the exit status."""
    args.input, args.input_option, args.wait = "script", None, 10.0
    args.observe = False
    children: list[tuple[subprocess.Popen[bytes], str]] = []
    with tempfile.TemporaryDirectory(prefix="telepresence-demo-") as tmp:
        robot_status, relay_stats = Path(tmp) / "robot.json", Path(tmp) / "relay.json"
        robot_sock = _bound_socket()
        robot_port = target_port = robot_sock.getsockname()[1]
        robot_cmd = _robot_command(args, robot_sock.fileno(), robot_status)
        if args.insecure:
            robot_cmd.append("--insecure")
            connect = ""
        else:  # ephemeral keys: a secure session with nothing for the user to set up
            connect = _demo_keys(Path(tmp), args, robot_cmd)
        children.append((_spawn(robot_cmd, robot_sock, quiet=False), "robot"))
        if args.profile:
            relay_sock = _bound_socket()
            target_port = relay_sock.getsockname()[1]
            relay_cmd = _relay_command(args, relay_sock.fileno(), robot_port, relay_stats)
            children.append((_spawn(relay_cmd, relay_sock, quiet=True), "relay"))
        try:
            if args.insecure:
                summary = station(args, f"127.0.0.1:{target_port}", 0, args.duration)
            else:
                args.data_via = ("127.0.0.1", target_port) if args.profile else None
                summary = station(args, connect, 0, args.duration)
        except BaseException:
            for child, _ in children:  # the station failed: nothing to finish
                child.kill()
                child.wait()
            raise
        for child, name in children:
            _stop(child, name)
            if child.returncode != 0:
                print(
                    f"telepresence demo: the {name} process exited with {child.returncode}",
                    file=sys.stderr,
                )
                return 1
        summary["robot_endpoint"] = json.loads(robot_status.read_text())
        if args.profile:
            link = json.loads(relay_stats.read_text())
            summary["link"] = {"profile": args.profile, "distance_km": args.distance_km, **link}
    via = "over loopback UDP" + (", INSECURE" if args.insecure else ", sealed (secure session)")
    if args.profile:
        km = f" at {args.distance_km:g} km" if args.distance_km is not None else ""
        via = f"through an emulated '{args.profile}' link{km} (netsim relay)"
    print_summary(
        f"telepresence demo: {args.driver} on 127.0.0.1:{robot_port} {via}, "
        f"{args.duration:g} s at {args.rate:g} Hz, telemetry {args.telemetry_rate:g} Hz",
        summary,
    )
    lat = summary["robot_endpoint"]["tick_lateness"]
    if lat["ticks"]:
        print(
            f"  robot control ticks: {lat['ticks']}, late by p50 {lat['p50_us']} µs, "
            f"p99 {lat['p99_us']} µs"
        )
    if args.profile:
        _print_link(summary)
    write_json(args.json, summary)
    return 0
