"""The driver API's own validation: manifests, specs, configs and the error tree."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from robots.api import (
    BaseSpec,
    ControlMode,
    Driver,
    DriverConfig,
    GripperSpec,
    JointSpec,
    Manifest,
    SensorKind,
    SensorSpec,
)
from robots.exceptions import (
    ConformanceError,
    DriverConfigError,
    DriverNotFound,
    InvalidCommand,
    NotConnected,
    PluginLoadError,
    PluginNotFound,
    RobotsError,
    TimeWentBackwards,
)


def joint(name: str = "j1", **kw: Any) -> JointSpec:
    args: dict[str, Any] = {"name": name, "lower": -1.0, "upper": 1.0, "max_velocity": 2.0}
    args.update(kw)
    return JointSpec(**args)


def manifest(**kw: Any) -> Manifest:
    args: dict[str, Any] = {
        "robot_id": "r",
        "kind": "arm",
        "control_modes": (ControlMode.JOINT_POSITION,),
        "control_rate_hz": 100.0,
        "joints": (joint(),),
    }
    args.update(kw)
    return Manifest(**args)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": ""}, "name"),
        ({"lower": 1.0, "upper": 1.0}, "lower"),
        ({"lower": 2.0, "upper": 1.0}, "lower"),
        ({"lower": math.nan}, "lower"),
        ({"upper": math.inf}, "lower"),
        ({"max_velocity": 0.0}, "max_velocity"),
        ({"max_velocity": -1.0}, "max_velocity"),
        ({"max_effort": 0.0}, "max_effort"),
    ],
)
def test_joint_spec_rejects(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        joint(**kw)


def test_gripper_and_base_specs_reject_bad_ranges() -> None:
    with pytest.raises(ValueError, match="GripperSpec"):
        GripperSpec(lower=1.0, upper=0.0)
    with pytest.raises(ValueError, match="GripperSpec"):
        GripperSpec(lower=0.0, upper=math.inf)
    with pytest.raises(ValueError, match="BaseSpec"):
        BaseSpec(max_linear=0.0, max_angular=1.0)
    with pytest.raises(ValueError, match="BaseSpec"):
        BaseSpec(max_linear=1.0, max_angular=-1.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"robot_id": ""}, "robot_id"),
        ({"control_modes": ()}, "control_modes"),
        ({"control_rate_hz": 0.0}, "control_rate_hz"),
        ({"control_rate_hz": math.nan}, "control_rate_hz"),
        ({"joints": (joint("a"), joint("a"))}, "unique"),
        ({"joints": ()}, "at least one joint"),
        ({"control_modes": (ControlMode.BASE_VELOCITY,), "joints": ()}, "BaseSpec"),
        (
            {
                "sensors": (
                    SensorSpec(name="cam", kind=SensorKind.CAMERA),
                    SensorSpec(name="cam", kind=SensorKind.IMU),
                )
            },
            "sensors",
        ),
    ],
)
def test_manifest_rejects(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        manifest(**kw)


def test_manifest_to_dict_is_json_with_enums_as_strings_and_infinity_as_none() -> None:
    m = manifest(
        gripper=GripperSpec(),
        sensors=(SensorSpec(name="cam", kind=SensorKind.CAMERA, rate_hz=30, params={"w": 640}),),
    )
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["control_modes"] == ["joint_position"]
    assert back["joints"][0]["max_effort"] is None
    assert back["sensors"][0]["kind"] == "camera"
    assert back["sensors"][0]["params"] == {"w": 640}
    assert list(m.lower) == [-1.0] and list(m.upper) == [1.0]


def test_driver_is_abstract_and_config_defaults() -> None:
    with pytest.raises(TypeError):
        Driver()  # type: ignore[abstract]
    assert DriverConfig().robot_id == "robot-0"
    assert Driver.reports_actuation is False


def test_error_tree() -> None:
    for cls in (
        InvalidCommand,
        PluginNotFound,
        DriverNotFound,
        PluginLoadError,
        DriverConfigError,
        NotConnected,
        TimeWentBackwards,
        ConformanceError,
    ):
        assert issubclass(cls, RobotsError)
    assert issubclass(InvalidCommand, ValueError)
    assert issubclass(DriverConfigError, ValueError)
    assert issubclass(TimeWentBackwards, ValueError)
    assert issubclass(DriverNotFound, PluginNotFound)
    assert issubclass(DriverNotFound, LookupError)
    assert issubclass(NotConnected, RuntimeError)
    assert issubclass(ConformanceError, AssertionError)


def test_not_found_messages_list_what_is_installed() -> None:
    err = DriverNotFound("foo", ["sim-base", "sim-arm"])
    assert str(err) == "unknown driver 'foo'; installed drivers: sim-arm, sim-base"
    assert err.name == "foo" and err.available == ["sim-arm", "sim-base"]
    generic = PluginNotFound("x", [], group="telepresence.inputs")
    assert "'telepresence.inputs'" in str(generic) and "(none)" in str(generic)
