"""``prepare`` stage: PASTIS -> per-pixel index series + image patches (pixel/image pairs).

``compute.task_runner: sequential`` (default) runs the stage as one task in this process;
``dask`` plans here, prepares the patches as one task each on a Dask cluster (prefect-dask;
see :func:`flows.common.dask_task_runner`) and writes the tables here. Both give the same files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import (
    dask_task_runner,
    map_in_order,
    record_metrics,
    stage_args,
    stage_main,
    use_threads,
)
from pimc import tracking
from pimc.core.config import ComputeConfig, PrepareConfig, load_params
from pimc.core.paths import pastis_root
from pimc.core.typed_config import parse_overrides
from pimc.stages.prepare import (
    PreparePlan,
    finalize_prepare,
    open_pastis,
    plan_prepare,
    prepare_patches,
    run_prepare,
)

STAGE = "prepare"


@task
def prepare_pairs(root: str, cfg: PrepareConfig) -> dict[str, Any]:
    return run_prepare(root, cfg)


# NO_CACHE: Prefect would otherwise hash every input (the per-patch results) for a cache key
# that nothing reads; the stage resumes from its own finished shards instead.
@task(cache_policy=NO_CACHE)
def plan_pairs(root: str, cfg: PrepareConfig) -> PreparePlan:
    return plan_prepare(open_pastis(root, cfg), cfg)


# Each task opens the dataset once for its batch: tasks may run in any worker process.
@task(cache_policy=NO_CACHE)
def prepare_patch_pairs(patch_ids: list[int], root: str, cfg: PrepareConfig) -> list[dict]:
    return prepare_patches(root, cfg, patch_ids)


@task(cache_policy=NO_CACHE)
def finalize_pairs(plan: PreparePlan, results: list[dict[str, Any]]) -> dict[str, Any]:
    return finalize_prepare(open_pastis(plan.root, plan.cfg), plan, results)


@flow(name="pimc-prepare-fan-out")
def prepare_fan_out(root: str, cfg: PrepareConfig, compute: ComputeConfig) -> dict[str, Any]:
    """Plan; one task per ``compute.patches_per_task`` unfinished patches on the flow's
    (Dask) task runner; finalize."""
    plan = plan_pairs(root, cfg)
    # Workers may run elsewhere (compute.dask_address): give them absolute paths. Only where a
    # shard is written changes, so the plan's fingerprint and meta.json keep the given paths.
    work_cfg = replace(cfg, out=str(Path(cfg.out).resolve()))
    work_root = str(Path(root).resolve())
    results = map_in_order(prepare_patch_pairs, plan.todo, compute, root=work_root, cfg=work_cfg)
    return finalize_pairs(plan, list(results))


@flow(name="pimc-prepare", log_prints=True)
def prepare_flow(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Write ``prepare.out`` (shards, manifest, meta) and ``metrics/prepare.json``."""
    params = load_params(params_path, overrides)
    cfg, compute = params.prepare, params.compute
    root = str(pastis_root(params.data.root))
    tags = {"compute.task_runner": compute.task_runner, **use_threads(params)}
    with tracking.start_run(STAGE, {"prepare": cfg, "data": params.data}, tags=tags) as run:
        if compute.task_runner == "dask":
            fan_out = prepare_fan_out.with_options(task_runner=dask_task_runner(compute))
            stats = fan_out(root, cfg, compute)
        else:
            stats = prepare_pairs(root, cfg)
        metrics = record_metrics(run, STAGE, stats, ("pixels",))
        run.log_dict(stats, "prepare_stats.json")
    print(f"prepare: {metrics}")
    return stats


if __name__ == "__main__":
    args = stage_args(__doc__)
    with stage_main(STAGE):
        prepare_flow(args.params, parse_overrides(args.overrides))
