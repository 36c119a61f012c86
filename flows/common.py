"""Helpers shared by the stage flows: argument parsing and parameter loading."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from pimc.config import Params, load_params


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["data.source=real", "data.seed=3"]`` -> ``{"data.source": "real", "data.seed": 3}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override '{item}' must look like section.key=value")
        out[key] = yaml.safe_load(value)  # YAML typing, as `dvc exp run -S` does
    return out


def stage_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. -S data.seed=3 (repeatable)",
    )
    return parser.parse_args(argv)


def params_from(path: str, overrides: dict[str, Any] | None) -> Params:
    return load_params(path, overrides)
