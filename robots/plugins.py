"""Plugin discovery through entry points, and the driver helpers built on it.

Generic part, for any entry-point group (drivers use ``telepresence.robots``; the runtime also
finds its input devices in ``telepresence.inputs``):

- `discover(group)` loads every plugin of the group and returns one `PluginInfo` per name. A
  plugin that fails to import is reported with its error and does not hide the others; a name
  provided by two distributions is reported as a conflict on that name.
- `load(group, name)` loads one plugin, raising `PluginNotFound` (which lists the installed
  names) or `PluginLoadError` (which names the entry point and chains the original error).

Driver part: `load_driver_class`, `make_config` (``--driver-config KEY=VALUE`` strings to a
typed config), `create_driver`, and `describe_drivers` (what ``telepresence drivers --json``
prints). There is no table of built-in drivers here: the built-ins are entry points of the
``telepresence`` distribution like any third-party driver.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib.metadata
import inspect
import itertools
import logging
import math
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robots.api import Driver, DriverConfig
from robots.exceptions import (
    DriverConfigError,
    DriverNotFound,
    PluginLoadError,
    PluginNotFound,
)

__all__ = [
    "DRIVER_GROUP",
    "PluginInfo",
    "create_driver",
    "describe_config",
    "describe_drivers",
    "discover",
    "load",
    "load_driver_class",
    "make_config",
]

logger = logging.getLogger(__name__)

DRIVER_GROUP = "telepresence.robots"
"""Entry-point group in which robot drivers register."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NONE = frozenset({"none", "null", ""})


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginInfo:
    """What discovery found under one plugin name."""

    name: str
    """The entry point's name (what the user types, e.g. ``sim-arm``)."""
    group: str
    """The entry-point group."""
    entry_point: str
    """The entry point's value, ``module:attr``; for a conflict, the first distribution's."""
    distribution: str | None = None
    """Name of the distribution that provides it, if known."""
    version: str | None = None
    """That distribution's version, if known."""
    obj: object | None = None
    """The loaded object; None if loading failed."""
    error: str | None = None
    """Why loading failed (``ExceptionType: message``), or the conflict; None if it loaded."""
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """The exception that made loading fail, if any."""

    @property
    def ok(self) -> bool:
        """True if the plugin loaded."""
        return self.error is None


# ---------------------------------------------------------------------------------------------
# Generic discovery


def _entry_points(group: str) -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Entry points of ``group`` by name, duplicates of the same (value, distribution) removed."""
    by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
    seen: set[tuple[str, str, str | None]] = set()
    for ep in importlib.metadata.entry_points(group=group):
        key = (ep.name, ep.value, _dist_name(ep))
        if key in seen:
            continue
        seen.add(key)
        by_name.setdefault(ep.name, []).append(ep)
    return dict(sorted(by_name.items()))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.name)


def _dist_version(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.version)


def _load_entry(group: str, name: str, eps: list[importlib.metadata.EntryPoint]) -> PluginInfo:
    first = eps[0]
    info = PluginInfo(
        name=name,
        group=group,
        entry_point=first.value,
        distribution=_dist_name(first),
        version=_dist_version(first),
    )
    if len(eps) > 1:
        providers = "; ".join(
            " ".join(
                part
                for part in (_dist_name(ep) or "unknown distribution", _dist_version(ep))
                if part
            )
            + f" ({ep.value})"
            for ep in eps
        )
        error = (
            f"conflict: {name!r} is registered in group {group!r} by more than one "
            f"distribution: {providers}; uninstall all but one"
        )
        logger.warning("plugin %r: %s", name, error)
        return dataclasses.replace(info, error=error)
    try:
        obj = first.load()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("plugin %r (%s) failed to load: %s", name, first.value, error)
        return dataclasses.replace(info, error=error, exception=exc)
    return dataclasses.replace(info, obj=obj)


def discover(group: str) -> dict[str, PluginInfo]:
    """Load every plugin of ``group``; one `PluginInfo` per name, sorted by name."""
    return {name: _load_entry(group, name, eps) for name, eps in _entry_points(group).items()}


def _load_info(group: str, name: str, not_found: type[PluginNotFound]) -> PluginInfo:
    eps = _entry_points(group)
    if name not in eps:
        raise not_found(name, eps, group=group)
    info = _load_entry(group, name, eps[name])
    if info.error is not None:
        where = f" from {info.distribution}" if info.distribution else ""
        raise PluginLoadError(
            f"plugin {name!r} (entry point {info.entry_point!r} in group {group!r}{where}) "
            f"failed to load: {info.error}",
            name=name,
            entry_point=info.entry_point,
            group=group,
        ) from info.exception
    return info


def load(group: str, name: str) -> object:
    """Load the plugin ``name`` of ``group``.

    Raises `PluginNotFound` (listing the installed names) or `PluginLoadError`.
    """
    return _load_info(group, name, PluginNotFound).obj


# ---------------------------------------------------------------------------------------------
# Drivers


def _driver_class(info: PluginInfo) -> type[Driver]:
    obj = info.obj
    problem = None
    if not (isinstance(obj, type) and issubclass(obj, Driver)):
        problem = f"resolved to {obj!r}, which is not a subclass of robots.api.Driver"
    elif inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        problem = f"resolved to {obj.__qualname__}, which is abstract (missing: {missing})"
    elif not _is_config_class(getattr(obj, "config_class", None)):
        problem = f"{obj.__qualname__}.config_class is not a DriverConfig dataclass"
    if problem is not None:
        raise PluginLoadError(
            f"driver {info.name!r} (entry point {info.entry_point!r}) {problem}",
            name=info.name,
            entry_point=info.entry_point,
            group=info.group,
        )
    assert isinstance(obj, type)
    return obj


def _is_config_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, DriverConfig) and dataclasses.is_dataclass(obj)


def load_driver_class(name: str) -> type[Driver]:
    """The driver class registered as ``name`` in ``telepresence.robots``.

    Raises `DriverNotFound` (listing the installed drivers) or `PluginLoadError` (the entry
    point fails to import, or is not a concrete `Driver` subclass with a config dataclass).
    """
    return _driver_class(_load_info(DRIVER_GROUP, name, DriverNotFound))


def create_driver(name: str, options: Mapping[str, str] | None = None) -> Driver:
    """Instantiate driver ``name`` with a config built from ``options`` (see `make_config`)."""
    driver_cls = load_driver_class(name)
    return driver_cls(make_config(driver_cls, options or {}))


def make_config(driver_cls: type[Driver], options: Mapping[str, str]) -> DriverConfig:
    """Build ``driver_cls.config_class`` from ``--driver-config KEY=VALUE`` strings.

    Keys are field names (``-`` may stand for ``_``). Values are converted to the field's type:
    int, float, str, bool (true/false, 1/0, yes/no, on/off), enums (by value or name),
    ``X | None`` ("none", "null" or empty for None) and tuples/lists (comma-separated).
    Raises `DriverConfigError` naming the option for an unknown option, a value that does not
    convert, or a value the config's own validation refuses.
    """
    config_cls = driver_cls.config_class
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = _type_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        name = key.strip().replace("-", "_")
        if name not in fields:
            raise DriverConfigError(
                f"unknown driver config option {key!r} for {config_cls.__name__}; valid options: "
                f"{_options_summary(config_cls)}",
                option=key,
            )
        kwargs[name] = _convert(raw, hints.get(name, str), key)
    try:
        return config_cls(**kwargs)
    except TypeError as exc:
        raise DriverConfigError(
            f"cannot build {config_cls.__name__}: {exc}; valid options: "
            f"{_options_summary(config_cls)}"
        ) from exc
    except ValueError as exc:
        message = str(exc)
        option = next((k for k in kwargs if k in message), None)
        raise DriverConfigError(
            f"invalid driver config{f' option {option!r}' if option else ''}: {message}",
            option=option,
        ) from exc


def _type_hints(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _convert(raw: str, tp: Any, option: str) -> Any:
    """``raw`` converted to type ``tp``; DriverConfigError naming ``option`` if it cannot be."""
    try:
        return _convert_value(raw, tp)
    except _Unsupported:
        raise DriverConfigError(
            f"driver config option {option!r} has type {_type_name(tp)}, which cannot be set "
            f"from a KEY=VALUE string",
            option=option,
        ) from None
    except (TypeError, ValueError) as exc:
        raise DriverConfigError(
            f"driver config option {option!r}: {raw!r} is not a valid {_type_name(tp)} ({exc})",
            option=option,
        ) from exc


class _Unsupported(Exception):
    pass


def _convert_value(raw: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args and raw.strip().lower() in _NONE:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert_value(raw, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors) or "no type accepts it")
    if origin is typing.Literal:
        for value in args:
            if str(value) == raw.strip():
                return value
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        text = raw.strip().strip("()[]")
        parts = [p.strip() for p in text.split(",")] if text else []
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return tuple(_convert_value(p, a) for p, a in zip(parts, args, strict=True))
        item = args[0] if args else str
        values = [_convert_value(p, item) for p in parts]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected true/false, 1/0, yes/no or on/off")
    if tp is int:
        return int(raw.strip())
    if tp is float:
        return float(raw.strip())
    if tp is str or tp is Any:
        return raw
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        text = raw.strip()
        for member in tp:
            if text in (str(member.value), member.name):
                return member
        raise ValueError(f"expected one of {', '.join(str(m.value) for m in tp)}")
    raise _Unsupported


# ---------------------------------------------------------------------------------------------
# Describing drivers


def _field_docs(config_cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after an annotated field) of the class and
    its dataclass bases; fields whose source is unavailable are missing."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError):
            continue
        node = tree.body[0] if tree.body else None
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for stmt, following in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return repr(value)


def describe_config(config_cls: type[DriverConfig]) -> list[dict[str, Any]]:
    """One JSON-ready entry per option: name, type, default, doc and whether it is required."""
    hints = _type_hints(config_cls)
    docs = _field_docs(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        required = False
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default, required = None, True
        out.append(
            {
                "name": f.name,
                "type": _type_name(hints.get(f.name, f.type)),
                "default": _json_value(default),
                "doc": docs.get(f.name, ""),
                "required": required,
            }
        )
    return out


def _options_summary(config_cls: type[DriverConfig]) -> str:
    parts = []
    for entry in describe_config(config_cls):
        default = "required" if entry["required"] else f"default {entry['default']!r}"
        parts.append(f"{entry['name']} ({entry['type']}, {default})")
    return ", ".join(parts) if parts else "(none)"


def describe_drivers() -> dict[str, list[dict[str, Any]]]:
    """Every installed driver with its manifest (default config) and options, and every driver
    that failed to load; JSON-ready. This is what ``telepresence drivers --json`` prints."""
    drivers: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for name, info in discover(DRIVER_GROUP).items():
        if info.error is not None:
            errors.append({"name": name, "entry_point": info.entry_point, "error": info.error})
            continue
        try:
            driver_cls = _driver_class(info)
            manifest = driver_cls().manifest.to_dict()
            config = describe_config(driver_cls.config_class)
        except Exception as exc:
            logger.warning("driver %r cannot be described: %s", name, exc)
            errors.append(
                {
                    "name": name,
                    "entry_point": info.entry_point,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
            continue
        drivers.append(
            {
                "name": name,
                "entry_point": info.entry_point,
                "distribution": info.distribution,
                "version": info.version,
                "manifest": manifest,
                "config": config,
            }
        )
    return {"drivers": drivers, "errors": errors}
