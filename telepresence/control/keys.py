"""Operator and robot identities: CurveZMQ key pairs and the robot's list of allowed operators.

Key files use ZeroMQ's certificate format (``zmq.auth.create_certificates``): ``NAME.key``
holds the public key, ``NAME.key_secret`` both. The allowlist (``--authorized-keys``) is either
a directory of public key files (the file name is the operator's name) or a text file with one
``<40-character Z85 public key> [name]`` per line, like ssh's ``authorized_keys``.
"""

from __future__ import annotations

from pathlib import Path

import zmq.auth

from telepresence.exceptions import ConfigError

__all__ = ["KeyPair", "generate_keypair", "load_authorized_keys", "load_keypair", "load_public_key"]

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
        zmq.utils.z85.decode(key)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: {text.strip()!r} is not valid Z85") from exc
    return key


def load_public_key(spec: str) -> bytes:
    """A public key given as a key file (NAME.key or NAME.key_secret) or as Z85 text."""
    path = Path(spec)
    if path.exists():
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read a public key from {path}: {exc}") from exc
        return bytes(public)
    return _z85_key(spec, "public key")


def load_authorized_keys(path: Path) -> dict[bytes, str]:
    """Allowed operators: Z85 public key -> name."""
    allowed: dict[bytes, str] = {}
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.suffix == ".key" or f.name.endswith(".key_secret"):
                allowed[load_public_key(str(f))] = f.name.split(".")[0]
        if not allowed:
            raise ConfigError(f"{path} holds no .key files: no operator could connect")
        return allowed
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read authorized keys {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, name = line.partition(" ")
        allowed[_z85_key(key, f"{path}:{number}")] = name.strip() or f"operator-{number}"
    if not allowed:
        raise ConfigError(f"{path} lists no keys: no operator could connect")
    return allowed
