"""Stream ids of the data plane (one sequence space per session and stream)."""

from __future__ import annotations

import enum

__all__ = ["Stream"]


class Stream(enum.IntEnum):
    """Who sends what on which stream."""

    COMMAND = 1
    """Station -> robot: motion commands (latest wins)."""
    STATION_HEARTBEAT = 2
    """Station -> robot: heartbeats (ask for telemetry)."""
    TELEMETRY = 16
    """Robot -> station: stage timestamps of the newest actuated command, and counters."""
    JOINT_STATE = 17
    """Robot -> station: measured joint state."""
    BASE_STATE = 18
    """Robot -> station: mobile base pose and velocity."""
    FORCE_TORQUE = 19
    """Robot -> station: force/torque samples."""
    ROBOT_HEARTBEAT = 20
    """Robot -> station: answers each station heartbeat on the path it came by (liveness and
    one-way latency per path)."""
