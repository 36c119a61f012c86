"""``evaluate`` stage: one ablation table across the downstream tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import stage_args, stage_main
from pimc import tracking
from pimc.core.io import write_json
from pimc.core.paths import REPORTS_DIR, metrics_file
from pimc.core.task_config import TASK_NAMES
from pimc.stages.evaluate import ablation_table, load_results, pimc_vs_random, write_report

STAGE = "evaluate"


@task
def build_report() -> dict[str, Any]:
    results = load_results(TASK_NAMES)
    table = ablation_table(results)
    comparison = pimc_vs_random(results)
    files = write_report(table, comparison, REPORTS_DIR)
    return {"comparison": comparison, "files": [str(f) for f in files], "table": table}


@flow(name="pimc-evaluate", log_prints=True)
def evaluate_flow() -> dict[str, Any]:
    """Write ``reports/ablations.{md,csv}`` and ``metrics/evaluate.json`` (on how many tasks
    this run's best PIMC method beats its best random init; one seed: see make benchmark)."""
    with tracking.start_run(STAGE, {"evaluate": {"tasks": list(TASK_NAMES)}}) as run:
        report = build_report()
        metrics = {f"{t}/{k}": v for t, c in report["comparison"].items() for k, v in c.items()}
        run.log_metrics(metrics)
        for path in report["files"]:
            run.log_artifact(path, "reports")
        ahead = sum(c["pimc_better"] for c in report["comparison"].values())
        write_json(metrics_file(STAGE), {"tasks_pimc_ahead": ahead})
    print(report["table"].to_string(float_format=lambda v: f"{v:.4f}"))
    return report


if __name__ == "__main__":
    stage_args(__doc__)
    with stage_main(STAGE):
        evaluate_flow()
