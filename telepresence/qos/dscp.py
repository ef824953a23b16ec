"""Traffic classes, in strict priority order, and the DSCP mark each one carries.

====== ========== ======= ===== ===============================================================
order  class      DSCP    TOS   why (RFC 4594 service class / RFC 8837 WebRTC table)
====== ========== ======= ===== ===============================================================
0      CONTROL    EF 46   184   inelastic, tiny, admission-controlled, latest-wins: the
                                 Expedited Forwarding PHB (RFC 3246) that RFC 4594 gives
                                 telephony and RFC 8837 gives high-priority interactive data
1      HAPTICS    EF 46   184   force/torque at up to 1 kHz: the same needs as control; the
                                 network cannot tell the two apart, our own queues can
2      TELEMETRY  CS4 32  128   RFC 4594 "real-time interactive": inelastic, interactive,
                                 admission-controlled, low delay and jitter (see below)
3      VIDEO      AF41 34 136   RFC 8837 interactive video (RFC 4594 multimedia conferencing)
4      BULK       CS1 8   32    RFC 4594 / RFC 8837 "very low" (low-priority data): logs,
                                 recordings, maps; yields to everything, even best effort
====== ========== ======= ===== ===============================================================

Telemetry (robot state, stage timestamps of the command applied) is periodic, small, sent once
and never retransmitted, and the operator's display and the profiler wait on it. That is what
RFC 4594 section 4.3 calls real-time interactive (CS4). The other candidates fit it less well:
AF31 is "multimedia streaming" (buffered, rate-adaptive, with drop precedences meant for flows
that back off on loss) and CS3 is "broadcast video" (non-interactive). Both also carry IP
precedence 3, so a hop that still classifies on the three class-selector bits (RFC 2474
section 4.2.2, many switches and 802.1p mappings) would put telemetry *below* AF41 video,
inverting our order; CS4 has precedence 4, level with video, never below it. (RFC 8325 maps
CS4, CS3, AF3x and AF4x alike to Wi-Fi AC_VI, so on Wi-Fi the choice makes no difference.)
Nothing fits between EF and AF41 except CS5, which RFC 4594 reserves for signalling.

Bulk takes CS1 as RFC 8837 does; RFC 8622's Lower-Effort PHB (DSCP 1, `Dscp.LE`) is the newer
mark for the same intent and can be chosen per deployment (`AdmissionControl(marks=...)`),
since some networks still treat CS1 as *better* than best effort.

The TOS byte for ``IP_TOS`` (and the traffic class for ``IPV6_TCLASS``) is ``dscp << 2``: the
two low bits are ECN, which we leave 0 (not ECN-capable).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from telepresence.exceptions import ConfigError

__all__ = ["DEFAULT_MARKS", "Dscp", "TrafficClass", "check_marks", "dscp_of_tos", "tos_of"]


class Dscp(enum.IntEnum):
    """Named DSCP code points (RFC 2474, 2597, 3246, 4594, 8622)."""

    DF = 0
    """Default forwarding (best effort), also CS0."""
    LE = 1
    """Lower effort (RFC 8622)."""
    CS1 = 8
    AF11 = 10
    AF21 = 18
    CS3 = 24
    AF31 = 26
    CS4 = 32
    AF41 = 34
    CS5 = 40
    EF = 46
    """Expedited forwarding (RFC 3246)."""
    CS6 = 48


class TrafficClass(enum.IntEnum):
    """Traffic classes; the value is the strict priority, 0 served first."""

    CONTROL = 0
    """Operator commands (motion, e-stop, heartbeats): latest wins, stale is dropped."""
    HAPTICS = 1
    """Force/torque feedback, up to 1 kHz."""
    TELEMETRY = 2
    """Robot state and stage timestamps."""
    VIDEO = 3
    """Interactive video (and its audio, when muxed with it)."""
    BULK = 4
    """Everything that can wait: logs, recordings, maps, file transfer."""

    @property
    def label(self) -> str:
        """Lower-case name, as used in messages ("video")."""
        return self.name.lower()

    @property
    def dscp(self) -> int:
        """The default DSCP of this class (see the module table)."""
        return DEFAULT_MARKS[self]

    @property
    def tos(self) -> int:
        """The default TOS byte (``dscp << 2``) for ``IP_TOS`` / ``IPV6_TCLASS``."""
        return DEFAULT_MARKS[self] << 2

    @classmethod
    def parse(cls, value: object) -> TrafficClass:
        """A class from itself, its name (any case) or its priority number."""
        if isinstance(value, TrafficClass):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(c.label for c in cls)
        raise ConfigError(f"traffic_class must be one of {names} (or 0..4), got {value!r}")


DEFAULT_MARKS: Mapping[TrafficClass, int] = {
    TrafficClass.CONTROL: Dscp.EF,
    TrafficClass.HAPTICS: Dscp.EF,
    TrafficClass.TELEMETRY: Dscp.CS4,
    TrafficClass.VIDEO: Dscp.AF41,
    TrafficClass.BULK: Dscp.CS1,
}
"""DSCP per class (see the module docstring for the reasons)."""


def tos_of(dscp: int) -> int:
    """The TOS / traffic-class byte carrying `dscp` (ECN bits 0)."""
    if not 0 <= dscp <= 63:
        raise ConfigError(f"a DSCP must be within 0..63, got {dscp!r}")
    return dscp << 2


def dscp_of_tos(tos: int) -> int:
    """The DSCP in a TOS / traffic-class byte (the ECN bits are ignored)."""
    if not 0 <= tos <= 255:
        raise ConfigError(f"a TOS byte must be within 0..255, got {tos!r}")
    return tos >> 2


def check_marks(marks: Mapping[TrafficClass, int] | None) -> dict[TrafficClass, int]:
    """`DEFAULT_MARKS` with `marks` laid over it, every value checked to be a DSCP."""
    out = dict(DEFAULT_MARKS)
    for key, dscp in (marks or {}).items():
        cls = TrafficClass.parse(key)
        if not (isinstance(dscp, int) and not isinstance(dscp, bool) and 0 <= dscp <= 63):
            raise ConfigError(f"marks[{cls.label}] must be a DSCP within 0..63, got {dscp!r}")
        out[cls] = int(dscp)
    return out
