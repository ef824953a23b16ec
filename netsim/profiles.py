"""Named link profiles: typical networks between an operator and an avatar.

Each profile gives the up (operator -> robot) and down (robot -> operator) link of one path,
built from published figures; `docs/netsim.md` cites the source of every number. Profiles that
depend on distance (`apn`, `fiber-internet`) take ``distance_km``; the others ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netsim.link import GilbertElliott, LinkConfig, Outage

__all__ = ["FIBRE_US_PER_KM", "PROFILES", "Profile", "get_profile"]

FIBRE_US_PER_KM = 4.9
"""Propagation in optical fibre (refractive index ~1.47): 4.9 µs per km, one way."""


@dataclass(frozen=True)
class Profile:
    """A named network path: what it models, where its numbers come from, and its links."""

    name: str
    summary: str
    source: str
    build: Callable[[float], tuple[LinkConfig, LinkConfig]]
    """distance_km -> (up, down)."""
    uses_distance: bool = False
    default_distance_km: float = 0.0

    def links(self, distance_km: float | None = None) -> tuple[LinkConfig, LinkConfig]:
        """(up, down) for a distance (the profile's default when None)."""
        d = self.default_distance_km if distance_km is None else distance_km
        if d < 0:
            raise ValueError(f"distance must be >= 0 km, got {d:g}")
        return self.build(d)


def _same(link: LinkConfig) -> tuple[LinkConfig, LinkConfig]:
    return link, link


def _fibre_s(distance_km: float) -> float:
    return distance_km * FIBRE_US_PER_KM * 1e-6


def _fiber_internet(d: float) -> tuple[LinkConfig, LinkConfig]:
    # Routed paths are ~1.5x the straight distance; a router hop every ~200 km, at least 6,
    # each adding ~50 µs of processing and queueing.
    hops = max(6, round(d / 200))
    link = LinkConfig(
        delay=_fibre_s(d * 1.5) + hops * 50e-6,
        jitter=0.1e-3 + hops * 20e-6,
        jitter_dist="pareto",
        loss=0.0001,
    )
    return _same(link)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "loopback",
            "no impairment at all (the relay's own cost only)",
            "-",
            lambda d: _same(LinkConfig()),
        ),
        Profile(
            "apn",
            "all-photonics network: a dedicated optical path, fibre propagation only, no "
            "jitter, no queueing, guaranteed bandwidth",
            "IOWN APN: ~100 km within 1 ms RTT; 4.9 µs/km in fibre",
            lambda d: _same(LinkConfig(delay=_fibre_s(d))),
            uses_distance=True,
            default_distance_km=100.0,
        ),
        Profile(
            "fiber-internet",
            "the same distance over the routed internet: longer route, per-hop processing and "
            "queueing jitter, rare loss",
            "route inflation ~1.5x; per-hop forwarding tens of µs; 0.01 % loss",
            _fiber_internet,
            uses_distance=True,
            default_distance_km=100.0,
        ),
        Profile(
            "5g-urllc",
            "5G ultra-reliable low-latency slice: 1 ms user plane, tight jitter",
            "ITU-R M.2410: URLLC user-plane latency 1 ms, reliability 1-1e-5",
            lambda d: _same(LinkConfig(delay=1e-3, jitter=0.1e-3, loss=1e-5)),
        ),
        Profile(
            "5g",
            "5G enhanced mobile broadband through a mobile core",
            "ITU-R M.2410: eMBB user plane 4 ms; plus radio scheduling and core",
            lambda d: (
                LinkConfig(delay=6e-3, jitter=2e-3, loss=0.001, rate=50e6, queue_bytes=256_000),
                LinkConfig(delay=5e-3, jitter=2e-3, loss=0.001, rate=300e6, queue_bytes=1_000_000),
            ),
        ),
        Profile(
            "lte",
            "4G LTE: tens of ms, scheduler jitter, modest uplink",
            "typical LTE RTT 40-60 ms; uplink ~10 Mbit/s, downlink ~30 Mbit/s",
            lambda d: (
                LinkConfig(delay=25e-3, jitter=5e-3, loss=0.005, rate=10e6, queue_bytes=128_000),
                LinkConfig(delay=20e-3, jitter=5e-3, loss=0.005, rate=30e6, queue_bytes=256_000),
            ),
        ),
        Profile(
            "wifi",
            "a quiet Wi-Fi hop: low delay, contention jitter with a heavy tail",
            "802.11ac/ax one-hop latency 1-3 ms, occasional retransmissions",
            lambda d: _same(
                LinkConfig(delay=2e-3, jitter=1e-3, jitter_dist="pareto", loss=0.001, rate=100e6)
            ),
        ),
        Profile(
            "wifi-congested",
            "a busy Wi-Fi cell: airtime contention, bursty loss, a filled queue",
            "busy-cell measurements: 10-50 ms delay spikes, loss in bursts",
            lambda d: _same(
                LinkConfig(
                    delay=8e-3,
                    jitter=6e-3,
                    jitter_dist="pareto",
                    loss_model=GilbertElliott(p=0.01, r=0.3, loss_bad=0.5),
                    rate=10e6,
                    queue_bytes=150_000,
                )
            ),
        ),
        Profile(
            "starlink",
            "LEO satellite: ~40 ms RTT, with a delay spike and brief loss at the satellite "
            "handover every 15 s",
            "Starlink median RTT ~30-50 ms, spikes at the 15 s reconfiguration interval",
            lambda d: (
                LinkConfig(
                    delay=20e-3,
                    jitter=4e-3,
                    loss=0.005,
                    rate=15e6,
                    outage=Outage(period=15.0, duration=0.08),
                ),
                LinkConfig(
                    delay=20e-3,
                    jitter=4e-3,
                    loss=0.005,
                    rate=100e6,
                    outage=Outage(period=15.0, duration=0.08),
                ),
            ),
        ),
        Profile(
            "geo-satellite",
            "geostationary satellite: ~650 ms RTT (only supervisory control works)",
            "GEO RTT ~650 ms (36,000 km each way up and down, plus processing)",
            lambda d: (
                LinkConfig(delay=320e-3, jitter=5e-3, loss=0.001, rate=5e6),
                LinkConfig(delay=320e-3, jitter=5e-3, loss=0.001, rate=20e6),
            ),
        ),
        Profile(
            "congested-wan",
            "a congested wide-area path: a slow bottleneck with a deep drop-tail buffer "
            "(bufferbloat) and bursty loss",
            "bufferbloat studies: hundreds of ms of queueing in oversized buffers",
            lambda d: _same(
                LinkConfig(
                    delay=30e-3,
                    jitter=5e-3,
                    loss_model=GilbertElliott(p=0.005, r=0.4, loss_bad=0.3),
                    rate=10e6,
                    queue_bytes=250_000,
                )
            ),
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The named profile, or a ValueError listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown link profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
