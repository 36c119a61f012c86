"""``prepare`` stage: PASTIS -> per-pixel index series + image patches (pixel/image pairs)."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import params_from, parse_overrides, record_metrics, stage_args
from pimc import tracking
from pimc.config import PrepareConfig
from pimc.paths import pastis_root
from pimc.prepare import run_prepare

STAGE = "prepare"


@task
def prepare_pairs(root: str, cfg: PrepareConfig) -> dict[str, Any]:
    return run_prepare(root, cfg)


@flow(name="pimc-prepare", log_prints=True)
def prepare_flow(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Write ``prepare.out`` (shards, manifest, meta) and ``metrics/prepare.json``."""
    params = params_from(params_path, overrides)
    cfg = params.prepare
    with tracking.start_run(STAGE, {"prepare": cfg, "data": params.data}) as run:
        stats = prepare_pairs(str(pastis_root(params.data.root)), cfg)
        metrics = record_metrics(run, STAGE, stats)
        run.log_dict(stats, "prepare_stats.json")
    print(f"prepare: {metrics}")
    return stats


if __name__ == "__main__":
    args = stage_args(__doc__)
    prepare_flow(args.params, parse_overrides(args.overrides))
