"""``finetune@<task>`` stages: one downstream task, its baselines, metrics, plots, model.

    python -m flows.finetune forecast | pixel_cls | eurosat

The task's PIMC model (``finetune.<task>.mode``) is logged to MLflow and registered as
``pimc-pastis-forecaster``, ``pimc-pastis-classifier`` or ``pimc-eurosat-classifier``.
"""

from __future__ import annotations

import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import (
    RUN_STATS,
    epoch_line,
    stage_args,
    stage_main,
    use_threads,
    without_run_stats,
)
from pimc import tracking
from pimc.core.config import Params, load_params
from pimc.core.io import write_json
from pimc.core.paths import (
    BASELINE_CACHE,
    BEST_CHECKPOINT,
    PLOTS_DIR,
    metrics_file,
    results_file,
    task_dir,
)
from pimc.core.typed_config import parse_overrides
from pimc.models.fold import fold_batchnorm
from pimc.stages.evaluate import headline_metrics
from pimc.tasks.registry import TASKS, get_task


# Retries only where I/O can fail transiently (a remote MLflow server).
@task(retries=2, retry_delay_seconds=10)
def fetch_registered_checkpoint(name: str, dest: Path) -> Path:
    """The pretraining checkpoint behind ``models:/<encoder>@champion``."""
    encoder = get_task(name).encoder_model
    return tracking.run_artifact_of(encoder, "champion", f"checkpoint/{BEST_CHECKPOINT}", dest)


def _log_epoch(run: tracking.TrackedRun, metrics: dict[str, float], epoch: int) -> None:
    run.log_metrics(metrics, epoch)
    epoch_line(metrics, epoch, unit="epoch")


@task
def run_task(name: str, params: Params, pretrained: Path | None, log: Any) -> dict[str, Any]:
    return get_task(name).run(
        params, pretrained=pretrained, out_dir=task_dir(name), log=log, cache=BASELINE_CACHE
    )


@task
def register(name: str, result: dict[str, Any], params: Params, run: tracking.TrackedRun) -> str:
    """Log the task's PIMC model with what ``pimc predict`` needs to build its input, tagged
    with its test headline metric; the first registered version becomes ``champion``.

    The pt2 program is of the model with BatchNorm folded into its convs (same outputs, less
    inference time); ``<method>.pt`` keeps the unfolded state dict."""
    spec, mode = get_task(name), getattr(params.finetune, name).mode
    version = run.register_model(
        fold_batchnorm(result["best_model"]),
        name,
        result["example_input"],
        spec.registered_model,
        metadata=spec.metadata(params, result),
    )
    tracking.tag_version(
        spec.registered_model,
        version,
        {
            f"metric.{spec.headline}": result["methods"][f"pimc_{mode}"][spec.headline],
            "higher_is_better": spec.higher_is_better,
        },
    )
    tracking.describe_model(spec.registered_model, version, spec.description())
    tracking.bootstrap_champion(spec.registered_model, version)
    if spec.predict_input is not None:  # patch tasks: the REST model of raw observations too
        register_raw(spec, version, params, run)
    return version


def register_raw(spec: Any, version: str, params: Params, run: tracking.TrackedRun) -> str:
    """Register ``<model>-raw`` (:mod:`pimc.tracking.serving`) around task model ``version``,
    with two pixels of the first test patch as its input example; returns its version."""
    from pimc.data.pastis import PASTIS
    from pimc.tracking.serving import RAW_COLUMNS, RAW_SUFFIX, raw_rows, register_raw_model

    uri, raw_name = f"models:/{spec.registered_model}/{version}", spec.registered_model + RAW_SUFFIX
    cfg = getattr(params.finetune, spec.name)
    sample = PASTIS(Path(params.data.root) / "PASTIS", folds=cfg.test_folds)[0]
    example = raw_rows(sample["image"].numpy(), sample["dates"], [(0, 0), (1, 1)])
    reused = tracking.version_tagged(raw_name, "pimc.task_model", uri)
    if reused is not None:  # this task model version has its twin (a re-run that reused it)
        return reused
    meta = tracking.model_metadata(uri)
    raw = register_raw_model(run, uri, meta, example, raw_name)
    tracking.tag_version(raw_name, raw, {"pimc.task_model": uri})
    columns = "; ".join(f"{k}: {v}" for k, v in list(RAW_COLUMNS.items())[:3])
    tracking.describe_model(
        raw_name, raw,
        f"{spec.registered_model} v{version} behind pimc's own preprocessing. Input: a table, "
        f"one row per pixel and date ({columns}; then B03..B12 likewise). Output: one answer "
        "per pixel (classes: class, class_name, confidence, p_<id>; forecasts: one row per "
        "pixel, index and step). Serve: pimc serve --model NAME@champion.",
    )  # fmt: skip
    tracking.bootstrap_champion(raw_name, raw)
    return raw


@flow(name="pimc-finetune", log_prints=True)
def finetune_flow(
    name: str, params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one task; write ``metrics/<task>.json`` (headline), ``reports/<task>.json`` (every
    method's metrics), ``plots/<task>/``; register the model."""
    if name not in TASKS:
        raise SystemExit(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    params = load_params(params_path, overrides)
    cfg = getattr(params.finetune, name)
    tags = use_threads(params)
    with tracking.start_run(f"finetune@{name}", {f"finetune.{name}": cfg}, tags=tags) as run:
        pretrained = None
        if cfg.pretrained == "registry":
            pretrained = fetch_registered_checkpoint(name, task_dir(name) / "registry")
        result = run_task(name, params, pretrained, partial(_log_epoch, run))
        plots = PLOTS_DIR / name
        shutil.rmtree(plots, ignore_errors=True)
        plots.mkdir(parents=True)
        for png in result["plots"]:
            shutil.copy(png, plots / Path(png).name)
            run.log_artifact(png, "plots")
        metrics = {
            "headline": result["headline"],
            "higher_is_better": result["higher_is_better"],
            "methods": result["methods"],
        }
        write_json(results_file(name), without_run_stats(metrics))
        write_json(metrics_file(name), headline_metrics(metrics, cfg.mode))
        run.log_metrics(
            {
                # Held-out test metrics under test/ (as val/ per epoch); run stats apart.
                f"{'run' if key in RUN_STATS else 'test'}/{method}/{key}": value
                for method, values in result["methods"].items()
                for key, value in values.items()
                if isinstance(value, int | float)
            }
        )
        run.log_dict(metrics, f"{name}_results.json")
        version = register(name, result, params, run)
        run.set_tags(
            {
                "registered.version": version,
                "pretrained": result["pretrained"],
                # Methods whose results were reused: their inputs, config and code are unchanged.
                "finetune.cached": ",".join(result["cached"]) or "none",
            }
        )
    headline = result["headline"]
    table = {m: v.get(headline) for m, v in result["methods"].items()}
    print(f"{name}: {headline} per method: {table}")
    return result


if __name__ == "__main__":
    name = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else ""
    args = stage_args(__doc__)
    with stage_main(f"finetune@{name}"):
        finetune_flow(name, args.params, parse_overrides(args.overrides))
