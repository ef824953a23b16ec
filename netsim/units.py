"""Parsing of link parameters as people write them: ``10ms``, ``20mbit``, ``64kB``, ``1%``."""

from __future__ import annotations

import re

__all__ = ["parse_bytes_or_packets", "parse_percent", "parse_rate", "parse_time"]

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_RATE_UNITS = {
    "bit": 1.0, "bps": 1.0, "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
    "gbit": 1e9, "gbps": 1e9,
}  # fmt: skip
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def _split(text: str, what: str) -> tuple[float, str]:
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([a-zA-Zµ%]*)\s*", text)
    if not m:
        raise ValueError(f"{what} {text!r} is not a number with a unit")
    return float(m.group(1)), m.group(2)


def parse_time(text: str, what: str = "time") -> float:
    """``10ms`` -> 0.01 (seconds). A unit is required (ns, us, ms, s, min)."""
    value, unit = _split(text, what)
    if unit not in _TIME_UNITS:
        raise ValueError(
            f"{what} {text!r} needs a time unit: one of {', '.join(_TIME_UNITS)} (e.g. 10ms)"
        )
    return value * _TIME_UNITS[unit]


def parse_rate(text: str, what: str = "rate") -> float:
    """``20mbit`` -> 20e6 (bits per second), as tc writes rates (bit, kbit, mbit, gbit)."""
    value, unit = _split(text, what)
    unit = unit.lower()
    if unit not in _RATE_UNITS:
        raise ValueError(
            f"{what} {text!r} needs a rate unit: one of {', '.join(_RATE_UNITS)} (e.g. 20mbit)"
        )
    rate = value * _RATE_UNITS[unit]
    if rate <= 0:
        raise ValueError(f"{what} must be more than 0, got {text!r}")
    return rate


def parse_bytes_or_packets(text: str, what: str = "queue") -> tuple[int | None, int | None]:
    """``64kB`` -> (64000, None); ``100p`` -> (None, 100). Returns (bytes, packets)."""
    value, unit = _split(text, what)
    if unit in ("p", "pkt", "packets"):
        if value < 1 or value != int(value):
            raise ValueError(f"{what} {text!r}: a packet count must be a whole number >= 1")
        return None, int(value)
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"{what} {text!r} needs a unit: B, kB, KiB, MB, MiB for bytes or p for packets"
        )
    size = int(value * factor)
    if size < 1:
        raise ValueError(f"{what} {text!r} must be at least one byte")
    return size, None


def parse_percent(text: str, what: str = "probability") -> float:
    """``1%`` -> 0.01; a bare number is a fraction (``0.01``)."""
    value, unit = _split(text, what)
    if unit == "%":
        value /= 100
    elif unit:
        raise ValueError(f"{what} {text!r}: write a percentage (1%) or a fraction (0.01)")
    if not 0 <= value <= 1:
        raise ValueError(f"{what} {text!r} must be within 0-100 %")
    return value
