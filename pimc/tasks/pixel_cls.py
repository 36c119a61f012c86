"""Pixel classification: a PASTIS pixel's crop type from the RP of its whole season.

Input: the full-season RP ``(I, S, S)``, built per batch from the prepared series
(:class:`pimc.tasks.lazy.PlotRows`; the ``recurrence`` stage's stored plots are not read).
The void label (``ignore_index``) is never a target; background is kept or dropped
(``keep_background``). Classes are re-indexed to those present in the training folds; val/test
pixels of a class never seen in training cannot be predicted and are left out of the metrics
(their count is reported as ``unseen_pixels``).

Metrics: overall accuracy, macro-F1 (headline, higher is better), mIoU and the IoU of every class
by its PASTIS name (see :mod:`pimc.metrics` for how absent classes are handled).

Methods: see :data:`pimc.tasks.methods.METHODS` (``single_index_<name>``: the PIMC encoder
fine-tuned with only that index's RP channel kept, the others zeroed).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pimc.core.config import Params, RecurrenceConfig
from pimc.core.task_config import PixelClsConfig
from pimc.data.pastis import PASTIS
from pimc.metrics import confusion_matrix, macro_f1, miou, overall_accuracy, per_class_iou
from pimc.plots import confusion_matrix as plot_confusion_matrix
from pimc.plots import task_curves
from pimc.tasks.baselines import CNN1d
from pimc.tasks.budget import label_subset, row_subset
from pimc.tasks.cache import Cached, MethodCache
from pimc.tasks.common import (
    Pretrained,
    TaskModel,
    finish,
    pastis_metadata,
    resolve_sources,
    series_stats,
    tower_backbone,
)
from pimc.tasks.fit import Log, Objective, Schedule, Setup, fit, transfer
from pimc.tasks.lazy import PlotRows
from pimc.tasks.methods import Method, method_plan
from pimc.training.pairs import PairDataset
from pimc.training.utils import resolve_device, seed_everything
from pimc.transforms.recurrence import build_rps

__all__ = ["classification_metrics", "run_pixel_cls", "train_classifier"]

HEADLINE = "macro_f1"
HIGHER_IS_BETTER = True  # direction of HEADLINE
MODEL_CARD = (  # the registered model's description in MLflow
    "PASTIS pixel crop classifier. Input: float32 (B, I, S, S), the recurrence plots of a "
    "pixel's full-season index series (metadata 'indices', 'recurrence'). Output: float32 "
    "logits (B, C); logit k is PASTIS class id metadata 'class_ids'[k] "
    "('class_names'[k])."
)
UNSEEN = -1  # target of val/test pixels whose class has no training pixel


def _slug(name: str) -> str:
    # MLflow metric names allow no commas: "Fruits, vegetables, flowers" -> fruits_vegetables_...
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def classification_metrics(
    pred: Tensor, target: Tensor, names: Sequence[str]
) -> tuple[dict, Tensor]:
    """OA, macro-F1, mIoU and ``iou_<class>`` of predictions ``(N,)`` vs targets ``(N,)``
    (``UNSEEN`` targets skipped); also returns the ``(C, C)`` confusion matrix."""
    cm = confusion_matrix(pred, target, len(names), ignore_index=UNSEEN)
    out = {"accuracy": overall_accuracy(cm), "macro_f1": macro_f1(cm), "miou": miou(cm)}
    for name, iou in zip(names, per_class_iou(cm).tolist(), strict=True):
        if not math.isnan(iou):  # a class absent from targets and predictions has no IoU
            out[f"iou_{_slug(name)}"] = iou
    return out, cm


@dataclass(frozen=True)
class Labelled:
    """The splits a classifier trains, validates and tests on.

    Attributes:
        inputs: ``train``/``val``/``test`` raw inputs ``(N, ...)`` (CPU; plots as
            :class:`~pimc.tasks.lazy.PlotRows`).
        labels: The same splits' class indices ``(N,)``, ``UNSEEN`` allowed in val/test.
        names: The C class names.
    """

    inputs: dict[str, Tensor | PlotRows]
    labels: dict[str, Tensor]
    names: Sequence[str]


def train_classifier(
    model: TaskModel,
    *,
    method: str,
    data: Labelled,
    setup: Setup,
    schedule: Schedule,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    select: str = HEADLINE,
) -> tuple[dict[str, float], list[dict[str, float]], Tensor]:
    """Fit a classifier with early stopping on validation ``select`` (``macro_f1`` or
    ``accuracy``), then test it.

    Args:
        model: On ``setup.device``; a frozen one without ``augment`` trains on cached features.
        method: Name (checkpoint ``<out_dir>/<method>.pt``, log keys).
        data: Inputs, labels and class names.
        setup: Config, device, output folder, progress, logging.
        schedule: The encoder's learning rate and head-only epochs (see :func:`transfer`).
        augment: ``augment(x, generator)`` applied to training batches (raw inputs).
        extra: More checkpoint entries.
        select: The validation metric that picks the best epoch.

    Returns:
        Test metrics (+ ``best_epoch``, ``train_seconds``), curves and the test confusion matrix.
    """
    device, inputs, labels, names = setup.device, data.inputs, data.labels, data.names
    pre = model.frozen and augment is None
    if pre:  # a linear probe without augmentation: encode once
        inputs = {s: model.encode(x, device) for s, x in inputs.items()}

    def logits(m: nn.Module, x: Tensor) -> Tensor:
        return m.head(x) if pre else m(x)

    def step_loss(m: nn.Module, idx: Tensor, gen: torch.Generator) -> Tensor:
        x = inputs["train"][idx]
        if augment is not None:
            x = augment(x, gen)
        return F.cross_entropy(logits(m, x.to(device)), labels["train"][idx].to(device))

    def predict(m: nn.Module, split: str) -> Tensor:
        return torch.cat([logits(m, c.to(device)).cpu() for c in inputs[split].split(512)])

    def validate(m: nn.Module) -> dict[str, float]:
        return _validation_metrics(predict(m, "val"), labels["val"], names)

    objective = Objective(step_loss, len(labels["train"]), validate, f"val/{select}", True)
    extra = {"class_names": list(names), **(extra or {})}
    result = fit(
        model, name=method, objective=objective, setup=setup, schedule=schedule, extra=extra
    )
    model.eval()
    with torch.no_grad():
        metrics, cm = classification_metrics(
            predict(model, "test").argmax(1), labels["test"], names
        )
    metrics.update(best_epoch=result.best_epoch, train_seconds=result.seconds)
    return metrics, result.curves, cm


def confusion_png(done: Cached, names: Sequence[str], out_dir: Path, method: str) -> Path:
    """``<out_dir>/confusion_<method>.png`` of a (trained or cached) result's test confusion."""
    cm = torch.from_numpy(done.arrays["confusion"])
    return plot_confusion_matrix(cm, names, out_dir / f"confusion_{method}.png", method)


def _validation_metrics(out: Tensor, y: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Loss (over pixels of seen classes), accuracy and macro-F1 of logits ``(N, C)``."""
    seen = y != UNSEEN
    metrics, _ = classification_metrics(out.argmax(1), y, names)
    loss = F.cross_entropy(out[seen], y[seen]) if seen.any() else torch.tensor(float("nan"))
    return {
        "val/loss": float(loss),
        "val/accuracy": metrics["accuracy"],
        "val/macro_f1": metrics["macro_f1"],
    }


def _load_split(
    params: Params, folds: Sequence[int], select: Callable[[Tensor], Tensor]
) -> dict[str, Any]:
    """The rows ``select(labels)`` of ``folds``: series in RAM, plots built per batch."""
    pairs = PairDataset(params.prepare.out, folds, images=False)
    rows = select(pairs.labels)
    series, valid = pairs.series[rows], pairs.valid[rows]
    return {
        "rp": PlotRows(series, valid, params.recurrence),
        "series": series,
        "valid": valid,
        "labels": pairs.labels[rows],
        "names": pairs.meta["indices"],
    }


def _rows(labels: Tensor, cfg: PixelClsConfig, split: str) -> Tensor:
    """Rows of a split that are used: targets only (no void, background if kept), then the
    labelled share of the training rows or the val subset; every test row."""
    keep = labels != cfg.ignore_index
    if not cfg.keep_background:
        keep &= labels != PASTIS.background_index
    kept = keep.nonzero().flatten()
    if split == "train":
        return kept[label_subset(len(kept), cfg.label_fraction, cfg.seed, labels[kept])]
    return kept[row_subset(len(kept), cfg.val_pixels if split == "val" else None, cfg.seed)]


def load_pixel_data(params: Params, cfg: PixelClsConfig) -> dict[str, Any]:
    """RPs, series and re-indexed labels of the train/val/test folds: the labelled share of
    the training pixels (``label_fraction``), ``val_pixels`` of the val folds and every test
    pixel (void and, without ``keep_background``, background left out).

    Returns:
        ``class_ids`` (original PASTIS ids of the C training classes), ``class_names``,
        ``index_names`` and per split ``{"rp": (N, I, S, S), "series": (N, I, L),
        "y": (N,)}`` with ``y`` in ``[0, C)`` or ``UNSEEN``; ``unseen_pixels``.
    """
    folds = (cfg.train_folds, cfg.val_folds, cfg.test_folds)
    if cfg.rotation is not None:
        folds = PASTIS.rotations[cfg.rotation]
    data: dict[str, Any] = {}
    lookup = None
    unseen = 0
    for split, split_folds in zip(("train", "val", "test"), folds, strict=True):
        d = _load_split(params, split_folds, partial(_rows, cfg=cfg, split=split))
        if lookup is None:  # the training classes define the label space
            ids = d["labels"].unique()
            lookup = torch.full((int(ids.max()) + 1,), UNSEEN, dtype=torch.long)
            lookup[ids] = torch.arange(len(ids))
            data["class_ids"] = ids.tolist()
            data["class_names"] = [PASTIS.classes[i] for i in ids.tolist()]
            data["index_names"] = list(d["names"])
        labels = d["labels"]
        y = torch.full_like(labels, UNSEEN)
        known = labels < len(lookup)
        y[known] = lookup[labels[known]]
        unseen += int((y == UNSEEN).sum())
        data[split] = {"rp": d["rp"], "series": d["series"], "valid": d["valid"], "y": y}
    data["unseen_pixels"] = unseen
    return data


def run_pixel_cls(
    params: Params,
    *,
    pretrained: nn.Module | str | Path | None = None,
    out_dir: Path,
    progress: bool = True,
    log: Log | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Train and compare every pixel-classification method; see
    :func:`pimc.tasks.common.finish` for the result (plus ``class_ids``/``class_names`` and
    ``cached``: the methods whose result came from ``cache``, a :class:`MethodCache` folder)."""
    start, cfg = time.perf_counter(), params.finetune.pixel_cls
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    setup = Setup(cfg, device, out_dir, progress, log)
    data = load_pixel_data(params, cfg)
    names, index_names = data["class_names"], data["index_names"]
    plan = method_plan(cfg, index_names)
    sources = resolve_sources(pretrained, cfg, params, plan)
    source = sources["pimc"]
    labels = {s: data[s]["y"] for s in ("train", "val", "test")}
    stats = series_stats(data["train"]["series"], data["train"]["valid"])
    _add_normalised_rps(data, params.recurrence, plan)
    store = MethodCache(cache, "pixel_cls", params, [Path(params.prepare.out)], device)

    def fit_one(spec: Method) -> tuple[Cached, TaskModel]:
        seed_everything(cfg.seed)
        weights = sources[spec.weights]
        pretrained_weights = spec.pretrained and weights.model is not None
        model, key = _build(spec, weights if pretrained_weights else None, params, data, stats)
        metrics, curve, cm = train_classifier(
            model.to(device),
            method=spec.name,
            data=Labelled({s: data[s][key] for s in ("train", "val", "test")}, labels, names),
            setup=setup,
            schedule=transfer(cfg, pretrained_weights),
            extra={"class_ids": data["class_ids"]},
        )
        return Cached(metrics, curve, {"confusion": cm.numpy()}), model

    methods, curves, models, plots = {}, {}, {}, []
    for spec in plan:
        done, models[spec.name] = store.result(spec, fit_one)
        methods[spec.name], curves[spec.name] = done.metrics, done.curves
        plots.append(confusion_png(done, names, out_dir, spec.name))

    title, path = "Pixel classification", out_dir / "pixel_cls_curves.png"
    plots.append(task_curves(curves, f"val/{HEADLINE}", path, title))
    best = f"pimc_{cfg.mode}"
    result = finish(
        out_dir,
        "pixel_cls",
        methods=methods,
        headline=HEADLINE,
        higher_is_better=HIGHER_IS_BETTER,
        curves=curves,
        plots=plots,
        best_model=models[best],
        example_input=data["test"]["rp"][:4].numpy(),
        source=source,
        seconds=time.perf_counter() - start,
        cached=store.hits,
    )
    return {
        **result,
        "class_ids": data["class_ids"],
        "class_names": names,
        "unseen_pixels": data["unseen_pixels"],
    }


def deploy_metadata(params: Params, result: dict[str, Any]) -> dict[str, Any]:
    """Preprocessing + the class ids the model's logits map to (logit ``k`` is PASTIS class
    ``class_ids[k]``)."""
    return {
        **pastis_metadata(params),
        "class_ids": [int(c) for c in result["class_ids"]],
        "class_names": list(result["class_names"]),
    }


def predict_input(
    series: Tensor, valid: Tensor, rec_cfg: RecurrenceConfig, meta: dict[str, Any]
) -> Tensor:
    """The classifier's input: full-season RPs ``(B, I, S, S)`` of series ``(B, I, L)``."""
    return build_rps(series, valid, rec_cfg)


def decode(
    out: Tensor, valid: Tensor, meta: dict[str, Any], grid: Any, shape: tuple[int, int]
) -> dict[str, Any]:
    """Logits ``(H*W, C)`` -> ``classes`` ``(H, W)`` uint8 PASTIS ids, ``confidence``
    ``(H, W)`` float32 (softmax probability of the predicted class) and ``probabilities``
    ``(C, H, W)`` float32 (of the classes ``meta["class_ids"]``, in that order)."""
    probs = F.softmax(out, dim=1)
    confidence, index = probs.max(1)
    ids = torch.tensor(meta["class_ids"], dtype=torch.uint8)
    return {
        "classes": ids[index].reshape(shape).numpy(),
        "confidence": confidence.reshape(shape).numpy().astype(np.float32),
        "probabilities": probs.T.reshape(-1, *shape).numpy().astype(np.float32),
    }


def _rp_key(spec: Method, rcfg: RecurrenceConfig) -> str:
    """The data key of ``spec``'s plots: the pipeline's (``rp``) or its own normalisation's."""
    if spec.normalize_rp is None or spec.normalize_rp == rcfg.normalize:
        return "rp"
    return f"rp_normalize_{spec.normalize_rp}"


def _add_normalised_rps(
    data: dict[str, Any], rcfg: RecurrenceConfig, plan: Sequence[Method]
) -> None:
    """Per split, the plots that a method of ``plan`` builds with another
    ``recurrence.normalize`` (from the same series, under :func:`_rp_key`; built per batch)."""
    for spec in plan:
        key = _rp_key(spec, rcfg)
        if key == "rp" or key in data["train"]:
            continue
        cfg = replace(rcfg, normalize=spec.normalize_rp)
        for split in ("train", "val", "test"):
            d = data[split]
            d[key] = PlotRows(d["series"], d["valid"], cfg)


def _build(
    spec: Method,
    source: Pretrained | None,
    params: Params,
    data: dict[str, Any],
    stats: tuple[Tensor, Tensor],
) -> tuple[TaskModel, str]:
    """One method's classifier (random weights drawn from the seeded global RNG, or copied
    from ``source``) and the data key it reads (``series``, or see :func:`_rp_key`)."""
    n_idx, n_classes = len(data["index_names"]), len(data["class_names"])
    kw: dict[str, Any] = {"frozen": spec.frozen}
    if spec.input == "series":
        backbone, key = CNN1d(n_idx), "series"
        # Without level the per-index mean is gone, so only the spread is standardised.
        mean = stats[0] if spec.level else torch.zeros_like(stats[0])
        kw.update(in_mean=mean, in_std=stats[1], center=not spec.level)
    else:
        weights = source.model if source is not None else None
        backbone = tower_backbone(weights, "rp_encoder", n_idx, params.model)
        key = _rp_key(spec, params.recurrence)
    if spec.channel is not None:
        kw["channel_mask"] = (torch.arange(n_idx) == spec.channel).float()
    return TaskModel(backbone, n_classes, **kw), key
