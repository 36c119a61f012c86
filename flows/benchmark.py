"""``benchmark`` stage (``make benchmark``; ``benchmarks/dvc.yaml``): PIMC over seeds and
label budgets, with the paired comparisons that can reject its claims.

    python -m flows.benchmark [--params params.yaml] [-S benchmark.seeds=[0,1,2]]

Writes ``reports/benchmark.{md,csv}``, ``plots/label_efficiency.png`` and
``reports/benchmark.json``; logs them to MLflow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import stage_args, stage_main, use_threads
from pimc import tracking
from pimc.core.config import Params, load_params
from pimc.core.paths import PLOTS_DIR, REPORTS_DIR, results_file
from pimc.core.typed_config import parse_overrides
from pimc.stages.benchmark import run_benchmark
from pimc.stages.benchmark_report import write_outputs

STAGE = "benchmark"


@task
def run_all(params: Params) -> Any:
    return run_benchmark(params, log=print)


@flow(name="pimc-benchmark", log_prints=True)
def benchmark_flow(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every replicate and cell (resuming finished ones), then the report."""
    params = load_params(params_path, overrides)
    sections = {"benchmark": params.benchmark, "finetune": params.finetune}
    with tracking.start_run(STAGE, sections, tags=use_threads(params)) as run:
        rows = run_all(params)
        report = write_outputs(
            rows, REPORTS_DIR, PLOTS_DIR / "label_efficiency.png", results_file(STAGE)
        )
        run.log_metrics(report["metrics"])
        for path in report["files"]:
            run.log_artifact(path, "reports")
    print(report["comparisons"].to_string(float_format=lambda v: f"{v:.4f}"))
    return report


if __name__ == "__main__":
    args = stage_args(__doc__)
    with stage_main(STAGE):
        benchmark_flow(args.params, parse_overrides(args.overrides))
