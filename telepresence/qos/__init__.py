"""Reservation and QoS for the data plane (sans-IO: no sockets, no clocks, time passed in).

- `telepresence.qos.dscp` — `TrafficClass` (strict priority order) and the DSCP / TOS marks;
- `telepresence.qos.reservation` — `StreamSpec`, `AdmissionControl`, `Grant`, `Refusal`;
- `telepresence.qos.bucket` — `TokenBucket`, exact integer policing and pacing;
- `telepresence.qos.scheduler` — `Scheduler`: per-stream policing, strict priority, pacing.

See ``docs/qos.md`` for the rules and a worked example.
"""

from telepresence.qos.bucket import TokenBucket
from telepresence.qos.dscp import DEFAULT_MARKS, Dscp, TrafficClass, dscp_of_tos, tos_of
from telepresence.qos.reservation import (
    AdmissionControl,
    Grant,
    Refusal,
    RefusalReason,
    StreamSpec,
    format_bps,
)
from telepresence.qos.scheduler import (
    DEFAULT_MAX_DELAY_NS,
    DROPPED,
    HELD,
    Scheduler,
    SchedulerConfig,
    StreamCounters,
)

__all__ = [
    "DEFAULT_MARKS",
    "DEFAULT_MAX_DELAY_NS",
    "DROPPED",
    "HELD",
    "AdmissionControl",
    "Dscp",
    "Grant",
    "Refusal",
    "RefusalReason",
    "Scheduler",
    "SchedulerConfig",
    "StreamCounters",
    "StreamSpec",
    "TokenBucket",
    "TrafficClass",
    "dscp_of_tos",
    "format_bps",
    "tos_of",
]
