"""``recurrence`` stage: recurrence plots of the prepared series (or only stats + gallery).

``compute.task_runner: sequential`` (default) runs the stage as one task in this process;
``dask`` builds each patch's plots as one task on a Dask cluster (prefect-dask; see
:func:`flows.common.dask_task_runner`) and adds up the gallery here. Both give the same files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import dask_task_runner, map_in_order, stage_args, stage_main, use_threads
from pimc import tracking
from pimc.core.config import ComputeConfig, RecurrenceConfig, load_params
from pimc.core.paths import PLOTS_DIR
from pimc.core.typed_config import parse_overrides
from pimc.stages.recurrence import (
    RecurrencePlan,
    finalize_recurrence,
    plan_recurrence,
    recurrence_one,
    run_recurrence,
)

STAGE = "recurrence"
GALLERY = PLOTS_DIR / "rp_gallery.png"


@task
def build_plots(prepared: str, cfg: RecurrenceConfig) -> dict[str, Any]:
    return run_recurrence(prepared, cfg, GALLERY)


# NO_CACHE: Prefect would otherwise hash every input (the per-patch class sums) for a cache key
# that nothing reads; the stage resumes from its own finished shards instead.
@task(cache_policy=NO_CACHE)
def plan_plots(prepared: str, cfg: RecurrenceConfig) -> RecurrencePlan:
    return plan_recurrence(prepared, cfg)


@task(cache_policy=NO_CACHE)
def patch_plots(patch_ids: list[int], prepared: str, cfg: RecurrenceConfig) -> list[dict]:
    return [recurrence_one(prepared, cfg, pid) for pid in patch_ids]


@task(cache_policy=NO_CACHE)
def finalize_plots(plan: RecurrencePlan, results: Any) -> dict[str, Any]:
    return finalize_recurrence(plan, results, GALLERY)


@flow(name="pimc-recurrence-fan-out")
def recurrence_fan_out(
    prepared: str, cfg: RecurrenceConfig, compute: ComputeConfig
) -> dict[str, Any]:
    """Plan; one task per ``compute.patches_per_task`` patches on the flow's (Dask) task
    runner; finalize."""
    plan = plan_plots(prepared, cfg)
    # Workers may run elsewhere (compute.dask_address): give them absolute paths. Only where a
    # plot file is written changes, so the plan's fingerprint keeps the given paths.
    work_cfg = replace(cfg, out=str(Path(cfg.out).resolve()))
    work_prepared = str(Path(prepared).resolve())
    results = map_in_order(
        patch_plots, plan.patch_ids, compute, prepared=work_prepared, cfg=work_cfg
    )
    # An iterator, not a list: finalize folds each patch's class sums in and drops them.
    return finalize_plots(plan, results)


@flow(name="pimc-recurrence", log_prints=True)
def recurrence_flow(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """Write ``recurrence.out`` and ``plots/rp_gallery.png``; log the run's statistics."""
    params = load_params(params_path, overrides)
    cfg, compute = params.recurrence, params.compute
    tags = {"compute.task_runner": compute.task_runner, **use_threads(params)}
    with tracking.start_run(STAGE, {"recurrence": cfg}, tags=tags) as run:
        if compute.task_runner == "dask":
            fan_out = recurrence_fan_out.with_options(task_runner=dask_task_runner(compute))
            stats = fan_out(params.prepare.out, cfg, compute)
        else:
            stats = build_plots(params.prepare.out, cfg)
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, int | float)})
        run.log_artifact(GALLERY, "plots")
    print(f"recurrence: {stats}")
    return stats


if __name__ == "__main__":
    args = stage_args(__doc__)
    with stage_main(STAGE):
        recurrence_flow(args.params, parse_overrides(args.overrides))
