"""Errors raised by ``netsim``.

Tree::

    NetsimError                  base of everything netsim raises on purpose
    ├── HostsUnavailable         this machine cannot make test hosts: a missing privilege,
    │                            tool or kernel feature (the message says which, and how to
    │                            get it); tests skip on it
    └── HostsError               a command that builds, shapes or runs on the test hosts
                                 failed (the message holds the command and its stderr)

Misuse of the API (an unknown host name, a malformed rate) raises ``ValueError`` or
``KeyError`` as usual, not a ``NetsimError``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HostsError", "HostsUnavailable", "NetsimError"]


class NetsimError(Exception):
    """Base class of the errors ``netsim`` raises on purpose."""


class HostsUnavailable(NetsimError):
    """Test hosts cannot be made here: a privilege, a tool or a kernel feature is missing."""


class HostsError(NetsimError):
    """A command run for the test hosts failed."""

    def __init__(self, command: Sequence[str], stderr: str | bytes | None,
                 returncode: int | None = None) -> None:  # fmt: skip
        """`returncode` None means the command timed out (its partial stderr may be bytes)."""
        self.command = list(command)
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        self.stderr = (stderr or "").strip()
        self.returncode = returncode
        status = "timed out" if returncode is None else f"exited with {returncode}"
        detail = f": {self.stderr}" if self.stderr else " (no stderr)"
        super().__init__(f"`{' '.join(self.command)}` {status}{detail}")
