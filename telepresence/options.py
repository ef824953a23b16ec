"""Parsing of command-line values: durations, rates, HOST:PORT, KEY=VALUE."""

from __future__ import annotations

import argparse
import re

__all__ = ["duration", "key_values", "positive_rate", "seconds"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def _parse(text: str, *, unit_required: bool) -> float:
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 50ms, 0.5s, 200us)")
    number, unit = float(m.group(1)), m.group(2)
    if not unit:
        if unit_required:
            raise argparse.ArgumentTypeError(
                f"{text!r} needs a unit: ns, us, ms, s or min (e.g. {text}ms)"
            )
        unit = "s"
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown unit {unit!r}; use one of {', '.join(_UNITS)}"
        )
    return number * _UNITS[unit]


def duration(text: str) -> float:
    """A duration with a unit (``50ms``), in seconds."""
    return _parse(text, unit_required=True)


def seconds(text: str) -> float:
    """A duration in seconds, unit optional (``5`` or ``5s`` or ``500ms``)."""
    value = _parse(text, unit_required=False)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return value


def positive_rate(text: str) -> float:
    """A rate in Hz (``500``, ``1khz``, ``500hz``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(hz|khz)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in Hz (e.g. 500 or 1khz)")
    value = float(m.group(1)) * (1000.0 if m.group(2) == "khz" else 1.0)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"rate must be more than 0 Hz, got {text!r}")
    return value


def key_values(pairs: list[str] | None, *, option: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` with an error naming the option."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"{option} takes KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
