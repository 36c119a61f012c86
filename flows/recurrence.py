"""``recurrence`` stage: recurrence plots of the prepared series (or only stats + gallery)."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import params_from, parse_overrides, record_metrics, stage_args
from pimc import tracking
from pimc.config import RecurrenceConfig
from pimc.paths import PLOTS_DIR
from pimc.rp_stage import run_recurrence

STAGE = "recurrence"
GALLERY = PLOTS_DIR / "rp_gallery.png"


@task
def build_plots(prepared: str, cfg: RecurrenceConfig) -> dict[str, Any]:
    return run_recurrence(prepared, cfg, GALLERY)


@flow(name="pimc-recurrence", log_prints=True)
def recurrence_flow(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """Write ``recurrence.out``, ``plots/rp_gallery.png`` and ``metrics/recurrence.json``."""
    params = params_from(params_path, overrides)
    cfg = params.recurrence
    with tracking.start_run(STAGE, {"recurrence": cfg}) as run:
        stats = build_plots(params.prepare.out, cfg)
        metrics = record_metrics(run, STAGE, stats)
        run.log_artifact(GALLERY, "plots")
    print(f"recurrence: {metrics}")
    return stats


if __name__ == "__main__":
    args = stage_args(__doc__)
    recurrence_flow(args.params, parse_overrides(args.overrides))
