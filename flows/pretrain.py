"""``pretrain`` stage: contrastive pretraining of the two PIMC towers, encoders registered.

Single process here; for several GPUs or nodes run the same stage under torchrun:
``torchrun --nproc_per_node=N -m pimc.stages.pretrain --params params.yaml`` (DDP, global
negatives).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from prefect import flow, task

from flows.common import epoch_line, record_metrics, stage_args, stage_main, use_threads
from pimc import tracking
from pimc.core.config import Params, load_params
from pimc.core.io import write_json
from pimc.core.paths import BEST_CHECKPOINT, ENCODER_MODELS, PLOTS_DIR
from pimc.core.typed_config import parse_overrides
from pimc.models.build import load_pretrained_model
from pimc.plots import learning_curves
from pimc.stages.pretrain import pretrain
from pimc.training.pretrain_loop import CURVE_EVERY, HISTORY, TRAIN_CURVE

STAGE = "pretrain"
# What the best checkpoint achieved on the val folds (the rest, with timings, is in MLflow).
HEADLINE = ("val/loss", "val/class_top1", "best_epoch")
CURVES_TRAIN = PLOTS_DIR / "pretrain_train.json"
CURVES_VAL = PLOTS_DIR / "pretrain_val.json"
CURVES_PNG = PLOTS_DIR / "pretrain_curves.png"


class CurveLogger:
    """``log(metrics, step)`` callback: forwards to MLflow and, per epoch, to the Prefect log.

    The DVC plot rows come from the training state instead (``train_curve.json``,
    ``history.json``): a resumed run has them from the start.
    """

    def __init__(self, run: tracking.TrackedRun, every: int = CURVE_EVERY) -> None:
        self.run, self.every = run, every

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        if any(k.startswith("val/") for k in metrics):
            self.run.log_metrics(metrics, step)
            epoch_line(metrics, step)
        elif step % self.every == 0:  # per-step MLflow writes to SQLite cost more than a step
            self.run.log_metrics(metrics, step)


@task
def train(params: Params, logger: CurveLogger) -> dict[str, Any]:
    return pretrain(params, log=logger)


ENCODER_CARDS = {  # the registered encoders' MLflow descriptions
    "rp_encoder": "PIMC recurrence-plot tower (ResNet, torchvision layout). Input: float32 "
    "(B, I, S, S), the recurrence plots of a pixel's index series (pimc.preprocessing). "
    "Output: float32 (B, D) embeddings (L2-normalise them to compare). Full checkpoint: "
    "the run's checkpoint/ artifact.",
    "image_encoder": "PIMC image-patch tower. Input: float32 (B, C, k, k), the Sentinel-2 "
    "bands of a k x k patch around the pixel, standardised with the checkpoint's "
    "image_mean/image_std. Output: float32 (B, D) embeddings (L2-normalise them to compare). "
    "Full checkpoint: the run's checkpoint/ artifact.",
}


@task
def register_encoders(
    params: Params, run: tracking.TrackedRun, result: dict[str, Any]
) -> dict[str, str]:
    """Log both encoders (pt2) and register them; the first version becomes ``champion``."""
    model, _ = load_pretrained_model(Path(params.pretrain.out) / BEST_CHECKPOINT)
    size, k = params.recurrence.size or 32, params.prepare.patch_size
    examples = {
        "rp_encoder": torch.zeros(2, model.config["rp_channels"], size, size),
        "image_encoder": torch.zeros(2, model.config["image_channels"], k, k),
    }
    versions = {}
    for attr, name in ENCODER_MODELS.items():
        version = run.register_model(getattr(model, attr), attr, examples[attr].numpy(), name)
        tracking.tag_version(name, version, {"metric.val_top1": result["val/top1"]})
        tracking.describe_model(name, version, ENCODER_CARDS[attr])
        tracking.bootstrap_champion(name, version)
        versions[name] = version
    return versions


@flow(name="pimc-pretrain", log_prints=True)
def pretrain_flow(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train, write ``metrics/pretrain.json`` + curves, register the encoders in MLflow."""
    params = load_params(params_path, overrides)
    sections = {k: getattr(params, k) for k in ("model", "pretrain", "recurrence")}
    with tracking.start_run(STAGE, sections, tags=use_threads(params)) as run:
        logger = CurveLogger(run)
        result = train(params, logger)
        out = Path(params.pretrain.out)
        curve, history = (json.loads((out / f).read_text()) for f in (TRAIN_CURVE, HISTORY))
        write_json(CURVES_TRAIN, curve)
        write_json(CURVES_VAL, history)
        learning_curves(curve, history, CURVES_PNG, "PIMC contrastive pretraining")
        run.log_artifact(CURVES_PNG, "plots")
        # The full checkpoint travels with the run, so `pretrained: registry` can rebuild PIMC.
        run.log_artifact(Path(params.pretrain.out) / BEST_CHECKPOINT, "checkpoint")
        versions = register_encoders(params, run, result)
        record_metrics(run, STAGE, result, HEADLINE, prefix="final/")
        run.set_tags({f"registered.{k}": v for k, v in versions.items()})
    print(f"pretrain: top1 {result['val/top1']:.3f} (chance {result['chance_top1']:.4f})")
    return result


if __name__ == "__main__":
    args = stage_args(__doc__)
    with stage_main(STAGE):
        pretrain_flow(args.params, parse_overrides(args.overrides))
