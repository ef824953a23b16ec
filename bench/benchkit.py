"""Shared helpers of the benchmarks: percentiles, interleaved (ABAB) rounds on the
pytest-benchmark fixture, CPU pinning, the machine's stall floor, and child-process peers.

Every benchmark here compares the runtime against a baseline measured in the same run, because
this is a shared 2-vCPU machine whose speed drifts from minute to minute. Where a target is
close, baseline and runtime blocks alternate (ABAB) so both see the same noise, and the ratio
is taken per block pair and then the median over pairs.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PEERS = Path(__file__).with_name("peers.py")

PERCENTILES = (50.0, 99.0, 99.9)
KEYS = ("p50_us", "p99_us", "p99_9_us")


class TargetMissed(AssertionError):
    """A performance target was missed (a benchmark's other checks raise plain assertions)."""


def check_targets(
    measured: dict[str, float], targets: dict[str, float], what: str, *, unit: str = "x"
) -> None:
    """Fail naming every measured ratio above its target (upper bounds)."""
    missed = [
        f"{key} {measured[key]}{unit} > {limit}{unit}" for key, limit in targets.items()
        if not measured[key] <= limit
    ]  # fmt: skip
    if missed:
        raise TargetMissed(f"{what}: " + ", ".join(missed))


def percentiles_us(samples_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """p50, p99, p99.9 and max of nanosecond samples, in µs (rounded to 0.01 µs)."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    if a.size == 0:
        raise ValueError("no samples")
    p50, p99, p999 = np.percentile(a, PERCENTILES)
    return {
        "n": int(a.size),
        "p50_us": round(float(p50), 2),
        "p99_us": round(float(p99), 2),
        "p99_9_us": round(float(p999), 2),
        "max_us": round(float(a.max()), 2),
    }


def ratios(runtime: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """runtime / baseline for each percentile of `percentiles_us`."""
    return {k.replace("_us", ""): round(runtime[k] / baseline[k], 3) for k in KEYS}


def block_ratio(
    runtime_blocks: Sequence[np.ndarray], baseline_blocks: Sequence[np.ndarray], q: float
) -> float:
    """Median over block pairs of (runtime percentile q / baseline percentile q)."""
    per_pair = [
        np.percentile(r, q) / np.percentile(b, q)
        for r, b in zip(runtime_blocks, baseline_blocks, strict=True)
    ]
    return round(float(np.median(per_pair)), 3)


def run_abab(
    benchmark: Any, baseline: Callable[[], None], runtime: Callable[[], None], *, blocks: int
) -> None:
    """Alternate `blocks` baseline and runtime blocks under the benchmark fixture.

    pytest-benchmark times `runtime` (one block per round); `baseline` is the round's untimed
    setup, so it runs just before each runtime block. Both append their own raw samples. With
    ``--benchmark-disable`` the fixture runs one round only, so the rest are run here: the
    assertions always see the full ABAB sequence.
    """

    def setup() -> None:
        baseline()  # must return None: a setup's return value becomes the target's arguments

    benchmark.pedantic(runtime, setup=setup, rounds=blocks, iterations=1)
    if getattr(benchmark, "disabled", False):
        for _ in range(blocks - 1):
            baseline()
            runtime()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = None
    from telepresence.native import IMPLEMENTATION

    return {
        "hot_path": IMPLEMENTATION,  # "c": telepresence._native; "python": without it
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def two_cpus() -> tuple[int, int] | None:
    """Two distinct CPUs this process may run on (client, peer), or None if there is one."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the calling thread on `cpu` only, restoring its affinity afterwards."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_time_ns(pid: int) -> int:
    """CPU time a process's main thread has run, ns (``/proc/PID/schedstat``; softirq work
    done in its context, such as loopback delivery of what it sends, included)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def spin_gaps(duration_s: float, threshold_ns: int = 20_000) -> tuple[list[int], int]:
    """Spin reading `time.monotonic_ns()` (a read every ~0.1 µs) for `duration_s`; return every
    gap longer than `threshold_ns` and the time spun, ns. See `stall_floor`."""
    monotonic_ns = time.monotonic_ns
    gaps: list[int] = []
    keep = gaps.append
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = last = monotonic_ns()
        end = start + int(duration_s * 1e9)
        while last < end:
            now = monotonic_ns()
            if now - last > threshold_ns:
                keep(now - last)
            last = now
    finally:
        if gc_was_enabled:
            gc.enable()
    return gaps, last - start


def stall_floor(gaps: Sequence[int], span_ns: int, threshold_ns: int = 20_000) -> dict[str, Any]:
    """The machine's stall floor from `spin_gaps` (pieces may be concatenated): how often and
    how long the CPU was taken away from a spinning process. On a VM that is the hypervisor,
    interrupts and other tenants' tasks; no userspace program on that CPU keeps time better.
    Spin where the program under test runs (on its CPU if it is pinned), interleaved with its
    measurement."""
    empty = {"n": 0, "p50_us": 0.0, "p99_us": 0.0, "p99_9_us": 0.0, "max_us": 0.0}
    return {
        "spun_s": round(span_ns / 1e9, 3),
        "threshold_us": threshold_ns / 1e3,
        "stalls": len(gaps),
        "stalls_per_s": round(len(gaps) / (span_ns / 1e9), 1),
        "stalled_fraction": round(sum(gaps) / span_ns, 5),
        "stall": percentiles_us(gaps) if len(gaps) else empty,
        "residual_at_random_instant": {
            key: stall_residual_us(gaps, span_ns, q)
            for key, q in zip(KEYS, PERCENTILES, strict=True)
        },
    }


@contextlib.contextmanager
def timer_slack(ns: int) -> Iterator[None]:
    """Set this thread's timer slack (Linux ``prctl``; the default is 50 µs), then restore it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        before = prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
        prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        prctl(29, before, 0, 0, 0)


def wake_lateness(
    duration_s: float, period_ns: int = 1_000_000, early_ns: int = 100_000
) -> list[int]:
    """How late a program that sleeps between deadlines meets them: every `period_ns`, sleep
    in ``select()`` until `early_ns` before the deadline (timer slack 1 ns), spin the rest,
    note now - deadline. The floor of the netsim relay's own design (it sleeps, wakes early
    and spins), as `spin_gaps` is the floor of a program that never sleeps."""
    monotonic_ns = time.monotonic_ns
    late: list[int] = []
    with timer_slack(1):
        due = monotonic_ns() + period_ns
        end = due + int(duration_s * 1e9)
        while due < end:
            wait = due - early_ns - monotonic_ns()
            if wait > 0:
                select.select([], [], [], wait / 1e9)
            while monotonic_ns() < due:
                pass
            late.append(monotonic_ns() - due)
            due += period_ns
    return late


def stall_residual_us(gaps: Sequence[int], span_ns: int, q: float) -> float:
    """The q-th percentile of how long a program that never sleeps must still wait, at a
    random instant, for the stall it is in to end (0 outside stalls): x with
    P(residual > x) = sum(max(gap - x, 0)) / span = 1 - q/100. The lateness a perfect
    timer would show on this CPU, to set against a program's own."""
    tail = (1 - q / 100) * span_ns
    g = np.sort(np.asarray(gaps, dtype=np.float64))[::-1]  # longest first
    if g.size == 0 or g.sum() <= tail:
        return 0.0
    # With the k longest gaps above x: sum(g[:k]) - k*x = tail, for the k where x lands.
    k = np.arange(1, g.size + 1)
    x = (np.cumsum(g) - tail) / k
    below = np.append(g[1:], 0.0)
    i = int(np.argmax((x >= below) & (x <= g)))
    return round(float(x[i]) / 1e3, 2)


def _bound_udp(rcvbuf: int | None) -> socket.socket:
    """A UDP socket bound to a free loopback port, for a child process to serve on (no race
    for the port: the child inherits the socket)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    return sock


class Peer:
    """A child process of `peers.py` serving on a UDP socket bound here (no port race)."""

    def __init__(
        self,
        mode: str,
        *,
        cpu: int | None = None,
        args: Sequence[str] = (),
        rcvbuf: int | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        sock = _bound_udp(rcvbuf)
        self.address: tuple[str, int] = sock.getsockname()
        cmd = [sys.executable, str(PEERS), mode, str(sock.fileno()), *args]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            cmd, pass_fds=(sock.fileno(),), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        sock.close()
        try:
            line = self.readline(ready_timeout)
            if line != "ready":
                raise RuntimeError(f"peer {mode!r} did not start: {line!r}")
        except BaseException:
            self.kill()
            raise

    def readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer from peer {self.proc.args!r} in {timeout:g} s")
        return self.proc.stdout.readline().decode().strip()

    def close(self, timeout: float = 10.0) -> int:
        """Close its stdin (an echo server's signal to exit) and wait; kill it if it hangs."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.close()
        self.kill()


class RelayProcess:
    """``python -m netsim relay`` on a socket bound here, pinned to `cpu`; `stop()` sends
    SIGINT and returns the statistics it wrote with ``--json``."""

    def __init__(
        self,
        to: tuple[str, int],
        options: Sequence[str],
        tmp: Path,
        *,
        cpu: int | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        sock = _bound_udp(rcvbuf)
        self.address: tuple[str, int] = sock.getsockname()
        self._json = tmp / f"relay-{self.address[1]}.json"
        self._log = tmp / f"relay-{self.address[1]}.log"
        cmd = [sys.executable, "-m", "netsim", "relay", "--listen-fd", str(sock.fileno()),
               "--to", f"{to[0]}:{to[1]}", "--json", str(self._json), *options]  # fmt: skip
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, pass_fds=(sock.fileno(),), stdout=subprocess.DEVNULL, stderr=log
            )
        sock.close()
        try:
            if cpu is not None:
                os.sched_setaffinity(self.proc.pid, {cpu})
            deadline = time.monotonic() + 20.0
            while "down:" not in self._log.read_text():  # printed just before it serves
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"relay did not start: {self._log.read_text()!r}")
                time.sleep(0.01)
        except BaseException:
            self.kill()
            raise

    def cpu_ns(self) -> int:
        return cpu_time_ns(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(10)
        assert code == 0, f"relay exited with {code}: {self._log.read_text()!r}"
        return dict(json.loads(self._json.read_text()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
