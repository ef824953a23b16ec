"""Errors raised by the `robots` package, arranged by whose fault they are.

::

    RobotsError
    ├── InvalidCommand         a command refused by value: NaN/inf, wrong size, unsupported
    │                          control mode, non-unit quaternion (the sender's fault)
    ├── PluginNotFound         no entry point of that name in the group (lists the installed ones)
    │   └── DriverNotFound     the same, for the driver group ``telepresence.robots``
    ├── PluginLoadError        an entry point exists but failed to import, resolved to the wrong
    │                          kind of object, or is provided by two distributions at once
    ├── DriverConfigError      a bad ``--driver-config`` option (names it and the valid options)
    ├── NotConnected           a driver was used before `connect` or after `close` (local misuse)
    ├── TimeWentBackwards      a simulated driver was handed a `now_ns` older than the last one
    └── ConformanceError       a driver failed the conformance kit (lists the failed checks)

`InvalidCommand`, `DriverConfigError` and `TimeWentBackwards` are also `ValueError`s,
`PluginNotFound` is a `LookupError`, `NotConnected` a `RuntimeError` and `ConformanceError` an
`AssertionError`, so callers that only know the built-in exceptions still catch them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "ConformanceError",
    "DriverConfigError",
    "DriverNotFound",
    "InvalidCommand",
    "NotConnected",
    "PluginLoadError",
    "PluginNotFound",
    "RobotsError",
    "TimeWentBackwards",
]


class RobotsError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidCommand(RobotsError, ValueError):
    """A command was refused because of its values; the message says which field and why."""


class PluginNotFound(RobotsError, LookupError):
    """No plugin of that name is installed in the entry-point group.

    ``name`` is the name asked for, ``group`` the entry-point group, ``available`` the sorted
    names that are installed there (including ones that fail to load).
    """

    noun: ClassVar[str] = "plugin"
    """What a plugin of this group is called in messages."""

    def __init__(self, name: str, available: Iterable[str], *, group: str = "") -> None:
        self.name = name
        self.group = group
        self.available: list[str] = sorted(available)
        installed = ", ".join(self.available) if self.available else "(none)"
        where = f" in entry-point group {group!r}" if group and self.noun == "plugin" else ""
        super().__init__(
            f"unknown {self.noun} {name!r}{where}; installed {self.noun}s: {installed}"
        )


class DriverNotFound(PluginNotFound):
    """No driver of that name is installed in the ``telepresence.robots`` group."""

    noun: ClassVar[str] = "driver"

    def __init__(
        self, name: str, available: Iterable[str], *, group: str = "telepresence.robots"
    ) -> None:
        super().__init__(name, available, group=group)


class PluginLoadError(RobotsError):
    """A plugin's entry point could not be turned into a usable object.

    ``name`` is the plugin name, ``entry_point`` its value (``module:attr``), ``group`` the
    entry-point group; the original exception, if any, is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, name: str, entry_point: str, group: str) -> None:
        self.name = name
        self.entry_point = entry_point
        self.group = group
        super().__init__(message)


class DriverConfigError(RobotsError, ValueError):
    """A ``--driver-config`` option is unknown or its value is invalid.

    ``option`` is the offending option name (None when the config as a whole was refused).
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(message)


class NotConnected(RobotsError, RuntimeError):
    """A driver method that needs the robot was called before `connect` or after `close`."""


class TimeWentBackwards(RobotsError, ValueError):
    """`now_ns` was older than a time the driver had already been given."""


class ConformanceError(RobotsError, AssertionError):
    """A driver failed one or more checks of `robots.conformance.check_driver`."""
