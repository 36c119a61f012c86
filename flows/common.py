"""Helpers shared by the stage flows: argument parsing, metrics, the Dask runner."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pimc import tracking
from pimc.core.config import ComputeConfig
from pimc.core.errors import ConfigError
from pimc.core.io import write_json
from pimc.core.paths import metrics_file
from pimc.core.typed_config import add_set_argument

__all__ = [
    "add_override_args",
    "dask_task_runner",
    "map_in_order",
    "record_metrics",
    "stage_args",
]


def stage_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    add_set_argument(parser, "override a parameter, e.g. -S data.seed=3 (repeatable)")
    return parser.parse_args(argv)


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """``-S key=value`` (a ``dvc exp run`` experiment) and ``--force`` of pipeline commands."""
    add_set_argument(parser, "run as `dvc exp run -S KEY=VALUE` (repeatable), e.g. -S data.seed=3")
    parser.add_argument("--force", action="store_true", help="re-run every stage")


def record_metrics(run: tracking.TrackedRun, stage: str, stats: dict[str, Any], prefix: str = ""):
    """The numeric entries of ``stats``: logged to MLflow (keys prefixed) and written as the
    DVC metrics file ``metrics/<stage>.json``. Returns them."""
    metrics = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
    run.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})
    write_json(metrics_file(stage), metrics)
    return metrics


def dask_task_runner(compute: ComputeConfig):
    """The prefect-dask task runner that ``compute`` asks for; connects or starts nothing yet.

    ``compute.dask_address`` set: the existing scheduler at that address. Otherwise a
    ``LocalCluster`` of ``compute.dask_workers`` single-threaded worker *processes* (started on
    the first submitted task, closed with the flow): preprocessing is numpy/torch code that
    holds the GIL much of the time, so only processes run patches truly in parallel.

    Returns:
        A :class:`prefect_dask.DaskTaskRunner`, for ``some_flow.with_options(task_runner=...)``.
    """
    from prefect_dask import DaskTaskRunner  # lazily: dask costs ~1 s to import

    if compute.dask_address:
        return DaskTaskRunner(address=compute.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": compute.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,  # no web server (port clashes between parallel runs)
        },
    )


def map_in_order(task: Any, items: Sequence[Any], compute: ComputeConfig, **fixed: Any):
    """Submit ``task(batch, **fixed)`` for batches of ``compute.patches_per_task`` items on the
    running flow's task runner; yield the per-item results.

    All batches are submitted at once (the runner spreads them over its workers); the results
    come back in ``items``' order whatever order the workers finish in, so a reduction over
    them is the same as a sequential loop's.

    Args:
        task: a Prefect task whose first parameter takes a list of items and that returns one
            result per item.
        items: the work items (e.g. patch ids).
        compute: the ``compute`` config, to name the parameter at fault in errors.
        **fixed: the task's other arguments, the same for every item.

    Returns:
        An iterator over the results, in order; each future is dropped once read, so the
        cluster can free its result. A failed item raises its task's error when reached.

    Raises:
        ConfigError: the Dask scheduler cannot be reached or the local cluster cannot start.
    """
    from prefect import unmapped

    try:
        items, size = list(items), compute.patches_per_task
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        futures = task.map(batches, **{k: unmapped(v) for k, v in fixed.items()})
    except OSError as err:  # distributed raises OSError for connect timeouts and refused ports
        if compute.dask_address:
            raise ConfigError(
                f"compute.dask_address={compute.dask_address!r}: cannot reach the Dask scheduler "
                f"({err}). Start one there (`dask scheduler`, plus `dask worker <address>`), "
                "fix the address, or set compute.dask_address: null for a local cluster."
            ) from err
        raise ConfigError(
            f"compute.task_runner=dask: cannot start a local Dask cluster of "
            f"compute.dask_workers={compute.dask_workers} processes ({err}). Set "
            "compute.task_runner: sequential, or compute.dask_address to a running scheduler."
        ) from err

    def results():
        for i, future in enumerate(futures):
            futures[i] = None
            yield from future.result()

    return results()
