"""The driver plugin API: commands, states, the capability manifest and the `Driver` base class.

A driver adapts one kind of robot to the runtime. The robot endpoint owns the driver and calls it
from one thread only, in this order::

    driver = DriverClass(config)          # cheap: no I/O, `manifest` is already valid
    driver.connect(now_ns)
    loop at the control rate:
        driver.apply(command, now_ns)      # zero or one validated command per tick
        state = driver.read(now_ns)
        driver.hold(now_ns) / driver.stop(now_ns)   # when the operator's link goes quiet
    driver.close()

Time is passed in (`now_ns`, monotonic nanoseconds) so that a simulated robot is deterministic
and a test can drive it with a hand-made clock; a hardware driver may ignore it.

Commands reaching `apply()` have already been checked against the manifest by the endpoint
(`robots.limits.CommandGuard`): finite values only, the right number of joints, a control mode
the manifest declares, every value clamped into its limits. Array fields may be read-only views
of a received datagram; copy them if you keep them past the call.
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

__all__ = [
    "BaseSpec",
    "BaseState",
    "BaseVelocityCommand",
    "Command",
    "ControlMode",
    "Driver",
    "DriverConfig",
    "ForceTorque",
    "GripperSpec",
    "JointCommand",
    "JointSpec",
    "JointState",
    "Manifest",
    "PoseCommand",
    "RobotState",
    "SensorKind",
    "SensorSpec",
]


class ControlMode(enum.StrEnum):
    """How a robot can be commanded; each maps to one command type."""

    JOINT_POSITION = "joint_position"
    """`JointCommand` with target positions (velocities/efforts as feed-forward, if given)."""
    EE_POSE = "ee_pose"
    """`PoseCommand`: an end-effector pose in the robot's base frame."""
    BASE_VELOCITY = "base_velocity"
    """`BaseVelocityCommand`: a mobile base's body-frame velocity."""


class SensorKind(enum.StrEnum):
    """Kinds of sensor a manifest may declare (media may not flow for every kind yet)."""

    CAMERA = "camera"
    MICROPHONE = "microphone"
    FORCE_TORQUE = "force_torque"
    IMU = "imu"
    JOINT_ENCODERS = "joint_encoders"
    ODOMETRY = "odometry"


# ---------------------------------------------------------------------------------------------
# Commands


@dataclass(slots=True, kw_only=True)
class JointCommand:
    """Target joint positions, with optional feed-forward velocities and efforts, and gripper."""

    positions: FloatArray
    """Target position per joint, in the manifest's joint order (rad or m)."""
    velocities: FloatArray | None = None
    """Optional feed-forward velocity per joint (rad/s or m/s)."""
    efforts: FloatArray | None = None
    """Optional feed-forward effort per joint (N·m or N)."""
    gripper: float | None = None
    """Optional gripper target, in the units of the manifest's `GripperSpec`."""
    ref: int = 0
    """Opaque tag set by the endpoint; report it back in `RobotState.actuated_ref`."""

    MODE: ClassVar[ControlMode] = ControlMode.JOINT_POSITION


@dataclass(slots=True, kw_only=True)
class PoseCommand:
    """End-effector target pose in the robot's base frame."""

    position: FloatArray
    """x, y, z in metres (3 values)."""
    orientation: FloatArray
    """Unit quaternion x, y, z, w (4 values)."""
    gripper: float | None = None
    """Optional gripper target, in the units of the manifest's `GripperSpec`."""
    ref: int = 0
    """Opaque tag set by the endpoint; report it back in `RobotState.actuated_ref`."""

    MODE: ClassVar[ControlMode] = ControlMode.EE_POSE


@dataclass(slots=True, kw_only=True)
class BaseVelocityCommand:
    """Body-frame velocity of a mobile base."""

    vx: float
    """Forward velocity, m/s."""
    vy: float = 0.0
    """Leftward velocity, m/s (0 for a differential drive)."""
    wz: float = 0.0
    """Yaw rate, rad/s, counter-clockwise positive."""
    ref: int = 0
    """Opaque tag set by the endpoint; report it back in `RobotState.actuated_ref`."""

    MODE: ClassVar[ControlMode] = ControlMode.BASE_VELOCITY


Command = JointCommand | PoseCommand | BaseVelocityCommand


# ---------------------------------------------------------------------------------------------
# States


@dataclass(slots=True, kw_only=True)
class JointState:
    """Measured joint positions, with optional velocities and efforts, and gripper."""

    positions: FloatArray
    """Position per joint, manifest order."""
    velocities: FloatArray | None = None
    """Velocity per joint, if measured."""
    efforts: FloatArray | None = None
    """Effort per joint, if measured."""
    gripper: float | None = None
    """Gripper position, if the robot has one."""


@dataclass(slots=True, kw_only=True)
class BaseState:
    """Pose of a mobile base in its odometry frame and its body-frame velocity."""

    x: float
    """Position, m."""
    y: float
    """Position, m."""
    theta: float
    """Heading, rad, wrapped to (-pi, pi]."""
    vx: float = 0.0
    """Measured forward velocity, m/s."""
    vy: float = 0.0
    """Measured leftward velocity, m/s."""
    wz: float = 0.0
    """Measured yaw rate, rad/s."""


@dataclass(slots=True, kw_only=True)
class ForceTorque:
    """One force/torque sample."""

    sensor: int
    """Index of the sensor among the manifest's force/torque sensors."""
    time_ns: int
    """When the sample was taken (the robot's monotonic clock, ns)."""
    force: FloatArray
    """fx, fy, fz in newtons."""
    torque: FloatArray
    """tx, ty, tz in newton-metres."""


@dataclass(slots=True, kw_only=True)
class RobotState:
    """What `Driver.read()` returns: whichever parts the robot has."""

    time_ns: int
    """When the state was read (the `now_ns` passed to `read`)."""
    joints: JointState | None = None
    """Joint state, for robots with joints."""
    base: BaseState | None = None
    """Base state, for mobile bases."""
    wrenches: list[ForceTorque] = field(default_factory=list)
    """Force/torque samples taken since the last read."""
    actuated_ref: int | None = None
    """`ref` of the newest command that has reached the actuators, or None if none has (or
    the driver cannot tell; then the endpoint reports the apply time as actuation time)."""
    actuated_ns: int | None = None
    """When that command reached the actuators (monotonic ns)."""


# ---------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True, slots=True, kw_only=True)
class JointSpec:
    """One joint: its name, position limits and maximum speed and effort."""

    name: str
    """Unique name within the robot."""
    lower: float
    """Lowest allowed position (rad or m)."""
    upper: float
    """Highest allowed position (rad or m)."""
    max_velocity: float
    """Highest allowed speed (rad/s or m/s), > 0."""
    max_effort: float = float("inf")
    """Highest allowed absolute effort (N·m or N), > 0."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("JointSpec.name must be a non-empty string")
        if not (np.isfinite(self.lower) and np.isfinite(self.upper) and self.lower < self.upper):
            raise ValueError(
                f"joint {self.name!r}: lower ({self.lower}) must be finite and below upper "
                f"({self.upper})"
            )
        if not self.max_velocity > 0:
            raise ValueError(f"joint {self.name!r}: max_velocity must be > 0")
        if not self.max_effort > 0:
            raise ValueError(f"joint {self.name!r}: max_effort must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class GripperSpec:
    """A gripper's command range (e.g. opening in metres, or 0..1)."""

    lower: float = 0.0
    """Fully closed."""
    upper: float = 1.0
    """Fully open."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lower) and np.isfinite(self.upper) and self.lower < self.upper):
            raise ValueError("GripperSpec: lower must be finite and below upper")


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseSpec:
    """A mobile base's velocity limits."""

    max_linear: float
    """Highest forward/backward speed, m/s."""
    max_angular: float
    """Highest yaw rate, rad/s."""
    holonomic: bool = False
    """True if the base can move sideways (vy); a differential drive cannot."""

    def __post_init__(self) -> None:
        if not (self.max_linear > 0 and self.max_angular > 0):
            raise ValueError("BaseSpec: max_linear and max_angular must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorSpec:
    """A sensor the robot offers (cameras and microphones included, before media flows)."""

    name: str
    """Unique name within the robot, e.g. "wrist_camera"."""
    kind: SensorKind
    """What it measures."""
    rate_hz: float = 0.0
    """Nominal sample or frame rate, 0 if not applicable."""
    params: dict[str, Any] = field(default_factory=dict)
    """Kind-specific details (e.g. width, height for a camera; channels for a microphone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a robot is and what it can do: the capability manifest."""

    robot_id: str
    """Identifies this robot instance (e.g. a serial number)."""
    kind: str
    """What sort of robot it is, e.g. "arm", "mobile-base", "humanoid"."""
    control_modes: tuple[ControlMode, ...]
    """Modes the robot accepts; commands of other modes are rejected."""
    control_rate_hz: float
    """Rate at which the driver wants `apply`/`read` to be called."""
    joints: tuple[JointSpec, ...] = ()
    """Joints, in command order."""
    gripper: GripperSpec | None = None
    """Gripper, if any."""
    base: BaseSpec | None = None
    """Mobile base limits, if the robot drives."""
    sensors: tuple[SensorSpec, ...] = ()
    """Sensors the robot offers."""

    def __post_init__(self) -> None:
        if not self.robot_id:
            raise ValueError("Manifest.robot_id must be a non-empty string")
        if not self.control_modes:
            raise ValueError("Manifest.control_modes must name at least one ControlMode")
        if not self.control_rate_hz > 0:
            raise ValueError("Manifest.control_rate_hz must be > 0")
        names = [j.name for j in self.joints]
        if len(set(names)) != len(names):
            raise ValueError(f"Manifest.joints: joint names must be unique, got {names}")
        if ControlMode.JOINT_POSITION in self.control_modes and not self.joints:
            raise ValueError("Manifest: joint_position control needs at least one joint")
        if ControlMode.BASE_VELOCITY in self.control_modes and self.base is None:
            raise ValueError("Manifest: base_velocity control needs a BaseSpec")
        sensor_names = [s.name for s in self.sensors]
        if len(set(sensor_names)) != len(sensor_names):
            raise ValueError(f"Manifest.sensors: names must be unique, got {sensor_names}")

    @property
    def lower(self) -> FloatArray:
        """Lower joint limits as an array."""
        return np.array([j.lower for j in self.joints], dtype=np.float64)

    @property
    def upper(self) -> FloatArray:
        """Upper joint limits as an array."""
        return np.array([j.upper for j in self.joints], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (enums as strings, infinities as None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        return clean(dataclasses.asdict(self))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass(kw_only=True)
class DriverConfig:
    """Base for driver configs. Subclass it as a kw_only dataclass, one docstring per field,
    and validate in `__post_init__` with a message naming the field and its allowed range."""

    robot_id: str = "robot-0"
    """Identifies this robot instance in manifests, telemetry and recordings."""


class Driver(ABC):
    """A robot driver plugin. Subclass it, set `config_class`, and register the class under the
    entry-point group ``telepresence.robots``.

    Every method except the constructor and `manifest` may raise; the endpoint reports the
    error with the driver's name and holds the robot; until the failed call works again (an
    `apply`, or for any other call a `read`) it applies no command and reports the robot as
    holding (docs/drivers.md §2).
    """

    config_class: ClassVar[type[DriverConfig]] = DriverConfig
    """The dataclass the endpoint builds from ``--driver-config KEY=VALUE`` options."""

    reports_actuation: ClassVar[bool] = False
    """Set True if `read()` fills `RobotState.actuated_ref`/`actuated_ns`: the endpoint then
    reports each command once the driver says it reached the actuators. Left False, the apply
    time is reported as the actuation time (no device latency is measured)."""

    def __init__(self, config: DriverConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @property
    @abstractmethod
    def manifest(self) -> Manifest:
        """The capability manifest. Must be valid before `connect` (no I/O)."""

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """True between a successful `connect` and `close`."""

    @abstractmethod
    def connect(self, now_ns: int) -> None:
        """Open the link to the robot and bring it to a safe, holding state."""

    @abstractmethod
    def apply(self, command: Command, now_ns: int) -> None:
        """Send one validated, clamped command toward the actuators. Must not block."""

    @abstractmethod
    def read(self, now_ns: int) -> RobotState:
        """Return the latest measured state. Must not block."""

    @abstractmethod
    def hold(self, now_ns: int) -> None:
        """Keep the current pose actively (the operator's commands stopped arriving)."""

    @abstractmethod
    def stop(self, now_ns: int) -> None:
        """Bring the robot to a safe stop (the link has been quiet too long)."""

    @abstractmethod
    def close(self) -> None:
        """Release the robot; safe to call more than once."""

    def status(self) -> dict[str, Any]:
        """Optional: JSON-ready facts about the driver's own link or device (the endpoint shows
        them under ``driver`` in its status). Must not block; the default has none."""
        return {}
