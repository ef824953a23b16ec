"""Field checks shared by the QoS configs: errors name the field and the allowed range."""

from __future__ import annotations

from telepresence.exceptions import ConfigError


def whole(name: str, value: object, low: int, high: int, unit: str) -> int:
    """`value` as an int within low..high (an integral float is accepted), else ConfigError."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number of {unit}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be within {low}..{high} {unit}, got {value}")
    return value
