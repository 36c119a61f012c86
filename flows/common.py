"""Helpers shared by the stage flows: argument parsing and parameter loading."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from pimc import tracking
from pimc.config import Params, load_params
from pimc.io import write_json
from pimc.paths import metrics_file


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


def record_metrics(run: tracking.TrackedRun, stage: str, stats: dict[str, Any], prefix: str = ""):
    """The numeric entries of ``stats``: logged to MLflow (keys prefixed) and written as the
    DVC metrics file ``metrics/<stage>.json``. Returns them."""
    metrics = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
    run.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})
    write_json(metrics_file(stage), metrics)
    return metrics
