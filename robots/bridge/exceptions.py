"""Errors of the out-of-process driver bridge, by whose fault they are.

::

    RobotsError
    ├── DriverUnavailable      the driver process cannot be reached: not running, silent for
    │                          longer than ``liveness_ms``, not keeping up, or re-syncing
    │                          (broken by the process or the link; also a ConnectionError)
    ├── DriverProcessError     the driver process is up and reported an error message of the
    │                          protocol (its robot refused or failed an operation)
    └── BridgeProtocolError    a message from the driver process breaks the protocol: bad
                               framing, bad JSON, NaN, wrong shapes (the peer's fault; also a
                               ValueError); counted and ignored once running

They live beside the bridge rather than in `robots.exceptions` because only the bridge raises
them; they derive from `robots.exceptions.RobotsError`, so the CLI reports them like any other
driver error.
"""

from __future__ import annotations

from robots.exceptions import RobotsError

__all__ = ["BridgeProtocolError", "DriverProcessError", "DriverUnavailable"]


class DriverUnavailable(RobotsError, ConnectionError):
    """The driver process did not answer in time, went silent, or could not take a message."""


class DriverProcessError(RobotsError):
    """The driver process reported an error; ``code`` and ``op`` are the message's fields."""

    def __init__(self, message: str, *, code: str, op: str | None = None) -> None:
        self.code = code
        self.op = op
        super().__init__(message)


class BridgeProtocolError(RobotsError, ValueError):
    """A message from the driver process that does not follow the bridge protocol."""
