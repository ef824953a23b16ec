"""Test hosts in network namespaces, joined by veth pairs, optionally shaped by kernel qdiscs.

Each host is a namespace ``<prefix>-<6 random hex>-<host>`` (parallel runs do not clash) with
``lo`` and ``eth0`` up and the *i+1*-th address of a private subnet. Two hosts share a veth pair;
more each get a veth to a bridge in a namespace of its own. Interfaces are made inside the
namespaces, never in the caller's, so deleting the namespaces removes everything::

    with HostNetwork(hosts=["station", "robot"]) as net:
        net.shape("station", "robot", Shaping(rate="5mbit"))   # tbf, both directions
        net.popen("robot", [..., "--listen", f"{net.address('robot')}:7000"])
        net.run("station", [..., "--connect", f"{net.address('robot')}:7000"])

Shaping a -> b puts a root qdisc on the last device carrying that traffic into b: a's ``eth0``,
or in a star b's bridge port (shaping all traffic into b). Closing (leaving the ``with``, also by
an exception or KeyboardInterrupt) stops `popen`'s processes (SIGTERM, then SIGKILL), kills any
other process in the namespaces and deletes them; an ``atexit`` hook closes what is left, and
while a network is open SIGTERM (if at its default) raises ``SystemExit`` so clean-up runs.
(Not called ``TestNetwork``: pytest would try to collect it.)
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from signal import SIGTERM
from types import FrameType
from typing import IO, Any, Literal, Self

from netsim.exceptions import HostsError, HostsUnavailable
from netsim.units import parse_bytes_or_packets, parse_rate

__all__ = ["DEFAULT_SUBNET", "INTERFACE", "HostNetwork", "Shaping", "check_available"]

log = logging.getLogger(__name__)

DEFAULT_SUBNET = "10.77.0.0/24"
INTERFACE = "eth0"  # each host's interface, inside its namespace
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")
_MIN_PACKET_BYTES = 1600
_GRACE_S = 1.0
_File = int | IO[Any] | None


def _rate_bps(value: str | int, name: str) -> int:
    bps = value if isinstance(value, int) else round(parse_rate(value, f"Shaping.{name}"))
    if not 1_000 <= bps <= 100 * 10**9:
        raise ValueError(f"Shaping.{name} must be 1kbit .. 100gbit, got {value!r}")
    return bps


def _size_bytes(value: str | int, name: str) -> int:
    size = value if isinstance(value, int) else parse_bytes_or_packets(value, f"Shaping.{name}")[0]
    if size is None or not _MIN_PACKET_BYTES <= size <= 64 * 1024**2:
        raise ValueError(f"Shaping.{name} must be bytes (B, kB, KiB or an int) from "
                         f"{_MIN_PACKET_BYTES} B (a packet) to 64 MiB, got {value!r}")  # fmt: skip
    return size


@dataclass(frozen=True, kw_only=True)
class Shaping:
    """Rate shaping for one direction of a link, by a kernel qdisc (``tbf`` or ``htb``)."""

    rate: str | int
    """Sustained rate: ``"5mbit"``, ``"500kbit"`` (`netsim.units`), or bit/s; 1kbit .. 100gbit."""
    qdisc: Literal["tbf", "htb"] = "tbf"
    """``tbf``: a token bucket (rate, burst, limit); ``htb``: a class with rate and ceil."""
    burst: str | int | None = None
    """Bytes sent back to back at line rate (``"32KiB"``, ``"1600B"``, an int; >= 1600).
    Default: 10 ms at `rate`, at least 4 KiB."""
    limit: str | int | None = None
    """tbf only: bytes queued for tokens before drops. Default: 50 ms at `rate`, >= 2 bursts."""
    ceil: str | int | None = None
    """htb only: the rate the class may borrow up to; at least `rate`. Default: `rate`."""

    def __post_init__(self) -> None:
        if self.qdisc not in ("tbf", "htb"):
            raise ValueError(f"Shaping.qdisc must be 'tbf' or 'htb', got {self.qdisc!r}")
        if self.qdisc == "htb" and self.limit is not None:
            raise ValueError("Shaping.limit applies to qdisc='tbf' only")
        if self.qdisc == "tbf" and self.ceil is not None:
            raise ValueError("Shaping.ceil applies to qdisc='htb' only")
        if self.ceil_bps < self.rate_bps:
            raise ValueError(f"Shaping.ceil ({self.ceil!r}) must be >= rate ({self.rate!r})")
        _ = self.burst_bytes, self.limit_bytes

    @property
    def rate_bps(self) -> int:
        return _rate_bps(self.rate, "rate")

    @property
    def ceil_bps(self) -> int:
        return self.rate_bps if self.ceil is None else _rate_bps(self.ceil, "ceil")

    @property
    def burst_bytes(self) -> int:
        default = max(4096, self.rate_bps // 800)  # 10 ms
        return default if self.burst is None else _size_bytes(self.burst, "burst")

    @property
    def limit_bytes(self) -> int:
        default = max(2 * self.burst_bytes, self.rate_bps // 160)  # 50 ms
        return default if self.limit is None else _size_bytes(self.limit, "limit")

    def tc_commands(self, dev: str) -> list[list[str]]:
        """The ``tc`` arguments that install this shaping as the root qdisc of `dev`."""
        rate, ceil, burst = f"{self.rate_bps}bit", f"{self.ceil_bps}bit", f"{self.burst_bytes}b"
        root = ["qdisc", "add", "dev", dev, "root"]
        if self.qdisc == "tbf":
            return [[*root, "tbf", "rate", rate, "burst", burst, "limit", f"{self.limit_bytes}b"]]
        cls = ["class", "add", "dev", dev, "parent"]
        return [
            [*root, "handle", "1:", "htb", "default", "10"],
            [*cls, "1:", "classid", "1:1", "htb", "rate", ceil, "ceil", ceil, "burst", burst],
            [*cls, "1:1", "classid", "1:10", "htb", "rate", rate, "ceil", ceil, "burst", burst],
        ]


def _checked(cmd: Sequence[str]) -> str:
    log.debug("$ %s", " ".join(cmd))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10.0)
    except subprocess.TimeoutExpired as exc:
        raise HostsError(cmd, exc.stderr) from exc
    if result.returncode != 0:
        raise HostsError(cmd, result.stderr, result.returncode)
    return result.stdout


def _need(tool: str, *, root: bool = False) -> None:
    if root and os.geteuid() != 0:
        raise HostsUnavailable("creating network namespaces needs root (CAP_SYS_ADMIN and "
                               "CAP_NET_ADMIN); run as root, or skip")  # fmt: skip
    if shutil.which(tool) is None:
        raise HostsUnavailable(f"the `{tool}` command (iproute2) is not on PATH; install "
                               "iproute2 (apt-get install iproute2), or skip")  # fmt: skip


def _tc(ns: str, args: Sequence[str]) -> None:
    try:
        _checked(["tc", "-n", ns, *args])
    except HostsError as exc:
        if "kind is unknown" in exc.stderr or "Unknown qdisc" in exc.stderr:
            kind = next((k for k in ("tbf", "htb") if k in args), "?")
            raise HostsUnavailable(f"this kernel has no '{kind}' qdisc (sch_{kind}); load "
                                   f"it with `modprobe sch_{kind}`, or skip") from exc  # fmt: skip
        raise


def _tc_del_root(ns: str, dev: str) -> None:
    # (an unshaped veth has a `noqueue` root, which cannot be deleted: ignore that)
    subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True,
                   check=False)  # fmt: skip


def check_available(*, qdiscs: Iterable[Literal["tbf", "htb"]] = ()) -> None:
    """Raise HostsUnavailable saying what is missing unless test hosts can be made here.

    Probes for real, and cleans up: root, ``ip``, ``ip netns add``, a veth pair, and each of
    `qdiscs` (which also needs ``tc``)."""
    _need("ip", root=True)
    probe = f"tp-{secrets.token_hex(3)}-probe"
    try:
        _checked(["ip", "netns", "add", probe])
    except HostsError as exc:
        raise HostsUnavailable(f"`ip netns add` failed ({exc.stderr}); network namespaces need "
                               "root with CAP_SYS_ADMIN and a writable /run/netns (in a "
                               "container: --privileged), or skip") from exc  # fmt: skip
    try:
        try:
            _checked(["ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        except HostsError as exc:
            raise HostsUnavailable(f"making a veth pair failed ({exc.stderr}); the kernel needs "
                                   "veth (`modprobe veth`), or skip") from exc  # fmt: skip
        for kind in qdiscs:
            _need("tc")
            _tc(probe, Shaping(rate="1mbit", qdisc=kind).tc_commands("v0")[0])
            _tc_del_root(probe, "v0")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


_live: set[HostNetwork] = set()
_lock = threading.Lock()


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _track(net: HostNetwork, *, is_open: bool) -> None:
    """Note `net` as open or closed; SIGTERM raises SystemExit while any network is open."""
    with _lock:
        (_live.add if is_open else _live.discard)(net)
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(SIGTERM)
        if _live and handler is signal.SIG_DFL:
            signal.signal(SIGTERM, _sigterm_to_exit)
        elif not _live and handler is _sigterm_to_exit:
            signal.signal(SIGTERM, signal.SIG_DFL)


@atexit.register
def _close_all() -> None:
    for net in list(_live):
        net.close()


def _kill_processes_in(ns: str) -> None:
    """SIGKILL whatever still runs in `ns` (children of our processes, say), and wait a bit."""

    def pids() -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]

    left, deadline = pids(), time.monotonic() + _GRACE_S
    for pid in left:
        log.warning("killing pid %d left in netns %s", pid, ns)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = pids()


class HostNetwork:
    """Hosts in network namespaces joined by veths; a context manager that always cleans up.

    `hosts`: two or more unique names (letters, digits, ``_``, ``-``; up to 32); `subnet`: a
    private IPv4 network with room for them; `prefix`: of the namespace names (1-8 a-z0-9)."""

    def __init__(self, hosts: Sequence[str] = ("a", "b"), *, subnet: str = DEFAULT_SUBNET,
                 prefix: str = "tp") -> None:  # fmt: skip
        self.hosts: tuple[str, ...] = tuple(hosts)
        if len(self.hosts) < 2 or len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"hosts must be two or more unique names, got {list(hosts)!r}")
        for h in self.hosts:
            if not _HOST_NAME.fullmatch(h):
                raise ValueError(f"host name {h!r}: use 1-32 letters, digits, '_' or '-', "
                                 "starting with a letter or digit")  # fmt: skip
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r}: use 1-8 lowercase letters or digits")
        network = ipaddress.IPv4Network(subnet)  # its ValueError names the bad subnet
        if network.num_addresses - 2 < len(self.hosts):
            raise ValueError(f"subnet {subnet} has no room for {len(self.hosts)} hosts")
        self.subnet = str(network)
        self.id = secrets.token_hex(3)
        self._ns = {h: f"{prefix}-{self.id}-{h}" for h in self.hosts}
        self._bridge_ns = f"{prefix}-{self.id}-_bridge" if len(self.hosts) > 2 else None
        addresses = network.hosts()
        self._addr = {h: str(next(addresses)) for h in self.hosts}
        self._port = {h: f"p{i}" for i, h in enumerate(self.hosts)}
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the namespaces and links; on any failure, remove what was made and re-raise."""
        if self._created:
            raise RuntimeError("this HostNetwork is already open")
        _need("ip", root=True)
        _track(self, is_open=True)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        log.info("test hosts up: %s", ", ".join(f"{h} {a}" for h, a in self._addr.items()))

    def _build(self) -> None:
        for ns in [*([self._bridge_ns] if self._bridge_ns else []), *self._ns.values()]:
            _checked(["ip", "netns", "add", ns])
            self._created.append(ns)
            _checked(["ip", "-n", ns, "link", "set", "lo", "up"])
        veth = ["type", "veth", "peer", "name", INTERFACE, "netns"]
        if (br := self._bridge_ns) is None:
            a, b = self.hosts
            _checked(["ip", "-n", self._ns[a], "link", "add", INTERFACE, *veth, self._ns[b]])
        else:
            try:
                _checked(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            except HostsError as exc:
                raise HostsUnavailable(f"making a bridge failed ({exc.stderr}); 3+ hosts "
                                       "need bridges (`modprobe bridge`)") from exc  # fmt: skip
            _checked(["ip", "-n", br, "link", "set", "br0", "up"])
            for h, port in self._port.items():
                _checked(["ip", "-n", br, "link", "add", port, *veth, self._ns[h]])
                _checked(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
        plen = ipaddress.IPv4Network(self.subnet).prefixlen
        for h, ns in self._ns.items():
            _checked(["ip", "-n", ns, "addr", "add", f"{self._addr[h]}/{plen}", "dev", INTERFACE])
            _checked(["ip", "-n", ns, "link", "set", INTERFACE, "up"])

    def close(self) -> None:
        """Stop our processes, kill stragglers, delete the namespaces. Idempotent."""
        procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop on SIGTERM; killing it", p.pid)
                p.kill()
                p.wait()
        for ns in reversed(list(self._created)):
            _kill_processes_in(ns)
            result = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                    check=False)  # fmt: skip
            if result.returncode == 0 or "No such file" in result.stderr:
                self._created.remove(ns)
            else:
                log.warning("could not delete netns %s: %s", ns, result.stderr.strip())
        if not self._created:
            _track(self, is_open=False)

    def address(self, host: str) -> str:
        """The IPv4 address of `host` (on its ``eth0``)."""
        return self._addr[self._check(host)]

    def namespace(self, host: str) -> str:
        """The name of the network namespace of `host` (for ``ip netns exec`` and friends)."""
        return self._ns[self._check(host)]

    def _check(self, host: str) -> str:
        if host in self._ns:
            return host
        raise KeyError(f"no host {host!r} in this network (hosts: {', '.join(self.hosts)})")

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs in the namespace of `host`."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def run(self, host: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `argv` on `host`, capturing its output as text. HostsError (with the command and
        its stderr) when it times out, or exits non-zero and `check` is true."""
        cmd = self.command(host, argv)
        log.debug("%s$ %s", host, " ".join(argv))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                    input=input, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise HostsError(cmd, exc.stderr) from exc
        if check and result.returncode != 0:
            raise HostsError(cmd, result.stderr, result.returncode)
        return result

    def popen(self, host: str, argv: Sequence[str], *, stdout: _File = subprocess.PIPE,
              stderr: _File = subprocess.PIPE) -> subprocess.Popen[str]:  # fmt: skip
        """Start `argv` on `host` (text mode, stdin from /dev/null); stopped on close."""
        log.debug("%s$ %s &", host, " ".join(argv))
        proc = subprocess.Popen(self.command(host, argv), stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, text=True)  # fmt: skip
        self._procs.append(proc)
        return proc

    def _egress(self, src: str, dst: str) -> tuple[str, str]:
        if self._check(src) == self._check(dst):
            raise ValueError(f"shaping needs two different hosts, got {src!r} twice")
        if self._bridge_ns is None:
            return self._ns[src], INTERFACE
        return self._bridge_ns, self._port[dst]

    def shape(self, src: str, dst: str, shaping: Shaping, *, both_ways: bool = True) -> None:
        """Shape traffic `src` -> `dst` (and back, unless not `both_ways`), replacing any shaping
        there. HostsUnavailable: no ``tc`` or no such qdisc; HostsError: ``tc`` refused."""
        _need("tc")
        for a, b in [(src, dst), (dst, src)] if both_ways else [(src, dst)]:
            ns, dev = self._egress(a, b)
            _tc_del_root(ns, dev)
            for args in shaping.tc_commands(dev):
                _tc(ns, args)
            log.info("shaped %s -> %s: %s", a, b, shaping)

    def unshape(self, src: str, dst: str, *, both_ways: bool = True) -> None:
        """Remove the shaping from `src` to `dst` (and back, unless `both_ways` is false)."""
        for a, b in [(src, dst), (dst, src)] if both_ways else [(src, dst)]:
            _tc_del_root(*self._egress(a, b))
