"""The ``telepresence`` command: demo, robot, station, drivers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from netsim.profiles import PROFILES
from netsim.units import parse_rate
from robots import plugins
from robots.exceptions import RobotsError
from telepresence import native, options
from telepresence.aio import LOOP_CHOICES, loop_factory
from telepresence.apps import data_address, run_station, serve_robot
from telepresence.control.client import ControlClient
from telepresence.control.keys import (
    generate_keypair,
    load_authorized_keys,
    load_keypair,
    load_public_key,
)
from telepresence.control.lease import ControlLease
from telepresence.control.server import ControlServer, ControlState
from telepresence.endpoint import EndpointConfig, RobotCore, SecureSessions
from telepresence.exceptions import (
    AccessRefused,
    ConfigError,
    ControlRefused,
    RobotUnreachable,
    TelepresenceError,
)
from telepresence.inputs import INPUT_GROUP, InputSource, RobotView
from telepresence.profiler import format_report
from telepresence.qos import Grant as QosGrant
from telepresence.qos import StreamSpec
from telepresence.security import SessionKeys
from telepresence.sender import DEFAULT_LINK_CAPACITY_BPS, station_specs
from telepresence.station import StationConfig, StationCore
from telepresence.udp import parse_hostport

__all__ = ["main"]

log = logging.getLogger("telepresence")

EPILOG_ROBOT = """examples:
  telepresence robot --driver sim-arm --listen 0.0.0.0:7000
  telepresence robot --driver sim-arm --driver-config actuation_delay_ms=5 --rate 1khz
"""
EPILOG_STATION = """examples:
  telepresence station --connect 192.0.2.10 --robot-key robot.key
  telepresence station --connect 192.0.2.10:7001 --robot-key robot.key --input-option amplitude=0.5
  telepresence station --connect 192.0.2.10 --robot-key robot.key --observe
  telepresence station --insecure --connect 127.0.0.1:7000     # an --insecure robot's UDP port
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop when installed (default), or the standard asyncio "
        "loop (drops most datagrams above ~50k/s)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="default: %(default)s",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        help="also write the result as JSON to FILE ('-' for stdout)",
    )


def _add_robot_timing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate",
        type=options.positive_rate,
        default=500.0,
        metavar="HZ",
        help="control loop rate (default: 500)",
    )
    p.add_argument(
        "--hold-after",
        type=options.duration,
        default=0.050,
        metavar="DURATION",
        help="no valid command for this long: the robot holds (default: 50ms)",
    )
    p.add_argument(
        "--stop-after",
        type=options.duration,
        default=0.500,
        metavar="DURATION",
        help="no valid command for this long: the robot stops (default: 500ms)",
    )
    p.add_argument(
        "--max-age",
        type=options.duration,
        default=0.050,
        metavar="DURATION",
        help="a command older than this when the control tick comes is stale and "
        "dropped (default: 50ms)",
    )
    p.add_argument(
        "--telemetry-rate",
        type=options.positive_rate,
        default=100.0,
        metavar="HZ",
        help="state and telemetry datagrams per second (default: 100)",
    )
    p.add_argument(
        "--no-align-ticks",
        dest="align_ticks",
        action="store_false",
        help="keep the control ticks' phase fixed; by default it follows the station's "
        "sending phase so a command waits ~0.2 ms for its tick, not up to a whole period",
    )
    p.add_argument(
        "--driver-config",
        action="append",
        metavar="KEY=VALUE",
        help="set a driver config field (repeatable); `telepresence drivers` lists "
        "each driver's fields",
    )


CONFIG_DIR = Path("~/.config/telepresence").expanduser()
INSECURE_WARNING = (
    "WARNING: --insecure: no operator authentication, no encryption, no control lease. Anyone "
    "who can reach this port can drive the robot. Use it for benchmarks only."
)


def _add_security(p: argparse.ArgumentParser, *, robot: bool) -> None:
    g = p.add_argument_group("security (on by default)")
    if robot:
        g.add_argument(
            "--key",
            type=Path,
            default=CONFIG_DIR / "robot.key_secret",
            help="the robot's secret key (default: %(default)s; make one with "
            "`telepresence keygen robot`)",
        )
        g.add_argument(
            "--authorized-keys",
            type=Path,
            default=CONFIG_DIR / "authorized_keys",
            help="operators allowed to connect: a directory of public .key files or "
            "a file of '<Z85 key> name' lines (default: %(default)s)",
        )
        g.add_argument(
            "--control",
            metavar="ENDPOINT",
            help="control-plane ZeroMQ endpoint to bind, tcp://HOST:PORT or "
            "ipc://PATH (default: tcp://<listen host>:<listen port + 1>)",
        )
        g.add_argument(
            "--link-capacity",
            default="100mbit",
            metavar="RATE",
            help="the link's capacity, each direction: stations' reservations are admitted "
            "against it and the robot paces what it sends to it (default: 100mbit)",
        )
    else:
        g.add_argument(
            "--key",
            type=Path,
            default=CONFIG_DIR / "operator.key_secret",
            help="this operator's secret key (default: %(default)s; make one with "
            "`telepresence keygen operator`)",
        )
        g.add_argument(
            "--robot-key",
            metavar="KEY",
            help="the robot's public key: its .key file or the 40-character Z85 text",
        )
        g.add_argument(
            "--observe",
            action="store_true",
            help="open an observer session: telemetry without taking control",
        )
        g.add_argument(
            "--link-capacity",
            default="100mbit",
            metavar="RATE",
            help="the uplink's capacity: what the station paces its datagrams to; commands "
            "are policed to the robot's grant either way (default: 100mbit)",
        )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="no authentication or encryption (benchmarks only; prints a warning)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telepresence",
        description="Avatar teleoperation runtime: drive a remote robot over UDP and see where "
        "every microsecond of the loop goes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `telepresence demo`. Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a simulated arm and a station on loopback and print the latency table",
        description="Start a robot endpoint (sim-arm, or the --driver given) in a child process "
        "and a station with scripted input in this one, on loopback; drive the robot for "
        "--duration seconds and print the per-stage latency table (network / compute / device) "
        "and the counters.",
    )
    demo.add_argument(
        "--duration",
        type=options.seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to drive the robot (default: 5)",
    )
    demo.add_argument(
        "--profile",
        metavar="NAME",
        choices=sorted(PROFILES),
        help="route the demo through a netsim relay emulating this link: "
        + ", ".join(PROFILES)
        + " (default: plain loopback; `netsim profiles` describes them)",
    )
    demo.add_argument(
        "--distance-km",
        type=float,
        metavar="KM",
        help="path length for distance-based profiles (apn, fiber-internet; default 100)",
    )
    demo.add_argument(
        "--driver", default="sim-arm", help="driver plugin for the robot (default: sim-arm)"
    )
    demo.add_argument(
        "--insecure",
        action="store_true",
        help="run the demo without authentication and encryption (to compare)",
    )
    _add_robot_timing(demo)
    _add_common(demo)
    demo.set_defaults(func=cmd_demo, log_level_default="warning")

    robot = sub.add_parser(
        "robot",
        help="run a robot endpoint",
        epilog=EPILOG_ROBOT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a robot endpoint: receive commands over UDP, apply the freshest valid "
        "one every control tick, hold and then stop when commands stop, and send state and "
        "telemetry to the station in control. Stops on Ctrl-C or after --duration.",
    )
    robot.add_argument(
        "--driver",
        default="sim-arm",
        help="driver plugin name (default: sim-arm; see `telepresence drivers`)",
    )
    robot.add_argument(
        "--bridge",
        metavar="ENDPOINT",
        help="with --driver bridge: the driver process's ZeroMQ endpoint, e.g. "
        "ipc:///run/arm.sock (the same as --driver-config endpoint=ENDPOINT)",
    )
    where = robot.add_mutually_exclusive_group()
    where.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="UDP address to listen on (default: 0.0.0.0:7000); repeat it for one address per "
        "network path (multipath: the station sends every command on each)",
    )
    where.add_argument(
        "--listen-fd",
        type=int,
        metavar="FD",
        help="use an already bound UDP socket passed as file descriptor FD",
    )
    robot.add_argument(
        "--duration",
        type=options.seconds,
        metavar="SECONDS",
        help="stop after this long (default: run until interrupted)",
    )
    _add_robot_timing(robot)
    _add_security(robot, robot=True)
    _add_common(robot)
    robot.set_defaults(func=cmd_robot)

    station = sub.add_parser(
        "station",
        help="drive a robot endpoint from an input source",
        epilog=EPILOG_STATION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Connect to a robot endpoint over UDP, send commands from an input source at "
        "the control rate, collect telemetry and print the latency table and counters.",
    )
    station.add_argument(
        "--connect",
        required=True,
        metavar="ADDRESS",
        help="the robot: its control plane, HOST:PORT (TCP, default port 7001) or a ZeroMQ "
        "endpoint (tcp://..., ipc://...); with --insecure, its UDP data address HOST:PORT",
    )
    station.add_argument(
        "--input",
        default="script",
        help="input source plugin (default: script, a scripted trajectory)",
    )
    station.add_argument(
        "--input-option",
        action="append",
        metavar="KEY=VALUE",
        help="option for the input source (repeatable); script takes "
        "amplitude, period, speed, turn",
    )
    station.add_argument(
        "--rate",
        type=options.positive_rate,
        default=500.0,
        metavar="HZ",
        help="commands per second (default: 500)",
    )
    station.add_argument(
        "--duration",
        type=options.seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to drive (default: 10)",
    )
    station.add_argument(
        "--clock",
        choices=("estimate", "shared"),
        default="estimate",
        help="robot clock: 'estimate' its offset from the telemetry (default), "
        "or 'shared' when both run on one host",
    )
    station.add_argument(
        "--wait",
        type=options.seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the robot to answer (default: 5)",
    )
    _add_security(station, robot=False)
    _add_common(station)
    station.set_defaults(func=cmd_station)

    keygen = sub.add_parser(
        "keygen",
        help="make a CurveZMQ key pair for a robot or an operator",
        description="Write NAME.key (public) and NAME.key_secret (secret, mode 600) into --dir. "
        "Give a robot's public key to its operators (--robot-key) and put operators' public keys "
        "in the robot's --authorized-keys.",
    )
    keygen.add_argument("name", help="e.g. robot, operator, or a person's name")
    keygen.add_argument(
        "--dir",
        type=Path,
        default=CONFIG_DIR,
        help="where to write the files (default: %(default)s)",
    )
    keygen.set_defaults(func=cmd_keygen)

    drivers = sub.add_parser(
        "drivers",
        help="list installed driver plugins and their manifests",
        description="List the driver plugins installed under the entry-point group "
        "telepresence.robots, with their manifests and config fields; plugins that fail to load "
        "are listed with their error.",
    )
    drivers.add_argument("--json", action="store_true", help="print JSON instead of text")
    drivers.set_defaults(func=cmd_drivers)
    return parser


# -- helpers ------------------------------------------------------------------------------


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    text = json.dumps(data, indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
    else:
        path.write_text(text)


def _run(main: Callable[[asyncio.Event], Any], loop_kind: str) -> Any:
    """Run `main(stop)` on the chosen loop; SIGINT/SIGTERM set `stop`."""
    factory, name = loop_factory(loop_kind)

    async def wrapper() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    log.debug("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(wrapper())


def _endpoint_config(args: argparse.Namespace) -> EndpointConfig:
    return EndpointConfig(
        control_rate_hz=args.rate,
        hold_after_s=args.hold_after,
        stop_after_s=args.stop_after,
        max_command_age_s=args.max_age,
        telemetry_rate_hz=args.telemetry_rate,
    )


def _input_factory(name: str, opts: dict[str, str]) -> Callable[[RobotView, int], InputSource]:
    cls = plugins.load(INPUT_GROUP, name)
    if not (isinstance(cls, type) and issubclass(cls, InputSource)):
        raise TelepresenceError(f"input plugin {name!r} is not an InputSource subclass")
    return lambda robot, now: cls(robot, opts, now)


def _format_counters(summary: dict[str, Any]) -> str:
    st = summary["station"]
    lines = [
        f"  station: sent {st['commands_sent']} commands + {st['heartbeats_sent']} heartbeats; "
        f"received {st['telemetry']} telemetry (lost {st['telemetry_lost']}), "
        f"malformed {st['malformed']}, duplicate {st['duplicate']}, stale {st['stale']}"
    ]
    robot = summary["robot"]
    if robot:
        lines.append("  robot:   " + ", ".join(f"{k} {v}" for k, v in robot.items()))
    aead = summary.get("aead")
    lines.append(
        f"  data plane: {f'secure ({aead})' if aead else 'INSECURE'}, hot path in "
        f"{native.label(summary.get('hot_path', ''))}"
    )
    loss = summary["uplink_loss"]
    if loss is not None:
        lines.append(f"  uplink loss (station -> robot): {loss * 100:.2f} %")
    if summary["robot_mode"]:
        changes = summary.get("robot_modes") or []
        shown = ", ".join(f"{c['mode']} at {c['at_s']:.1f} s" for c in changes[:10])
        more = f", and {len(changes) - 10} more changes" if len(changes) > 10 else ""
        lines.append(
            f"  robot mode: {shown}{more}; at the end: {summary['robot_mode']}"
            if len(changes) > 1
            else f"  robot mode at the end: {summary['robot_mode']}"
        )
    return "\n".join(lines)


def print_summary(title: str, summary: dict[str, Any]) -> None:
    print(title)
    print()
    print(format_report(summary["latency"]))
    print()
    print(_format_counters(summary))


# -- commands -----------------------------------------------------------------------------


def _control_server(
    args: argparse.Namespace, core_secure: bool, manifest: Any, listen: tuple[str, int] | None
) -> ControlServer:

    keypair = authorized = None
    if core_secure:
        if not args.key.exists():
            raise ConfigError(
                f"no robot key at {args.key}: make one with `telepresence keygen robot --dir "
                f"{args.key.parent}`, or run with --insecure (benchmarks only)"
            )
        keypair = load_keypair(args.key)
        if not args.authorized_keys.exists():
            raise ConfigError(
                f"no operator allowlist at {args.authorized_keys}: put operators' public .key "
                "files in that directory (or list their keys in that file), or pass "
                "--authorized-keys PATH"
            )
        authorized = load_authorized_keys(args.authorized_keys)
    endpoint = args.control
    if endpoint is None:
        host, port = listen or ("0.0.0.0", 7000)
        shown = "*" if host in ("0.0.0.0", "", "::") else (f"[{host}]" if ":" in host else host)
        endpoint = f"tcp://{shown}:{port + 1}"
    elif "://" not in endpoint:
        host, port = parse_hostport(endpoint, what="--control")
        endpoint = f"tcp://{f'[{host}]' if ':' in host else host}:{port}"
    state = ControlState(
        manifest=manifest.to_dict(),
        data_addresses=[],
        control_rate_hz=args.rate,
        secure=core_secure,
        link_capacity_bps=parse_rate(args.link_capacity, "--link-capacity"),
    )
    return ControlServer(
        state, bind=endpoint, keypair=keypair, authorized=authorized, clock=time.monotonic_ns
    )


def cmd_robot(args: argparse.Namespace) -> int:
    config = options.key_values(args.driver_config, option="--driver-config")
    if args.bridge is not None:
        if args.driver != "bridge":
            raise ConfigError(
                f"--bridge {args.bridge} is for --driver bridge (an out-of-process driver), "
                f"not --driver {args.driver}"
            )
        if config.get("endpoint", args.bridge) != args.bridge:
            raise ConfigError(
                f"--bridge {args.bridge} and --driver-config endpoint={config['endpoint']} "
                "disagree: give one of them"
            )
        config["endpoint"] = args.bridge
    driver = plugins.create_driver(args.driver, config)
    secure = None
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    else:
        secure = SecureSessions(ControlLease(2_000_000_000))
    sock = None
    local = None
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        local = parse_hostport((args.listen or ["0.0.0.0:7000"])[0], what="--listen")
    more_paths = [parse_hostport(a, what="--listen") for a in (args.listen or [])[1:]]
    listen = local if sock is None else sock.getsockname()[:2]
    control = None
    if not args.insecure:
        control = _control_server(args, True, driver.manifest, listen)
        secure.lease = control.state.lease  # type: ignore[union-attr]
    core = RobotCore(driver, _endpoint_config(args), clock=time.monotonic_ns, secure=secure)

    async def main(stop: asyncio.Event) -> dict[str, Any]:
        if control is not None:  # SIGHUP: read the allowlist now (it is also followed on disk)
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, control.reload)
        return await serve_robot(
            core,
            local=local,
            sock=sock,
            duration=args.duration,
            stop=stop,
            align_ticks=args.align_ticks,
            control=control,
            more_paths=more_paths,
            link_capacity_bps=parse_rate(args.link_capacity, "--link-capacity"),
        )

    status = _run(main, args.loop)
    print(
        f"robot {core.manifest.robot_id} ({args.driver}) on {status['address']}: "
        f"mode {status['mode']}, {'secure' if secure else 'INSECURE'}, hot path in "
        f"{native.label(status['hot_path'])}"
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in status["counters"].items()))
    lat = status["tick_lateness"]
    if lat["ticks"]:
        print(
            f"  control ticks {lat['ticks']}, late by p50 {lat['p50_us']} µs, "
            f"p99 {lat['p99_us']} µs, max {lat['max_us']} µs; overruns {status['tick_overruns']}"
        )
    drv: dict[str, Any] = status.get("driver") or {}
    if status["driver_errors"] or drv.get("losses"):
        extra = {k: v for k, v in drv.items() if k in ("losses", "recoveries", "malformed")}
        down = "" if drv.get("available", True) else f"; unavailable ({drv['failed_call']})"
        print(
            f"  driver {drv.get('name')}: {status['driver_errors']} failed calls"
            + "".join(f", {k} {v}" for k, v in extra.items())
            + down
        )
    _write_json(args.json, status)
    return 0


def _control_endpoint(text: str) -> tuple[str, str]:
    """(ZeroMQ endpoint, host) of a robot's control plane given as HOST, HOST:PORT,
    [V6]:PORT, [V6], or a tcp:// / ipc:// URL."""
    if "://" in text:
        host = text.split("://", 1)[1].rpartition(":")[0].strip("[]")
        return text, ("127.0.0.1" if text.startswith("ipc://") else host)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "7001"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # a bare name, IPv4 address or unbracketed IPv6 address
        host, port = text, "7001"
    if not port.isdigit():
        raise ConfigError(f"--connect {text!r}: the port must be a number")
    shown = f"[{host}]" if ":" in host else host
    return f"tcp://{shown}:{int(port)}", host


async def _secure_station(
    connect: str,
    args: argparse.Namespace,
    make_input: Any,
    config: StationConfig,
    duration: float,
    stop: asyncio.Event,
) -> dict[str, Any]:
    if not args.key.exists():
        raise ConfigError(
            f"no operator key at {args.key}: make one with `telepresence keygen operator --dir "
            f"{args.key.parent}` and give its .key file to the robot's owner, or run with "
            "--insecure against an --insecure robot (benchmarks only)"
        )
    if not args.robot_key:
        raise ConfigError("--robot-key is required: the robot's public key (file or Z85 text)")
    endpoint, host = _control_endpoint(connect)
    client = ControlClient(
        endpoint,
        keypair=load_keypair(args.key),
        robot_public_key=load_public_key(args.robot_key),
        station=socket.gethostname(),
        role="observe" if args.observe else "control",
        clock=time.monotonic_ns,
    )
    try:
        welcome = await client.connect(timeout_s=getattr(args, "wait", 5.0))
        await client.sync_clock()
        grant = None
        if not args.observe:
            await client.take_lease()
            joints = len(welcome.manifest.get("joints", [])) or 6
            grant = await client.reserve(**_command_reservation(config, joints))
        client.on_bye = lambda bye: stop.set()  # the robot ended the session: so does the run
        keys = SessionKeys.derive(bytes.fromhex(welcome.secret), welcome.session)
        core = StationCore(
            config, make_input, clock=time.monotonic_ns, keys=keys, observe=args.observe
        )
        grants = []
        if grant is not None:  # the sender polices its command stream to the grant
            grants.append(
                QosGrant(
                    spec=StreamSpec.from_fields(
                        {
                            "stream": grant.stream,
                            "traffic_class": grant.traffic_class,
                            "rate_bps": grant.rate_bps,
                            "burst_bytes": grant.burst_bytes,
                            "max_packet_bytes": grant.max_packet_bytes,
                        }
                    ),
                    dscp=grant.dscp,
                )
            )
        if config.clock_offset_ns is None:
            core.clock_offset = client.clock_offset  # refined by telemetry exchanges too
        via = getattr(args, "data_via", None)  # the demo routes the data plane through a relay
        remote = via or [data_address(a, host) for a in welcome.data_addresses]
        summary = await run_station(
            core,
            remote,
            duration=duration,
            stop=stop,
            wait_for_robot_s=getattr(args, "wait", 5.0),
            grants=grants,
            link_capacity_bps=_link_capacity(args),
        )
        summary["control"] = {
            "endpoint": endpoint,
            "session": f"{welcome.session:08x}",
            "data_addresses": [
                f"{h}:{p}" for h, p in (remote if isinstance(remote, list) else [remote])
            ],
            "robot_id": welcome.manifest.get("robot_id"),
            "held_control": bool(client.lease and client.lease.you_hold),
            "ended_by_robot": None if client.ended is None else client.ended.reason,
            "reservation": None
            if grant is None
            else {
                "stream": grant.stream,
                "traffic_class": grant.traffic_class,
                "rate_bps": grant.rate_bps,
                "dscp": grant.dscp,
            },
        }
        return summary
    finally:
        await client.close()


def _command_reservation(config: StationConfig, joints: int) -> dict[str, Any]:
    """The command stream's reservation (`station_specs`): the largest joint command of the
    robot's joints, sealed, with IPv4/UDP headers, at the control rate, with 25 % margin."""
    spec = station_specs(
        joints=joints,
        control_rate_hz=config.control_rate_hz,
        heartbeat_rate_hz=config.heartbeat_rate_hz,
        secure=True,
    ).command
    return {
        "stream": spec.stream,
        "traffic_class": spec.traffic_class.label,
        "rate_bps": spec.rate_bps,
        "burst_bytes": spec.burst_bytes,
        "max_packet_bytes": spec.max_packet_bytes,
    }


def _link_capacity(args: argparse.Namespace) -> float:
    text = getattr(args, "link_capacity", None)
    return DEFAULT_LINK_CAPACITY_BPS if text is None else parse_rate(text, "--link-capacity")


def _station(
    args: argparse.Namespace, remote: str, clock_offset: int | None, duration: float
) -> dict[str, Any]:
    make_input = _input_factory(
        args.input, options.key_values(getattr(args, "input_option", None), option="--input-option")
    )
    config = StationConfig(control_rate_hz=args.rate, clock_offset_ns=clock_offset)
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
        core = StationCore(config, make_input, clock=time.monotonic_ns)
        address = [parse_hostport(r, what="--connect") for r in remote.split(",")]
        result: dict[str, Any] = _run(
            lambda stop: run_station(
                core,
                address,
                duration=duration,
                stop=stop,
                wait_for_robot_s=getattr(args, "wait", 5.0),
                link_capacity_bps=_link_capacity(args),
            ),
            args.loop,
        )
        return result
    secure_result: dict[str, Any] = _run(
        lambda stop: _secure_station(remote, args, make_input, config, duration, stop), args.loop
    )
    return secure_result


def cmd_station(args: argparse.Namespace) -> int:
    summary = _station(args, args.connect, 0 if args.clock == "shared" else None, args.duration)
    summary["robot_address"] = args.connect
    print_summary(f"station -> {args.connect}: {args.duration:g} s at {args.rate:g} Hz", summary)
    _write_json(args.json, summary)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    public, secret = generate_keypair(args.dir, args.name)
    key = load_public_key(str(public))
    print(f"wrote {public} (public) and {secret} (secret, keep it private)")
    print(f"public key: {key.decode()}")
    print(f"  a robot's key: its operators pass --robot-key {public}")
    print(f"  an operator's key: the robot's owner adds {public} to the robot's --authorized-keys")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from telepresence.demo import run_demo

    return run_demo(args, _station, print_summary, _write_json)


def cmd_drivers(args: argparse.Namespace) -> int:
    data = plugins.describe_drivers()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not data["drivers"]:
        print("no driver plugins installed (entry-point group telepresence.robots)")
    for d in data["drivers"]:
        m = d["manifest"]
        dist = f"{d['distribution']} {d['version'] or ''}".strip() if d["distribution"] else "?"
        print(f"{d['name']}  ({d['entry_point']}, from {dist})")
        print(
            f"  robot {m['robot_id']}: {m['kind']}, modes {', '.join(m['control_modes'])}, "
            f"{len(m['joints'])} joints, control rate {m['control_rate_hz']:g} Hz"
        )
        if m["sensors"]:
            print("  sensors: " + ", ".join(f"{s['name']} ({s['kind']})" for s in m["sensors"]))
        for f in d["config"]:
            print(f"  --driver-config {f['name']}={f['default']}  ({f['type']}) {f['doc']}")
    for e in data["errors"]:
        print(f"{e['name']}  FAILED TO LOAD ({e['entry_point']}): {e['error']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "info")
    if getattr(args, "log_level_default", None) and "--log-level" not in (argv or sys.argv):
        level = args.log_level_default
    _setup_logging(level)
    try:
        return int(args.func(args))
    except (TelepresenceError, RobotsError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"telepresence {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RobotUnreachable | AccessRefused | ControlRefused) else 2
    except KeyboardInterrupt:
        return 130
