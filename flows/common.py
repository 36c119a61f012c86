"""Helpers shared by the stage flows: argument parsing, metrics, the Dask runner."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
    "epoch_line",
    "map_in_order",
    "RUN_STATS",
    "record_metrics",
    "stage_args",
    "stage_main",
    "stage_tags",
    "without_run_stats",
]


def stage_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    add_set_argument(parser, "override a parameter, e.g. -S data.seed=3 (repeatable)")
    return parser.parse_args(argv)


def epoch_line(metrics: dict[str, float], step: int, unit: str = "step") -> None:
    """One line of per-epoch metrics in the running flow's Prefect log (what operators watch
    in the dashboard while a stage trains), e.g. ``step 240: val/loss=3.912 val/top1=0.041``."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    text = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    try:
        get_run_logger().info("%s %d: %s", unit, step, text)
    except MissingContextError:  # called outside a flow (library use, tests): stay quiet
        pass


def stage_tags(stage: str) -> AbstractContextManager:
    """Prefect tags for a stage's flow run: ``stage:<stage>`` and, when the pipeline flow
    started it, ``pipeline:<its flow-run id>``, so the dashboard groups a pipeline's stages."""
    from prefect import tags

    names = [f"stage:{stage}"]
    if os.environ.get(tracking.PIPELINE_RUN_ENV):
        names.append(f"pipeline:{os.environ[tracking.PIPELINE_RUN_ENV]}")
    return tags(*names)


@contextmanager
def stage_main(stage: str) -> Iterator[None]:
    """How a stage's ``__main__`` runs its flow: with :func:`stage_tags`, and a pimc error (bad
    input, bad params, a missing file) ending the process with its one-line message, as the
    ``pimc`` CLI does, rather than a traceback (Prefect's log above it keeps the details)."""
    from pimc.core.errors import PimcError

    try:
        with stage_tags(stage):
            yield
    except PimcError as err:
        raise SystemExit(f"{stage}: {err}") from None
    except Exception as err:  # a server outage is the user's to fix: say so in one line
        prefect_down = prefect_outage_message(err)
        if prefect_down is not None and tracking.finished_here():
            # The work is done and recorded in MLflow; only Prefect's record of the flow run
            # is incomplete. Failing would make DVC run the whole stage again.
            print(f"{stage}: finished, but {prefect_down}", file=sys.stderr)
            return
        line = tracking.outage_message(err) or prefect_down
        if line is None:
            raise
        raise SystemExit(f"{stage}: {line}") from None


_PREFECT_DOWN = ("Failed to reach API", "ConnectError", "All connection attempts failed")


def use_threads(params: Any) -> dict[str, str]:
    """Apply ``compute.torch_threads`` (see :func:`pimc.core.threads.set_threads`); returns
    the run tag that records it."""
    from pimc.core.threads import set_threads

    threads = set_threads(params.compute.torch_threads)
    print(f"torch threads: {threads}")
    return {"torch.threads": str(threads)}


def prefect_outage_message(err: BaseException) -> str | None:
    """One line for an exception that means "the Prefect API did not answer", else None."""
    text = f"{type(err).__name__}: {err}"
    api = os.environ.get("PREFECT_API_URL")
    if not api or not any(m in text for m in _PREFECT_DOWN):
        return None
    return (
        f"the Prefect API at {api} did not answer ({text.splitlines()[0][:160]}). Start it "
        "(`make servers-up`), or unset PREFECT_API_URL to run with a temporary server."
    )


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """``-S key=value`` (a ``dvc exp run`` experiment) and ``--force`` of pipeline commands."""
    add_set_argument(parser, "run as `dvc exp run -S KEY=VALUE` (repeatable), e.g. -S data.seed=3")
    parser.add_argument("--force", action="store_true", help="re-run every stage")


#: Run statistics: logged to MLflow, never written to the git-tracked metrics or results (they
#: change on every run, so `dvc metrics diff` would be timing noise).
RUN_STATS = frozenset(
    {"seconds", "train_seconds", "samples_per_second", "rps_per_second", "peak_rss_mib",
     "resumed_patches", "resumed_from_step", "plots_built", "bytes_written", "world_size"}
)  # fmt: skip


def without_run_stats(results: Any) -> Any:
    """``results`` (nested dicts) less every :data:`RUN_STATS` key, at any depth."""
    if not isinstance(results, dict):
        return results
    return {k: without_run_stats(v) for k, v in results.items() if k not in RUN_STATS}


def record_metrics(
    run: tracking.TrackedRun,
    stage: str,
    stats: dict[str, Any],
    headline: Sequence[str],
    prefix: str = "",
) -> dict[str, float]:
    """Log the numeric entries of ``stats`` to MLflow (keys prefixed); write the ``headline``
    ones as the DVC metrics file ``metrics/<stage>.json``. Returns those."""
    numeric = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
    run.log_metrics({f"{prefix}{k}": v for k, v in numeric.items()})
    metrics = {k: numeric[k] for k in headline if k in numeric}
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
