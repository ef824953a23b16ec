"""Shared helpers of the benchmarks: percentiles, interleaved (ABAB) rounds on the
pytest-benchmark fixture, CPU pinning, and child-process peers.

Every benchmark here compares the runtime against a baseline measured in the same run, because
this is a shared 2-vCPU machine whose speed drifts from minute to minute. Where a target is
close, baseline and runtime blocks alternate (ABAB) so both see the same noise, and the ratio
is taken per block pair and then the median over pairs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import socket
import subprocess
import sys
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
    measured: dict[str, float],
    targets: dict[str, float],
    what: str,
) -> None:
    """Fail naming every measured ratio above its target (upper bounds)."""
    missed = [
        f"{key} {measured[key]}x > {limit}x" for key, limit in targets.items()
        if not measured[key] <= limit
    ]  # fmt: skip
    if not missed:
        return
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
    return {
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


class Peer:
    """A child process of `peers.py` serving on a UDP socket bound here (no port race)."""

    def __init__(self, mode: str, *, cpu: int | None = None, ready_timeout: float = 20.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.address: tuple[str, int] = sock.getsockname()
        cmd = [sys.executable, str(PEERS), mode, str(sock.fileno())]
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
