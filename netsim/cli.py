"""The ``netsim`` command: ``netsim relay`` puts a UDP application behind an emulated link;
``netsim profiles`` lists the named links."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netsim.link import GilbertElliott, LinkConfig, Outage, load_mahimahi_trace
from netsim.profiles import PROFILES, get_profile
from netsim.relay import Relay, RelayConfig
from netsim.units import parse_bytes_or_packets, parse_percent, parse_rate, parse_time

__all__ = ["link_configs", "main"]

# option name -> (help, metavar)
_LINK_OPTIONS: dict[str, tuple[str, str | None]] = {
    "delay": ("fixed one-way delay, e.g. 10ms", "TIME"),
    "jitter": ("delay variation (std for normal/pareto, half-width for uniform), e.g. 2ms", "TIME"),
    "jitter-dist": ("jitter distribution: normal, uniform or pareto", "DIST"),
    "reorder": (
        "let jitter reorder packets; with a probability, also send that share of "
        "packets ahead without delay (e.g. --reorder 1%%)",
        "PROB",
    ),
    "loss": ("independent loss probability, e.g. 1%%", "PROB"),
    "loss-model": (
        "bursty loss, Gilbert-Elliott as netem: ge:P,R,1-H,1-K "
        "(R, 1-H, 1-K optional), e.g. ge:1%%,30%%",
        "MODEL",
    ),
    "dup": ("duplication probability, e.g. 0.1%%", "PROB"),
    "outage": ("periodic outage PERIOD:DURATION[:random], e.g. 15s:80ms", "SPEC"),
    "rate": ("bottleneck rate, e.g. 20mbit (adds serialisation delay and a queue)", "RATE"),
    "queue": ("queue limit in bytes (64kB) or packets (100p); default 1000p", "SIZE"),
    "qdisc": ("queue discipline: droptail, priority (strict, by DSCP class) or codel", "QDISC"),
    "trace": ("Mahimahi trace file: link capacity follows it (instead of --rate)", "FILE"),
}


def _add_link_options(p: argparse.ArgumentParser) -> None:
    both = p.add_argument_group("link (both directions; --up-X / --down-X for one direction)")
    for name, (help_text, metavar) in _LINK_OPTIONS.items():
        kw: dict[str, Any] = {"metavar": metavar, "default": None}
        if name == "reorder":
            kw.update(nargs="?", const="0%")
        both.add_argument(f"--{name}", help=help_text, **kw)
        for side in ("up", "down"):
            p.add_argument(f"--{side}-{name}", help=argparse.SUPPRESS, **kw)


def _parse_ge(text: str) -> GilbertElliott:
    if not text.startswith("ge:"):
        raise ValueError(f"--loss-model {text!r}: write ge:P,R,1-H,1-K (e.g. ge:1%,30%)")
    parts = [parse_percent(v, "--loss-model value") for v in text[3:].split(",") if v.strip()]
    if not 1 <= len(parts) <= 4:
        raise ValueError(f"--loss-model {text!r}: give 1 to 4 values P,R,1-H,1-K")
    p = parts[0]
    r = parts[1] if len(parts) > 1 else 1 - p
    loss_bad = parts[2] if len(parts) > 2 else 1.0
    loss_good = parts[3] if len(parts) > 3 else 0.0
    return GilbertElliott(p=p, r=r, loss_bad=loss_bad, loss_good=loss_good)


def _parse_outage(text: str) -> Outage:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "random"):
        raise ValueError(f"--outage {text!r}: write PERIOD:DURATION or PERIOD:DURATION:random")
    return Outage(
        period=parse_time(parts[0], "--outage period"),
        duration=parse_time(parts[1], "--outage duration"),
        random=len(parts) == 3,
    )


def _overrides(args: argparse.Namespace, side: str) -> dict[str, Any]:
    """Link fields set on the command line for one side (its own options win over both)."""
    out: dict[str, Any] = {}
    for name in _LINK_OPTIONS:
        attr = name.replace("-", "_")
        value = getattr(args, f"{side}_{attr}")
        if value is None:
            value = getattr(args, attr)
        if value is None:
            continue
        opt = f"--{name}"
        if name == "delay":
            out["delay"] = parse_time(value, opt)
        elif name == "jitter":
            out["jitter"] = parse_time(value, opt)
        elif name == "jitter-dist":
            out["jitter_dist"] = value
        elif name == "reorder":
            out["jitter_reorders"] = True
            out["reorder_prob"] = parse_percent(value, opt)
        elif name == "loss":
            out["loss"], out["loss_model"] = parse_percent(value, opt), None
        elif name == "loss-model":
            out["loss_model"], out["loss"] = _parse_ge(value), 0.0
        elif name == "dup":
            out["duplicate"] = parse_percent(value, opt)
        elif name == "outage":
            out["outage"] = _parse_outage(value)
        elif name == "rate":
            out["rate"], out["trace"] = parse_rate(value, opt), None
        elif name == "queue":
            out["queue_bytes"], out["queue_packets"] = parse_bytes_or_packets(value, opt)
        elif name == "qdisc":
            out["qdisc"] = value
        elif name == "trace":
            try:
                text = Path(value).read_text()
            except OSError as exc:
                raise ValueError(f"--trace {value}: {exc.strerror}") from exc
            out["trace"], out["rate"] = load_mahimahi_trace(text), None
    return out


def link_configs(args: argparse.Namespace) -> tuple[LinkConfig, LinkConfig]:
    """(up, down) from --profile/--distance-km and the explicit options, which win."""
    base_up, base_down = LinkConfig(), LinkConfig()
    if args.profile:
        base_up, base_down = get_profile(args.profile).links(args.distance_km)
    return (
        dataclasses.replace(base_up, **_overrides(args, "up")),
        dataclasses.replace(base_down, **_overrides(args, "down")),
    )


def _hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:g}ms" if seconds >= 1e-3 else f"{seconds * 1e6:g}us"


def _describe(link: LinkConfig) -> str:
    """One line a person can read, in the CLI's own units."""
    parts = []
    if link.delay:
        parts.append(f"delay {_fmt_time(link.delay)}")
    if link.jitter:
        parts.append(f"jitter {_fmt_time(link.jitter)} {link.jitter_dist}")
    if link.jitter_reorders or link.reorder_prob:
        parts.append(f"reorder {link.reorder_prob:.2%}")
    if link.loss:
        parts.append(f"loss {link.loss:.3%}")
    if link.loss_model:
        g = link.loss_model
        parts.append(
            f"loss ge:{g.p:.2%},{g.r:.2%},{g.loss_bad:.0%},{g.loss_good:.0%} "
            f"(mean {g.mean_loss:.2%})"
        )
    if link.duplicate:
        parts.append(f"dup {link.duplicate:.2%}")
    if link.outage:
        o = link.outage
        parts.append(
            f"outage {_fmt_time(o.duration)} every {o.period:g}s"
            + (" (random)" if o.random else "")
        )
    if link.rate:
        parts.append(f"rate {link.rate / 1e6:g}mbit")
    if link.trace:
        parts.append(f"trace of {len(link.trace)} opportunities over {link.trace[-1]} ms")
    if link.queue_bytes or link.queue_packets:
        q = f"{link.queue_bytes}B" if link.queue_bytes else f"{link.queue_packets}p"
        parts.append(f"queue {q}")
    if link.qdisc != "droptail":
        parts.append(f"qdisc {link.qdisc}")
    return ", ".join(parts) or "no impairment"


def _print_stats(stats: dict[str, Any]) -> None:
    print(f"netsim relay {stats['listen']} -> {stats['server']}: {stats['clients']} client(s)")
    head = ["sent", "delivered", "lost", "queue_dropped", "duplicated", "in_flight"]
    pct = ["delay_p50_us", "delay_p90_us", "delay_p99_us", "delay_p999_us"]
    print("  direction " + "".join(f"{h:>14}" for h in head + pct))
    for side in ("up", "down"):
        row = stats[side]
        cells = [f"{row[h]:>14}" for h in head] + [
            f"{row[h]:>14.1f}" if row[h] is not None else f"{'-':>14}" for h in pct
        ]
        print(f"  {side:<9} " + "".join(cells))


def cmd_relay(args: argparse.Namespace) -> int:
    up, down = link_configs(args)
    busy = parse_time(args.busy_poll, "--busy-poll") if args.busy_poll else 0.0
    config = RelayConfig(
        listen=("0.0.0.0", 0),
        server=_hostport(args.to, "--to"),
        up=up,
        down=down,
        seed=args.seed,
        busy_poll_ns=round(busy * 1e9),
    )
    sock = None
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        config.listen = _hostport(args.listen, "--listen")
    relay = Relay(config, sock=sock)
    host, port = relay.address
    print(f"relaying {host}:{port} -> {args.to}", file=sys.stderr)
    print(f"  up:   {_describe(up)}", file=sys.stderr)
    print(f"  down: {_describe(down)}", file=sys.stderr)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: relay.request_stop())
    if args.duration:
        threading.Timer(args.duration, relay.request_stop).start()
    # Nothing the relay allocates per datagram forms a reference cycle: keep the cyclic garbage
    # collector (pauses of up to milliseconds) off the forwarding path.
    gc.freeze()
    gc.disable()
    relay.serve_forever()
    gc.enable()
    stats = relay.stats()
    relay.stop()
    _print_stats(stats)
    if args.json:
        text = json.dumps(stats, indent=2) + "\n"
        sys.stdout.write(text) if str(args.json) == "-" else Path(args.json).write_text(text)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    rows = []
    for p in PROFILES.values():
        up, down = p.links(args.distance_km)
        rows.append(
            {
                "name": p.name,
                "summary": p.summary,
                "source": p.source,
                "distance_km": p.default_distance_km if p.uses_distance else None,
                "up": _describe(up),
                "down": _describe(down),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        dist = f" (at {args.distance_km or r['distance_km']:g} km)" if r["distance_km"] else ""
        print(f"{r['name']}{dist}: {r['summary']}")
        print(f"  up:     {r['up']}")
        if r["down"] != r["up"]:
            print(f"  down:   {r['down']}")
        print(f"  source: {r['source']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netsim",
        description="Userspace network emulation for UDP applications: delay, jitter, loss, "
        "rate limits, queues and traces, independently per direction.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    relay = sub.add_parser(
        "relay",
        help="relay UDP through an emulated link, both directions",
        description="Forward UDP datagrams from clients at --listen to the server at --to and "
        "back, through an emulated link per direction. Prints what it did on exit (Ctrl-C).",
        epilog="example: netsim relay --listen 127.0.0.1:9000 --to 127.0.0.1:7000 --profile lte",
    )
    where = relay.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="HOST:PORT", help="address clients send to")
    where.add_argument(
        "--listen-fd",
        type=int,
        metavar="FD",
        help="use an already bound UDP socket passed as file descriptor FD",
    )
    relay.add_argument("--to", required=True, metavar="HOST:PORT", help="the server's address")
    relay.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        metavar="NAME",
        help=f"named link ({', '.join(PROFILES)}); explicit options override it",
    )
    relay.add_argument(
        "--distance-km",
        type=float,
        metavar="KM",
        help="path length for distance-based profiles (apn, fiber-internet)",
    )
    relay.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    relay.add_argument(
        "--busy-poll",
        metavar="TIME",
        help="spin for this long before each datagram is due instead of sleeping (e.g. 1ms): "
        "sharper timing on machines with slow wake-ups, at the cost of CPU (default: learned)",
    )
    relay.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    )
    relay.add_argument("--json", metavar="FILE", help="also write the statistics as JSON")
    relay.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    _add_link_options(relay)
    relay.set_defaults(func=cmd_relay)

    profiles = sub.add_parser(
        "profiles",
        help="list the named link profiles",
        description="List the named link profiles with their parameters "
        "and the sources of their numbers.",
    )
    profiles.add_argument(
        "--distance-km",
        type=float,
        metavar="KM",
        help="show distance-based profiles at this distance",
    )
    profiles.add_argument("--json", action="store_true", help="print JSON")
    profiles.set_defaults(func=cmd_profiles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "warning").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"netsim {args.command}: error: {exc}", file=sys.stderr)
        return 2
