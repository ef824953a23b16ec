"""Errors raised by the runtime, arranged by whose fault they are.

::

    TelepresenceError
    ├── ConfigError            a bad option or config value given to us (names the field and range)
    ├── LocalProtocolError     we were asked to send something the protocol cannot express
    └── RemoteProtocolError    a peer sent something we cannot accept
        └── DecodeError        a datagram that is not a valid message (counted as malformed)

Decoding never raises anything but `DecodeError` for any input bytes.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TelepresenceError",
]


class TelepresenceError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TelepresenceError, ValueError):
    """A configuration value is invalid; the message names it and the allowed values."""


class LocalProtocolError(TelepresenceError, ValueError):
    """We tried to encode something the wire format cannot carry."""


class RemoteProtocolError(TelepresenceError):
    """A peer violated the protocol."""


class DecodeError(RemoteProtocolError, ValueError):
    """A received datagram is malformed: bad magic, version, length, type or field value."""
