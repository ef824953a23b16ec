"""Errors raised by the runtime, arranged by whose fault they are.

::

    TelepresenceError
    ├── ConfigError              a bad option or config value given to us (names the field
    │                            and range)
    ├── LocalProtocolError       we were asked to send something the protocol cannot express
    ├── RobotUnreachable         no robot answered in time (data or control plane)
    ├── AccessRefused            the robot refused this operator's key (not on its allowlist)
    ├── ControlRefused           the robot refused a control request, with its reason (the
    │                            lease is held by another operator, a reservation does not fit)
    └── RemoteProtocolError      a peer sent something we cannot accept
        ├── DecodeError          a datagram that is not a valid message (counted as malformed)
        ├── AuthenticationError  a datagram that failed authentication: forged, corrupted,
        │                        sealed with another key, or plain where the session requires
        │                        sealed ones (counted as forged)
        └── UnknownSessionError  a sealed datagram of a session we hold no key for (counted
                                 as unknown session)

Decoding never raises anything but `DecodeError` for any input bytes; opening a sealed datagram
(`telepresence.security`) raises only these three.
"""

from __future__ import annotations

__all__ = [
    "AccessRefused",
    "AuthenticationError",
    "ConfigError",
    "ControlRefused",
    "DecodeError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RobotUnreachable",
    "TelepresenceError",
    "UnknownSessionError",
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


class AuthenticationError(RemoteProtocolError):
    """A datagram failed authentication: its tag does not verify under the session's key (a
    forgery, corruption on the path, or the wrong key), or it is plain where the session
    requires sealed datagrams. Nothing in it can be trusted, not even its header."""


class UnknownSessionError(RemoteProtocolError):
    """An authenticated datagram names a session this receiver holds no key for."""

    def __init__(self, message: str, session: int) -> None:
        super().__init__(message)
        self.session = session
        """The session id the datagram's (unauthenticated) header claims."""


class RobotUnreachable(TelepresenceError):
    """No robot answered in time."""


class AccessRefused(TelepresenceError):
    """The robot refused this operator's key at session set-up."""


class ControlRefused(TelepresenceError):
    """The robot refused a control-plane request; the message carries its reason."""
