"""Typed loading of nested YAML into frozen dataclasses (the machinery behind pimc.core.config).

:func:`from_dict` builds a dataclass recursively, coercing and checking each value against its
annotation (int, float, str, bool, Literal, unions, tuples, dicts, nested dataclasses) and
rejecting unknown keys with an error that names the dotted key and the valid alternatives.
:func:`add_set_argument` and :func:`parse_overrides` are the one ``-S key=value`` command-line
syntax, shared by the flows and the ``torchrun`` entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from pimc.core.errors import ConfigError, UsageError

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """A command-line value typed as YAML (``3`` -> int, ``[1, 2]`` -> list, ``null``), with
    YAML 1.2's floats (PyYAML would keep ``1e-6`` a string) and dates kept as text."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, datetime.date):  # dates in params stay strings (e.g. grid_start)
        return text.strip()
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["data.source=real", "data.seed=3"]`` -> ``{"data.source": "real", "data.seed": 3}``.

    Values are typed as YAML, as ``dvc exp run -S`` does (see :func:`parse_value`).

    Raises:
        UsageError: an item without ``=``, or a value that is not valid YAML.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"override '{item}' must look like section.key=value")
        try:
            out[key] = parse_value(value)
        except yaml.YAMLError as err:
            raise UsageError(f"override '{item}': the value is not valid YAML ({err})") from None
    return out


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``-S/--set KEY=VALUE`` (repeatable) to ``parser``, collected in ``args.overrides``.

    Each item is checked by :func:`parse_overrides` as it is parsed, so a malformed one fails
    with the parser's usage message; pass ``args.overrides`` to :func:`parse_overrides`.
    """
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_checked_override,
        help=help,
    )


def _checked_override(item: str) -> str:
    try:
        parse_overrides([item])
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return item


def check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"'{key}' {problem}")


def from_dict(cls: type, raw: Any, source: str = "params.yaml", where: str = "") -> Any:
    """Build dataclass ``cls`` from nested mappings, checking keys and types."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key '{dotted}'. Valid keys here: {', '.join(names)}. "
                "Fix the spelling or remove it."
            )
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a __post_init__ check: prefix the file it came from
        raise ConfigError(f"{source}: {err}") from None


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: '{key}' = {value!r} is not a valid {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, source, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{source}: '{key}' = {value!r}; choose one of {', '.join(map(repr, args))}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        item = args[0]
        return tuple(_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, where `1e-6` (no dot) is a string, not a float
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise bad
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field {key}: unsupported annotation {tp!r}")  # a pimc bug


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(map(repr, args))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _set_dotted(raw: dict, dotted: str, value: Any, path: Path) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' in {path} is not a section")
    node[leaf] = value


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config dataclass (for checkpoints and YAML)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat ``{"data.synthetic.patch_size": 32, ...}`` view, as MLflow params want."""
    items = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in items.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if dataclasses.is_dataclass(value) or isinstance(value, Mapping):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def load_yaml(cls: type, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """Read YAML file ``path`` into dataclass ``cls``, applying dotted ``overrides`` first."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found; run from the repository root") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    return from_dict(cls, raw, source=str(path))
