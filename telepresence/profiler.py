"""Latency profile of the command path: where every microsecond goes (sans-IO statistics).

The station records, for each command the robot reports on, six timestamps: input sampled and
datagram sent (station clock), received, decoded, applied and actuated (robot clock). Raw stamps
are kept and converted with the final clock-offset estimate when the report is made. Each sample
splits exactly into stages, and the stages into three groups that add up to the total::

    compute  station: input -> send      robot: received -> decoded     robot: decoded -> applied
    network  uplink: send -> received
    device   robot: applied -> actuated
    total    input -> actuated (hand to actuator)

The telemetry's way back (robot send -> station receive) is reported on its own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["STAGES", "LatencyProfile", "Stage", "format_report"]

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True, slots=True)
class Stage:
    """One line of the latency table."""

    key: str
    group: str
    label: str


STAGES = (
    Stage("station", "compute", "station: input -> send"),
    Stage("uplink", "network", "uplink: station -> robot"),
    Stage("decode", "compute", "robot: received -> decoded"),
    Stage("control_wait", "compute", "robot: decoded -> applied (control tick)"),
    Stage("actuation", "device", "robot: applied -> actuated"),
)
GROUPS = ("network", "compute", "device")
_DOWNLINK = Stage("downlink", "network", "downlink: robot -> station (telemetry)")
_TOTAL = Stage("total", "total", "total: input -> actuated")

_COMMAND_COLUMNS = ("input", "sent", "received", "decoded", "applied", "actuated")


class _Table:
    """Growable int64 columns: append without a Python list per sample."""

    def __init__(self, columns: int, capacity: int = 4096) -> None:
        self.data = np.zeros((capacity, columns), dtype=np.int64)
        self.n = 0

    def append(self, *values: int) -> None:
        if self.n == self.data.shape[0]:
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n] = values
        self.n += 1

    @property
    def rows(self) -> npt.NDArray[np.int64]:
        return self.data[: self.n]


def _summary(values_ns: npt.NDArray[np.int64]) -> dict[str, Any]:
    if values_ns.size == 0:
        return {"samples": 0, "p50_us": None, "p90_us": None, "p99_us": None, "max_us": None}
    us = values_ns / 1e3
    p50, p90, p99 = np.percentile(us, PERCENTILES)
    return {
        "samples": int(us.size),
        "p50_us": round(float(p50), 1),
        "p90_us": round(float(p90), 1),
        "p99_us": round(float(p99), 1),
        "max_us": round(float(us.max()), 1),
    }


class LatencyProfile:
    """Collects per-command stage stamps and telemetry one-way times; reports percentiles."""

    def __init__(self) -> None:
        self._commands = _Table(len(_COMMAND_COLUMNS))
        self._downlink = _Table(2)

    def add_command(
        self,
        *,
        input_ns: int,
        sent_ns: int,
        received_ns: int,
        decoded_ns: int,
        applied_ns: int,
        actuated_ns: int,
    ) -> None:
        """One command's stamps: the first two on the station clock, the rest on the robot's."""
        self._commands.append(input_ns, sent_ns, received_ns, decoded_ns, applied_ns, actuated_ns)

    def add_downlink(self, robot_sent_ns: int, station_received_ns: int) -> None:
        """One telemetry datagram: sent (robot clock) and received (station clock)."""
        self._downlink.append(robot_sent_ns, station_received_ns)

    @property
    def command_samples(self) -> int:
        return self._commands.n

    def stage_samples(self, offset_ns: int) -> dict[str, npt.NDArray[np.int64]]:
        """Per-sample durations (ns) of every stage, group and the total, for an offset
        (robot clock minus station clock)."""
        c = self._commands.rows
        inp, sent, rcv, dec, app, act = (c[:, i] for i in range(len(_COMMAND_COLUMNS)))
        stages = {
            "station": sent - inp,
            "uplink": rcv - offset_ns - sent,
            "decode": dec - rcv,
            "control_wait": app - dec,
            "actuation": act - app,
        }
        groups = {
            g: sum((stages[s.key] for s in STAGES if s.group == g), np.zeros_like(inp))
            for g in GROUPS
        }
        d = self._downlink.rows
        return {
            **stages,
            **groups,
            "total": act - offset_ns - inp,
            "downlink": d[:, 1] + offset_ns - d[:, 0],
        }

    def report(self, offset_ns: int, uncertainty_ns: int | None = None) -> dict[str, Any]:
        """JSON-ready percentiles (µs) per stage, per group and for the total."""
        samples = self.stage_samples(offset_ns)
        return {
            "clock_offset_us": round(offset_ns / 1e3, 1),
            "clock_uncertainty_us": None
            if uncertainty_ns is None
            else round(uncertainty_ns / 1e3, 1),
            "stages": {
                s.key: {"group": s.group, "label": s.label, **_summary(samples[s.key])}
                for s in (*STAGES, _DOWNLINK)
            },
            "groups": {g: _summary(samples[g]) for g in GROUPS},
            "total": {"label": _TOTAL.label, **_summary(samples["total"])},
        }


def _row(label: str, group: str, s: dict[str, Any]) -> str:
    def cell(v: float | None) -> str:
        return f"{v:>9.1f}" if v is not None else f"{'-':>9}"

    return (
        f"  {label:<42} {group:<8}"
        + "".join(cell(s[k]) for k in ("p50_us", "p90_us", "p99_us", "max_us"))
        + f"{s['samples']:>9}"
    )


def format_report(report: dict[str, Any]) -> str:
    """The latency table as text (times in µs)."""
    head = f"  {'stage':<42} {'group':<8}" + "".join(
        f"{h:>9}" for h in ("p50", "p90", "p99", "max", "samples")
    )
    lines = [head, "  " + "-" * (len(head) - 2)]
    for key, stage in report["stages"].items():
        if key != "downlink":
            lines.append(_row(stage["label"], stage["group"], stage))
    lines.append("  " + "-" * (len(head) - 2))
    for group, s in report["groups"].items():
        lines.append(_row(f"{group} (sum of its stages)", group, s))
    lines.append(_row(report["total"]["label"], "", report["total"]))
    lines.append(
        _row(report["stages"]["downlink"]["label"], "network", report["stages"]["downlink"])
    )
    unc = report["clock_uncertainty_us"]
    lines.append(
        f"  times in µs; robot clock offset {report['clock_offset_us']:+.1f} µs"
        + ("" if unc is None else f" (± {unc:.1f} µs)")
    )
    return "\n".join(lines)
