"""Plugin discovery, driver loading, ``--driver-config`` conversion and `describe_drivers`."""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from robots import plugins
from robots.api import Command, Driver, DriverConfig, Manifest, RobotState
from robots.conformance import ManualClock, assert_conforms
from robots.exceptions import (
    DriverConfigError,
    DriverNotFound,
    PluginLoadError,
    PluginNotFound,
)
from robots.plugins import DRIVER_GROUP
from robots.sim_arm import SimArm, SimArmConfig
from robots.sim_base import SimBase

FIXTURE = Path(__file__).parent / "fixtures" / "example_driver"


def fake_distribution(
    root: Path,
    name: str,
    entries: dict[str, str],
    *,
    group: str = DRIVER_GROUP,
    version: str = "1.0",
    modules: dict[str, str] | None = None,
) -> None:
    """Write an installed distribution (dist-info with entry points, and modules) under root."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path to install fake distributions into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_plugin_")]:
        del sys.modules[name]


@pytest.fixture
def broken_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add a driver entry point whose module does not exist to the real ones."""
    real = importlib.metadata.entry_points

    def entry_points(*, group: str) -> importlib.metadata.EntryPoints:
        found = list(real(group=group))
        if group == DRIVER_GROUP:
            found.append(
                importlib.metadata.EntryPoint(
                    "broken-bot", "no_such_module_for_tests:Bot", DRIVER_GROUP
                )
            )
        return importlib.metadata.EntryPoints(found)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


# -- discovery ------------------------------------------------------------------------------


def test_discover_finds_the_built_in_drivers() -> None:
    found = plugins.discover(DRIVER_GROUP)
    assert {"sim-arm", "sim-base"} <= set(found)
    arm = found["sim-arm"]
    assert arm.ok and arm.obj is SimArm and arm.error is None
    assert arm.entry_point == "robots.sim_arm:SimArm"
    assert arm.distribution == "telepresence" and arm.version
    assert found["sim-base"].obj is SimBase
    assert list(found) == sorted(found)


def test_broken_plugin_is_reported_by_name_and_the_others_still_load(
    broken_entry_point: None,
) -> None:
    found = plugins.discover(DRIVER_GROUP)
    broken = found["broken-bot"]
    assert not broken.ok and broken.obj is None
    assert broken.error is not None
    assert "ModuleNotFoundError" in broken.error and "no_such_module_for_tests" in broken.error
    assert found["sim-arm"].obj is SimArm and found["sim-base"].obj is SimBase
    assert plugins.load_driver_class("sim-arm") is SimArm

    with pytest.raises(PluginLoadError) as info:
        plugins.load_driver_class("broken-bot")
    message = str(info.value)
    assert "'broken-bot'" in message and "no_such_module_for_tests:Bot" in message
    assert "ModuleNotFoundError" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert info.value.name == "broken-bot"

    described = plugins.describe_drivers()
    assert [e["name"] for e in described["errors"]] == ["broken-bot"]
    assert described["errors"][0]["entry_point"] == "no_such_module_for_tests:Bot"
    assert {"sim-arm", "sim-base"} <= {d["name"] for d in described["drivers"]}


def test_plugin_that_raises_on_import_is_reported(site: Path) -> None:
    fake_distribution(
        site,
        "explosive-driver",
        {"explosive": "fake_plugin_explosive:Driver"},
        modules={"fake_plugin_explosive": "raise RuntimeError('boom at import')\n"},
    )
    found = plugins.discover(DRIVER_GROUP)
    assert found["explosive"].error == "RuntimeError: boom at import"
    assert found["explosive"].distribution == "explosive-driver"
    assert found["sim-arm"].ok
    with pytest.raises(PluginLoadError, match=r"explosive.*boom at import"):
        plugins.create_driver("explosive")


def test_same_name_in_two_distributions_is_a_conflict(site: Path) -> None:
    source = "from robots.sim_arm import SimArm as Twin\n"
    fake_distribution(
        site, "acme-a", {"twin": "fake_plugin_a:Twin"}, modules={"fake_plugin_a": source}
    )
    fake_distribution(
        site,
        "acme-b",
        {"twin": "fake_plugin_b:Twin"},
        version="2.0",
        modules={"fake_plugin_b": source},
    )
    found = plugins.discover(DRIVER_GROUP)
    twin = found["twin"]
    assert twin.obj is None and twin.error is not None
    assert "conflict" in twin.error
    assert "acme-a 1.0 (fake_plugin_a:Twin)" in twin.error
    assert "acme-b 2.0 (fake_plugin_b:Twin)" in twin.error
    assert found["sim-base"].ok
    with pytest.raises(PluginLoadError, match="conflict"):
        plugins.load_driver_class("twin")
    assert "twin" in {e["name"] for e in plugins.describe_drivers()["errors"]}


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("robots.api:Manifest", "not a subclass of robots.api.Driver"),
        ("json:dumps", "not a subclass of robots.api.Driver"),
        ("robots.api:Driver", "abstract"),
    ],
)
def test_entry_point_that_is_not_a_driver_is_refused(site: Path, target: str, match: str) -> None:
    fake_distribution(site, "odd-driver", {"odd": target})
    with pytest.raises(PluginLoadError, match=match):
        plugins.load_driver_class("odd")
    errors = plugins.describe_drivers()["errors"]
    assert any(e["name"] == "odd" and "PluginLoadError" in e["error"] for e in errors)


def test_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(DriverNotFound) as info:
        plugins.load_driver_class("foo")
    assert str(info.value).startswith("unknown driver 'foo'; installed drivers: ")
    assert "sim-arm" in str(info.value) and "sim-base" in str(info.value)
    assert {"sim-arm", "sim-base"} <= set(info.value.available)
    assert isinstance(info.value, LookupError)
    with pytest.raises(DriverNotFound):
        plugins.create_driver("foo")


def test_generic_groups(site: Path) -> None:
    group = "tests.robots.widgets"
    fake_distribution(site, "widgets", {"dumps": "json:dumps"}, group=group)
    assert plugins.load(group, "dumps") is json.dumps
    assert set(plugins.discover(group)) == {"dumps"}
    with pytest.raises(PluginNotFound) as info:
        plugins.load(group, "loads")
    assert not isinstance(info.value, DriverNotFound)
    assert "'tests.robots.widgets'" in str(info.value) and "dumps" in str(info.value)
    assert plugins.discover("tests.robots.no-such-group") == {}


# -- configs --------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(kw_only=True)
class SinkConfig(DriverConfig):
    """A config with one field of every supported type."""

    count: int = 1
    """How many."""
    gain: float = 0.5
    """A gain, in [0, 10]."""
    enabled: bool = False
    """On or off."""
    label: str = "x"
    """A label."""
    limit: float | None = None
    """An optional limit,
    over two lines."""
    offsets: tuple[float, ...] = (0.0,)
    """Offsets."""
    colour: Colour = Colour.RED
    """A colour."""

    def __post_init__(self) -> None:
        if not 0 <= self.gain <= 10:
            raise ValueError(f"SinkConfig.gain must be in [0, 10], got {self.gain}")


class NullDriver(Driver):
    """A driver that does nothing; subclasses set `config_class`."""

    @property
    def manifest(self) -> Manifest:
        return SimArm().manifest

    @property
    def is_connected(self) -> bool:
        return False

    def connect(self, now_ns: int) -> None:
        pass

    def apply(self, command: Command, now_ns: int) -> None:
        pass

    def read(self, now_ns: int) -> RobotState:
        return RobotState(time_ns=now_ns)

    def hold(self, now_ns: int) -> None:
        pass

    def stop(self, now_ns: int) -> None:
        pass

    def close(self) -> None:
        pass


class Sink(NullDriver):
    config_class = SinkConfig


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"count": "3"}, {"count": 3}),
        ({"count": " -2 "}, {"count": -2}),
        ({"gain": "1e-1"}, {"gain": 0.1}),
        ({"label": " spaced "}, {"label": " spaced "}),
        ({"limit": "2.5"}, {"limit": 2.5}),
        ({"limit": "none"}, {"limit": None}),
        ({"limit": "NULL"}, {"limit": None}),
        ({"limit": ""}, {"limit": None}),
        ({"offsets": "1, 2,3"}, {"offsets": (1.0, 2.0, 3.0)}),
        ({"offsets": "(1,2)"}, {"offsets": (1.0, 2.0)}),
        ({"offsets": ""}, {"offsets": ()}),
        ({"colour": "green"}, {"colour": Colour.GREEN}),
        ({"colour": "GREEN"}, {"colour": Colour.GREEN}),
        ({"robot-id": "r-9"}, {"robot_id": "r-9"}),
    ],
)
def test_make_config_converts_strings(options: dict[str, str], expected: dict[str, Any]) -> None:
    config = plugins.make_config(Sink, options)
    assert isinstance(config, SinkConfig)
    for name, value in expected.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize("word", ["true", "True", "1", "yes", "YES", "on"])
def test_make_config_true_words(word: str) -> None:
    assert plugins.make_config(Sink, {"enabled": word}) == SinkConfig(enabled=True)


@pytest.mark.parametrize("word", ["false", "FALSE", "0", "no", "off"])
def test_make_config_false_words(word: str) -> None:
    assert plugins.make_config(Sink, {"enabled": word}) == SinkConfig(enabled=False)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"enabled": "maybe"}, "enabled"),
        ({"count": "3.5"}, "count"),
        ({"gain": "fast"}, "gain"),
        ({"limit": "high"}, "limit"),
        ({"offsets": "1,a"}, "offsets"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_make_config_invalid_value_names_the_option(options: dict[str, str], option: str) -> None:
    with pytest.raises(DriverConfigError, match=f"option '{option}'") as info:
        plugins.make_config(Sink, options)
    assert info.value.option == option
    assert isinstance(info.value, ValueError)


def test_make_config_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(DriverConfigError) as info:
        plugins.make_config(Sink, {"speed": "1"})
    message = str(info.value)
    assert "'speed'" in message and info.value.option == "speed"
    assert "count (int, default 1)" in message
    assert "gain (float, default 0.5)" in message
    assert "limit (float | None, default None)" in message
    assert "robot_id (str, default 'robot-0')" in message


def test_make_config_validation_error_becomes_a_config_error() -> None:
    with pytest.raises(DriverConfigError, match=r"option 'gain'.*\[0, 10\]") as info:
        plugins.make_config(Sink, {"gain": "20"})
    assert info.value.option == "gain"
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(DriverConfigError, match="actuation_delay_ms"):
        plugins.make_config(SimArm, {"actuation_delay_ms": "-3"})


def test_make_config_missing_required_field_and_unsupported_type() -> None:
    @dataclass(kw_only=True)
    class NeedsConfig(DriverConfig):
        port: str
        """Serial port."""
        table: dict[str, int] = dataclasses.field(default_factory=dict)
        """Not settable from a string."""

    class Needs(NullDriver):
        config_class = NeedsConfig

    with pytest.raises(DriverConfigError, match=r"port \(str, required\)"):
        plugins.make_config(Needs, {})
    with pytest.raises(DriverConfigError, match="'table' has type dict"):
        plugins.make_config(Needs, {"port": "/dev/ttyUSB0", "table": "a=1"})
    assert plugins.make_config(Needs, {"port": "/dev/ttyUSB0"}) == NeedsConfig(port="/dev/ttyUSB0")


def test_make_config_for_the_sims() -> None:
    config = plugins.make_config(
        SimArm, {"actuation_delay_ms": "5", "seed": "none", "initial_positions": "0,0,0,0,0,0.5"}
    )
    assert config == SimArmConfig(
        actuation_delay_ms=5.0, seed=None, initial_positions=(0, 0, 0, 0, 0, 0.5)
    )


def test_create_driver_applies_options() -> None:
    base = plugins.create_driver("sim-base", {"max_linear": "0.5", "robot_id": "b-1"})
    assert isinstance(base, SimBase)
    assert base.manifest.base is not None and base.manifest.base.max_linear == 0.5
    assert base.manifest.robot_id == "b-1"
    assert isinstance(plugins.create_driver("sim-arm"), SimArm)


# -- describing -----------------------------------------------------------------------------


def test_describe_config_uses_attribute_docstrings() -> None:
    entries = {e["name"]: e for e in plugins.describe_config(SinkConfig)}
    assert entries["gain"] == {
        "name": "gain",
        "type": "float",
        "default": 0.5,
        "doc": "A gain, in [0, 10].",
        "required": False,
    }
    assert entries["limit"]["doc"] == "An optional limit,\nover two lines."
    assert entries["offsets"]["default"] == [0.0]
    assert entries["colour"]["default"] == "red"
    assert entries["robot_id"]["doc"].startswith("Identifies this robot")


def test_describe_config_without_source_has_empty_docs() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from dataclasses import dataclass\n"
        "from robots.api import DriverConfig\n"
        "@dataclass(kw_only=True)\n"
        "class Generated(DriverConfig):\n"
        "    speed: float = 1.0\n"
        "    '''Not readable: no source file.'''\n",
        namespace,
    )
    entries = {e["name"]: e for e in plugins.describe_config(namespace["Generated"])}
    assert entries["speed"]["doc"] == "" and entries["speed"]["default"] == 1.0
    assert entries["robot_id"]["doc"].startswith("Identifies")


def test_describe_drivers_is_json_with_manifests_and_documented_options() -> None:
    described = json.loads(json.dumps(plugins.describe_drivers(), allow_nan=False))
    assert set(described) == {"drivers", "errors"}
    drivers = {d["name"]: d for d in described["drivers"]}
    arm = drivers["sim-arm"]
    assert set(arm) == {"name", "entry_point", "distribution", "version", "manifest", "config"}
    assert arm["entry_point"] == "robots.sim_arm:SimArm"
    assert arm["manifest"] == json.loads(json.dumps(SimArm().manifest.to_dict()))
    options = {c["name"]: c for c in arm["config"]}
    assert options["actuation_delay_ms"]["default"] == 2.0
    assert options["actuation_delay_ms"]["type"] == "float"
    assert "ms" in options["actuation_delay_ms"]["doc"]
    assert options["initial_positions"]["type"] == "tuple[float, ...] | None"
    for driver in drivers.values():
        for option in driver["config"]:
            assert set(option) == {"name", "type", "default", "doc", "required"}
            assert option["doc"], f"{driver['name']}.{option['name']} has no doc"
    assert drivers["sim-base"]["manifest"]["base"]["max_linear"] == 1.0


# -- the example third-party driver, imported from its source tree -------------------------


def test_example_driver_conforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE))
    from example_driver import PanTiltConfig, PanTiltHead

    clock = ManualClock()
    assert assert_conforms(PanTiltHead, clock=clock, sleep=clock.sleep).ok
    config = plugins.make_config(PanTiltHead, {"tilt_limit": "0.8"})
    assert config == PanTiltConfig(tilt_limit=0.8)
    assert PanTiltHead(config).manifest.joints[1].upper == 0.8
    with pytest.raises(DriverConfigError, match="tilt_limit"):
        plugins.make_config(PanTiltHead, {"tilt_limit": "3"})


# -- the integrator's guide -----------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "drivers.md"


def test_guide_shows_the_example_package_in_full() -> None:
    guide = GUIDE.read_text()
    for name in ("pyproject.toml", "example_driver/__init__.py"):
        source = (FIXTURE / name).read_text()
        assert f"\n{source}```" in guide, f"docs/drivers.md does not show {name} as it is"


def test_guide_documents_every_option_of_the_built_in_drivers() -> None:
    guide = GUIDE.read_text()
    for name in ("sim-arm", "sim-base"):
        for option in plugins.describe_config(plugins.load_driver_class(name).config_class):
            default = "None" if option["default"] is None else option["default"]
            row = f"| `{option['name']}` | `{option['type'].replace('|', chr(92) + '|')}` | "
            assert f"{row}`{default}` | {option['doc'].replace(chr(10), ' ')} |" in guide
