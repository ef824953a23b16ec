"""Operator and robot identities: CurveZMQ key pairs and the robot's list of allowed operators.

Key files use ZeroMQ's certificate format (``zmq.auth.create_certificates``): ``NAME.key``
holds the public key, ``NAME.key_secret`` both. The allowlist (``--authorized-keys``) is either
a directory of public key files (the file name is the operator's name) or a text file with one
``<40-character Z85 public key> [name]`` per line, like ssh's ``authorized_keys``.

`Allowlist` follows that file or directory while the robot runs: `Allowlist.check` compares its
stat signature (device, inode, size and mtime of the file, or of the directory and of each key
file in it) with the one last read, and reads it again when it differs. A read that fails
changes nothing: the keys in force stay, and `Allowlist.error` says why until a good read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq.auth

from telepresence.exceptions import ConfigError

__all__ = [
    "Allowlist",
    "AllowlistChange",
    "AuthorizedKeys",
    "KeyPair",
    "generate_keypair",
    "key_label",
    "load_authorized_keys",
    "load_keypair",
    "load_public_key",
]

log = logging.getLogger(__name__)

KeyPair = tuple[bytes, bytes]
"""(public, secret), Z85-encoded, 40 bytes each."""


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into `directory`; return (public, secret) paths."""
    if not name or "/" in name:
        raise ConfigError(f"key name {name!r} must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.key_secret"
    if secret.exists():
        raise ConfigError(f"{secret} exists already; choose another name or remove it")
    public, secret_path = zmq.auth.create_certificates(str(directory), name)
    Path(secret_path).chmod(0o600)
    return Path(public), Path(secret_path)


def load_keypair(path: Path) -> KeyPair:
    """Read a secret key file (NAME.key_secret)."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key pair from {path}: {exc}") from exc
    if secret is None:
        raise ConfigError(f"{path} holds only a public key; give the .key_secret file")
    return public, secret


def _z85_key(text: str, where: str) -> bytes:
    key = text.strip().encode("ascii", "replace")
    if len(key) != 40:
        raise ConfigError(f"{where}: {text.strip()!r} is not a 40-character Z85 public key")
    try:
        if not text.strip().isascii():  # "replace" made it "?", a Z85 character
            raise ValueError("not ASCII")
        zmq.utils.z85.decode(key)
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"{where}: {text.strip()!r} is not valid Z85") from exc
    return key


def load_public_key(spec: str) -> bytes:
    """A public key given as a key file (NAME.key or NAME.key_secret) or as Z85 text."""
    path = Path(spec)
    if path.exists():
        return _public_key_file(path)
    return _z85_key(spec, "public key")


def _public_key_file(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a public key from {path}: {exc}") from exc
    return _z85_key(bytes(public).decode("ascii", "replace"), str(path))


def key_label(key: bytes, name: str) -> str:
    """How logs name an allowed key: its allowlist name and the first 8 characters of its Z85
    text, e.g. ``alice (@9<Iqy&>)``."""
    return f"{name} ({key[:8].decode('ascii', 'replace')})"


# -- the allowlist ----------------------------------------------------------------------------

Signature = tuple[tuple[str, int, int, int, int, int], ...]
"""(name, device, inode, size, mtime ns, ctime ns) of the allowlist path (name ``""``; of a
directory only its device and inode) and of each key file in a directory; a path that cannot be
stat'ed gives ``(name, -errno, 0, 0, 0, 0)``."""

RACY_NS = 2_000_000_000
"""A read less than this long after the allowlist's newest timestamp is done again at the next
check: on a file system with coarse timestamps (1 or 2 s), a second write that soon after the
first may leave the same mtime and, at the same size, the same signature (git's "racy" files)."""


def _is_key_file(path: Path) -> bool:
    """A file a directory allowlist is made of: NAME.key, not hidden (so an editor's swap,
    backup and lock files are not read). Like ZeroMQ's own certificate loader, a secret key
    file (NAME.key_secret) is not one: the robot never needs an operator's secret key."""
    return not path.name.startswith(".") and path.suffix == ".key"


def _stat(path: Path, name: str) -> tuple[str, int, int, int, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        return (name, -(exc.errno or 1), 0, 0, 0, 0)
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def allowlist_signature(path: Path) -> Signature:
    """The stat signature of an allowlist file or directory: it changes when the list may have."""
    entries = [_stat(path, "")]
    if path.is_dir():
        # the directory's own times change with any file made in it (an editor's swap file):
        # its key files' names and stats say all that matters
        entries[0] = (*entries[0][:3], 0, 0, 0)
        try:
            files = sorted(f for f in path.iterdir() if _is_key_file(f))
        except OSError:
            files = []
        entries += (_stat(f, f.name) for f in files)
    return tuple(entries)


def _warn_of_secret_keys(directory: Path) -> None:
    try:
        secrets = sorted(
            f.name for f in directory.iterdir()
            if f.name.endswith(".key_secret") and not f.name.startswith(".")
        )  # fmt: skip
    except OSError:
        return
    if secrets:
        log.warning(
            "allowlist %s holds secret key files, not read: %s. Only NAME.key files allow an "
            "operator; move secret keys out (the robot never needs an operator's secret key)",
            directory, ", ".join(secrets),
        )  # fmt: skip


def _read_authorized_keys(path: Path) -> dict[bytes, str]:
    allowed: dict[bytes, str] = {}
    if path.is_dir():
        try:
            files = sorted(f for f in path.iterdir() if _is_key_file(f))
        except OSError as exc:
            raise ConfigError(f"cannot list authorized keys in {path}: {exc.strerror}") from exc
        for f in files:
            allowed[_public_key_file(f)] = f.name.split(".")[0]
        _warn_of_secret_keys(path)
        if not allowed:
            raise ConfigError(f"{path} holds no .key files: no operator could connect")
        return allowed
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not text ({exc.reason})"
        raise ConfigError(f"cannot read authorized keys {path}: {why}") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, name = line.partition(" ")
        allowed[_z85_key(key, f"{path}:{number}")] = name.strip() or f"operator-{number}"
    if not allowed:
        raise ConfigError(f"{path} lists no keys: no operator could connect")
    return allowed


class AuthorizedKeys(dict[bytes, str]):
    """Allowed operators, Z85 public key -> name, with where and when they were read; a
    `ControlServer` given these follows `source` for changes (`Allowlist`)."""

    def __init__(
        self,
        keys: Mapping[bytes, str] | None = None,
        *,
        source: Path | None = None,
        signature: Signature = (),
        read_at_ns: int = 0,
    ) -> None:
        super().__init__(keys or {})
        self.source = source
        """The allowlist file or directory, or None for a list made in code."""
        self.signature = signature
        """`allowlist_signature(source)` as it was when the keys were read."""
        self.read_at_ns = read_at_ns
        """When they were read (wall clock, ns since the epoch)."""


def _read_settled(
    path: Path, wall_clock: Callable[[], int]
) -> tuple[dict[bytes, str], Signature, int] | None:
    """Read the allowlist; None if its signature changed while it was read (it was being
    written: what was read may be half of it)."""
    before = allowlist_signature(path)
    read_at = wall_clock()
    keys = _read_authorized_keys(path)
    if allowlist_signature(path) != before:
        return None
    return keys, before, read_at


def load_authorized_keys(
    path: Path, *, wall_clock: Callable[[], int] = time.time_ns
) -> AuthorizedKeys:
    """Allowed operators: Z85 public key -> name. `ConfigError` names the file, the line and
    the problem; an allowlist without a key is an error (no operator could connect)."""
    for _ in range(4):
        read = _read_settled(path, wall_clock)
        if read is not None:
            break
    else:  # still being written after four tries: take what is there; a watcher reads it again
        read = _read_authorized_keys(path), (), wall_clock()
    keys, signature, read_at = read
    return AuthorizedKeys(keys, source=path, signature=signature, read_at_ns=read_at)


@dataclass(frozen=True)
class AllowlistChange:
    """What a new read of the allowlist changed (Z85 public key -> name)."""

    added: dict[bytes, str] = field(default_factory=dict)
    removed: dict[bytes, str] = field(default_factory=dict)
    renamed: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    """Keys still allowed under another name: key -> (old name, new name)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed)

    def describe(self) -> str:
        """``added bob (ILbK$3sP); removed alice (@9<Iqy&>)``, or ``no change``."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(key_label(k, n) for k, n in self.added.items()))
        if self.removed:
            parts.append("removed " + ", ".join(key_label(k, n) for k, n in self.removed.items()))
        if self.renamed:
            parts.append(
                "renamed "
                + ", ".join(f"{key_label(k, a)} to {b}" for k, (a, b) in self.renamed.items())
            )
        return "; ".join(parts) or "no change"


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


class Allowlist:
    """The operators a robot admits, following the allowlist's file or directory on disk.

    Design: `keys` is the list in force; only a complete, good read replaces it. `check()` (the
    server calls it at each CURVE handshake and every second) stats the source and reads it
    again when the signature differs from the last read's, or when that read was racy
    (`RACY_NS`); `reload()` reads it whatever the signature. A read during which the signature
    changed is not used: the file was being written, and the next check reads it again. A read
    that fails (unreadable, a malformed line, a bad key, no key at all) keeps the list in force,
    sets `error`, and raises `ConfigError` naming the file, the line and the problem — once per
    version of the file, not at every check — until a good read clears `error`.

    Made from a plain mapping (not `AuthorizedKeys` read from a path), the list is fixed.
    """

    def __init__(
        self, keys: Mapping[bytes, str], *, wall_clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._wall_clock = wall_clock
        self.keys: dict[bytes, str] = dict(keys)
        """Z85 public key -> name: the operators admitted now."""
        self.source: Path | None = None
        """The file or directory followed, or None for a fixed list."""
        self._signature: Signature = ()
        self.loaded_at_ns = wall_clock()
        """When `keys` were last read successfully (wall clock, ns)."""
        if isinstance(keys, AuthorizedKeys):
            self.source, self._signature = keys.source, keys.signature
            self.loaded_at_ns = keys.read_at_ns or self.loaded_at_ns
        self._read_at_ns = self.loaded_at_ns
        self.error: str | None = None
        """Why the last read failed, or None after a good one."""
        self.error_at_ns: int | None = None
        self.reloads = 0
        """Good reads since the start that changed the list."""

    @classmethod
    def load(cls, path: Path, *, wall_clock: Callable[[], int] = time.time_ns) -> Allowlist:
        """Read `path` (raises `ConfigError` if it is bad) and follow it."""
        return cls(load_authorized_keys(path, wall_clock=wall_clock), wall_clock=wall_clock)

    def _racy(self) -> bool:
        stamps = [max(e[4], e[5]) for e in self._signature if e[1] >= 0]
        return bool(stamps) and self._read_at_ns - max(stamps) < RACY_NS

    def check(self) -> AllowlistChange | None:
        """Read the allowlist again if it may have changed on disk. Returns what changed (an
        empty change when it was read and is the same), or None when it was not read or not
        used; raises `ConfigError` when a new version is bad (the list in force stays)."""
        if self.source is None:
            return None
        signature = allowlist_signature(self.source)
        if signature == self._signature and not self._racy():
            return None
        return self._read(report_again=False)

    def reload(self) -> AllowlistChange | None:
        """Read the allowlist now, changed or not; like `check` otherwise, and raises
        `ConfigError` again for a bad version already reported."""
        if self.source is None:
            return None
        return self._read(report_again=True)

    def _read(self, *, report_again: bool) -> AllowlistChange | None:
        assert self.source is not None
        before = allowlist_signature(self.source)
        try:
            read = _read_settled(self.source, self._wall_clock)
        except ConfigError as exc:
            if allowlist_signature(self.source) != before:
                return None  # being written: read it again once it settles
            same_version = before == self._signature and self.error is not None
            self._signature, self._read_at_ns = before, self._wall_clock()
            if same_version and str(exc) == self.error and not report_again:
                return None  # a racy re-read of a version already reported
            self.error, self.error_at_ns = str(exc), self._read_at_ns
            raise
        if read is None:
            return None
        keys, self._signature, self._read_at_ns = read
        self.error = self.error_at_ns = None
        self.loaded_at_ns = self._read_at_ns
        change = AllowlistChange(
            added={k: n for k, n in keys.items() if k not in self.keys},
            removed={k: n for k, n in self.keys.items() if k not in keys},
            renamed={k: (n, keys[k]) for k, n in self.keys.items() if k in keys and keys[k] != n},
        )
        self.keys = keys
        if change:
            self.reloads += 1
        return change

    def status(self) -> dict[str, Any]:
        """For the robot's status: where the list comes from, how many keys, the last good read
        and the last error (None after a good read)."""
        return {
            "path": None if self.source is None else str(self.source),
            "keys": len(self.keys),
            "operators": sorted(set(self.keys.values())),
            "loaded_at": _iso(self.loaded_at_ns),
            "reloads": self.reloads,
            "last_error": self.error,
            "last_error_at": _iso(self.error_at_ns),
        }
