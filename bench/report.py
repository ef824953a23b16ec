"""Print the numbers the benchmarks stored in ``extra_info`` as Markdown tables.

    python -m pytest bench --benchmark-json out.json
    python bench/report.py out.json [more.json ...]

With several files (several runs), each table has one row per run, so their spread shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _p(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    keys = [k for k in ("p50_us", "p99_us", "p99_9_us") if k in d] or ["p50_us", "p99_us"]
    return " / ".join(f"{d[k]:g}" if d.get(k) is not None else "-" for k in keys)


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _by_test(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for b in run["benchmarks"]:
            found.setdefault(b["name"], []).append(b["extra_info"])
    return found


def report(runs: list[dict[str, Any]]) -> str:
    tests = _by_test(runs)
    out: list[str] = []
    rt = tests.get("test_command_round_trip_vs_bare_uvloop_echo", [])
    if rt:
        out.append("Round trip, µs p50 / p99 / p99.9 (ratios: median over block pairs)\n")
        rows = [
            [str(i + 1), _p(e["bare_uvloop_echo"]), _p(e["runtime"]),
             f"{e['block_median_ratio']['p50']:.2f}", f"{e['block_median_ratio']['p99']:.2f}",
             f"{e['pooled_ratio']['p99_9']:.2f}"]
            for i, e in enumerate(rt)
        ]  # fmt: skip
        out.append(_table(["run", "bare", "runtime", "p50 x", "p99 x", "p99.9 x (pooled)"], rows))
    cr = tests.get("test_sustained_1khz_control_without_loss", [])
    if cr:
        out.append("\n1 kHz for 10 s (lateness and jitter µs p50 / p99 / p99.9; robot p50 / p99)\n")
        rows = [
            [str(i + 1), f"{e['commands_sent']}", f"{e['commands_per_second']:g}",
             f"{e['lost']}", f"{e['superseded']}", f"{e['applied_ratio']:.3f}",
             _p(e["station_tick_lateness"]), _p(e["robot_tick_lateness"]),
             _p(e["station_send_interval_jitter"]), _p(e["hand_to_actuator"]),
             _p(e["hand_to_actuator_network_plus_compute"]),
             _p(e["latency_stages"]["control_wait"]),
             f"{e['naive_sleep_sender']['per_second']:g}",
             _p(e["naive_sleep_sender"]["tick_lateness"]),
             _p(e["naive_sleep_sender"]["send_interval_jitter"])]
            for i, e in enumerate(cr)
        ]  # fmt: skip
        head = ["run", "cmds", "cmds/s", "lost", "superseded", "applied", "station late",
                "robot late", "station jitter", "hand→actuator", "net+compute",
                "control wait", "naive/s", "naive late",
                "naive jitter"]  # fmt: skip
        out.append(_table(head, rows))
    codec = {k: v for k, v in tests.items() if k.startswith("test_codec_vs_header_struct_floor")}
    if codec:
        out.append("\nCodec encode+decode, µs/op p50 / p99 / p99.9\n")
        rows = []
        for _name, infos in sorted(codec.items()):
            for i, e in enumerate(infos):
                rows.append([e["message"], str(i + 1), _p(e["header_struct_floor"]),
                             _p(e["encode_decode"]), f"{e['block_median_ratio']['p50']:.1f}",
                             f"{e['target']['p50']:g}"])  # fmt: skip
        out.append(_table(["message", "run", "header floor", "encode+decode", "p50 x", "target"],
                          rows))  # fmt: skip
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(report([json.loads(Path(a).read_text()) for a in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
