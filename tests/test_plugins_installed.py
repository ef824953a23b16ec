"""A third-party driver installed with pip is found through its entry point, like the built-ins.

The example package in ``tests/fixtures/example_driver`` is copied to a temporary directory,
installed there with ``pip install --target``, and listed by a fresh interpreter whose
``PYTHONPATH`` points at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "example_driver"
LIST_DRIVERS = "import json, robots.plugins as p; print(json.dumps(p.describe_drivers()))"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("example_driver")
    source = work / "source"
    shutil.copytree(
        FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = work / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--target",
        str(target),
        str(source),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=work)
    except subprocess.TimeoutExpired:
        pytest.skip("pip did not finish building the example driver within 300 s")
    if done.returncode != 0:
        pytest.skip(
            f"pip cannot build the example driver offline: {why(done.stdout + done.stderr)}"
        )
    return target


def why(output: str) -> str:
    """The line of pip's output that says what went wrong."""
    if "bdist_wheel" in output:
        return (
            "this setuptools needs the 'wheel' package to build wheels (install wheel, or "
            "setuptools >= 70.1)"
        )
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0]


def drivers_listed(site: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=site.parent,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_listing(listing: dict[str, Any]) -> None:
    drivers = {d["name"]: d for d in listing["drivers"]}
    assert {"example-pan-tilt", "sim-arm", "sim-base"} <= set(drivers)
    example = drivers["example-pan-tilt"]
    assert example["entry_point"] == "example_driver:PanTiltHead"
    assert example["distribution"] == "example-driver" and example["version"] == "0.1.0"
    manifest = example["manifest"]
    assert manifest["kind"] == "pan-tilt-head" and manifest["robot_id"] == "pan-tilt-0"
    assert manifest["control_modes"] == ["joint_position"]
    assert [j["name"] for j in manifest["joints"]] == ["pan", "tilt"]
    assert manifest["sensors"][0]["kind"] == "camera"
    options = {o["name"]: o for o in example["config"]}
    assert options["tilt_limit"]["default"] == 1.2
    assert options["tilt_limit"]["doc"].startswith("Largest tilt")
    assert drivers["sim-arm"]["manifest"]["kind"] == "arm"
    assert not [e for e in listing["errors"] if e["name"] == "example-pan-tilt"]


def test_installed_driver_is_described(site: Path) -> None:
    assert (site / "example_driver" / "__init__.py").is_file()
    check_listing(drivers_listed(site, "-c", LIST_DRIVERS))


def test_installed_driver_is_listed_by_the_cli(site: Path) -> None:
    check_listing(drivers_listed(site, "-m", "telepresence", "drivers", "--json"))


def test_building_leaves_the_fixture_clean(site: Path) -> None:
    leftovers = [p.name for p in FIXTURE.iterdir() if p.name == "build" or p.suffix == ".egg-info"]
    assert leftovers == []
