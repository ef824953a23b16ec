"""`telepresence demo`: a simulated robot and a station on loopback, nothing else to start.

The robot endpoint runs as a child process (`telepresence robot`) on a UDP socket this process
binds and hands over, so there is no port race; the station runs here, drives the robot with
the scripted input for the requested time, and prints the latency table.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    for pair in args.driver_config or []:
        cmd += ["--driver-config", pair]
    return cmd


def run_demo(
    args: argparse.Namespace,
    station: Callable[..., dict[str, Any]],
    print_summary: Callable[[str, dict[str, Any]], None],
    write_json: Callable[[Path | None, dict[str, Any]], None],
) -> int:
    """Run the demo; return the exit status."""
    args.input, args.input_option, args.wait = "script", None, 10.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="telepresence-demo-") as tmp:
        status_file = Path(tmp) / "robot.json"
        child = subprocess.Popen(
            _robot_command(args, sock.fileno(), status_file),
            pass_fds=(sock.fileno(),),
            stdout=subprocess.DEVNULL,
        )
        sock.close()
        try:
            summary = station(args, ("127.0.0.1", port), 0, args.duration)
        except BaseException:
            child.kill()  # the station failed: the robot has nothing to finish
            child.wait()
            raise
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.returncode != 0:
            print(
                f"telepresence demo: the robot process exited with {child.returncode}",
                file=sys.stderr,
            )
            return 1
        summary["robot_endpoint"] = json.loads(status_file.read_text())
    title = (
        f"telepresence demo: {args.driver} on 127.0.0.1:{port} over loopback UDP, "
        f"{args.duration:g} s at {args.rate:g} Hz, telemetry {args.telemetry_rate:g} Hz"
    )
    print_summary(title, summary)
    lat = summary["robot_endpoint"]["tick_lateness"]
    if lat["ticks"]:
        print(
            f"  robot control ticks: {lat['ticks']}, late by p50 {lat['p50_us']} µs, "
            f"p99 {lat['p99_us']} µs"
        )
    write_json(args.json, summary)
    return 0
