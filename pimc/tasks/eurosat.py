"""EuroSAT scene classification with PIMC's image tower.

The image encoder was pretrained on 9 x 9 PASTIS patches of the same 10 bands, so EuroSAT
tiles are read with those bands in PASTIS order and standardised with the pretraining
checkpoint's band mean/std (``image_mean``/``image_std``), the statistics its first layer was
trained for; without a checkpoint (a model passed in, or ``pretrained: none``) the training
tiles' own per-band statistics are used. Every method sees the same normalised inputs and the
same augmentation (a random flip/rot90 of each training tile: scenes have no orientation).

Methods: the pretrained tower as a linear probe (``pimc_linear``) and fully fine-tuned
(``pimc_finetune``), each against the same architecture from random weights
(``random_init_linear``, ``random_init_finetune``). Splits: the official split files.
Metrics: accuracy (headline, higher is better), macro-F1, mIoU, per-class IoU, confusion matrix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pimc.core.config import Params
from pimc.core.errors import ConfigError
from pimc.core.paths import eurosat_root
from pimc.core.task_config import EurosatConfig
from pimc.data.eurosat import EuroSAT
from pimc.plots import task_curves
from pimc.tasks.budget import label_subset
from pimc.tasks.cache import Cached, MethodCache
from pimc.tasks.common import Pretrained, TaskModel, finish, resolve_pretrained, tower_backbone
from pimc.tasks.fit import Log, Setup, transfer
from pimc.tasks.methods import Method, method_plan
from pimc.tasks.pixel_cls import Labelled, confusion_png, train_classifier
from pimc.training.pairs import augment_images, image_stats
from pimc.training.utils import resolve_device, seed_everything

__all__ = ["load_eurosat", "run_eurosat"]

HEADLINE = "accuracy"
HIGHER_IS_BETTER = True  # direction of HEADLINE
MODEL_CARD = (  # the registered model's description in MLflow
    "EuroSAT-MS land-cover classifier. Input: float32 (B, C, R, R), the tile's bands in "
    "metadata 'bands' order, in EuroSAT-MS's stored units (reflectance x 1e4; the model "
    "normalises them itself), resized to R = metadata 'resize' (None: 64). "
    "Output: float32 logits (B, 10); logit k is metadata 'class_names'[k]."
)


def load_eurosat(root: str | Path, cfg: EurosatConfig) -> dict[str, dict[str, Tensor]]:
    """Every tile of the three official splits, in memory.

    Returns:
        Per split ``{"image": float32 (N, C, R, R), "label": int64 (N,)}`` with C =
        ``len(cfg.bands)`` and R = ``cfg.resize or 64``.
    """
    out = {}
    for split in ("train", "val", "test"):
        data = EuroSAT(root, split, bands=cfg.bands)
        image = torch.stack([data[i]["image"] for i in range(len(data))])
        if cfg.resize is not None and cfg.resize != image.shape[-1]:
            image = F.interpolate(
                image, size=(cfg.resize, cfg.resize), mode="bilinear", antialias=True
            )
        out[split] = {"image": image, "label": torch.as_tensor(data.targets, dtype=torch.long)}
    return out


def _normalisation(source: Pretrained, train: Tensor) -> tuple[Tensor, Tensor, str]:
    mean, std = source.image_mean, source.image_std
    if mean is not None and std is not None and len(mean) == train.shape[1]:
        return mean.float(), std.float(), "pretrain"
    mean, std = image_stats(train)
    return mean, std, "eurosat_train"


def _check_bands(source: Pretrained, cfg: EurosatConfig) -> int:
    """The number of bands, after checking the pretrained image tower reads as many."""
    bands = len(cfg.bands)
    if source.model is not None and getattr(source.model, "image_channels", bands) != bands:
        raise ConfigError(
            f"'finetune.eurosat.bands' has {bands} bands but the image tower was pretrained "
            f"on {source.model.image_channels}; use the pretraining bands, in PASTIS order"
        )
    return bands


def run_eurosat(
    params: Params,
    *,
    pretrained: nn.Module | str | Path | None = None,
    out_dir: Path,
    progress: bool = True,
    log: Log | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Train and compare the four EuroSAT methods; see :func:`pimc.tasks.common.finish`.

    Args:
        params: Uses ``data.root``, ``model`` and ``finetune.eurosat``.
        pretrained: A PIMC / image encoder / checkpoint path (``pretrained: registry``).
        out_dir: Checkpoints ``<method>.pt``, figures and ``results.json`` go here.
        progress: Show progress bars.
        log: ``log(metrics, epoch)`` with ``<method>/train/loss``, ``<method>/val/...``.
        cache: A :class:`~pimc.tasks.cache.MethodCache` folder for the random-init methods,
            or None.
    """
    start, cfg = time.perf_counter(), params.finetune.eurosat
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = Setup(cfg, device := resolve_device(cfg.device), out_dir, progress, log)
    source = resolve_pretrained(pretrained, cfg, params)
    data = load_eurosat(eurosat_root(params.data.root), cfg)
    labelled = label_subset(len(data["train"]["label"]), cfg.label_fraction, cfg.seed,
                            data["train"]["label"])  # fmt: skip
    data["train"] = {k: v[labelled] for k, v in data["train"].items()}
    bands = _check_bands(source, cfg)
    inputs = {s: data[s]["image"] for s in data}
    labels = {s: data[s]["label"] for s in data}
    names = list(EuroSAT.classes)

    store = MethodCache(cache, "eurosat", params, [eurosat_root(params.data.root)], device)
    norms: dict[str, str] = {}

    def fit_one(spec: Method) -> tuple[Cached, TaskModel]:
        seed_everything(cfg.seed)
        use_pretrained = spec.pretrained and source.model is not None
        # A pretrained tower reads bands as it was pretrained (its first layer expects that
        # scale); a random one gets EuroSAT's own statistics, so neither is handicapped.
        mean, std, norms[spec.name] = _normalisation(
            source if use_pretrained else Pretrained(None), data["train"]["image"]
        )
        weights = source.model if use_pretrained else None
        backbone = tower_backbone(weights, "image_encoder", bands, params.model)
        model = TaskModel(backbone, len(names), frozen=spec.frozen, in_mean=mean, in_std=std)
        metrics, curve, cm = train_classifier(
            model.to(device),
            method=spec.name,
            data=Labelled(inputs, labels, names),
            setup=setup,
            schedule=transfer(cfg, use_pretrained),
            augment=augment_images,
            select=HEADLINE,
            extra={"band_mean": mean, "band_std": std, "bands": list(cfg.bands)},
        )
        return Cached(metrics, curve, {"confusion": cm.numpy()}), model

    methods, curves, models, plots = {}, {}, {}, []
    for spec in method_plan(cfg):
        done, models[spec.name] = store.result(spec, fit_one)
        methods[spec.name], curves[spec.name] = done.metrics, done.curves
        plots.append(confusion_png(done, names, out_dir, spec.name))

    plots.append(task_curves(curves, f"val/{HEADLINE}", out_dir / "eurosat_curves.png", "EuroSAT"))
    result = finish(
        out_dir,
        "eurosat",
        methods=methods,
        headline=HEADLINE,
        higher_is_better=HIGHER_IS_BETTER,
        curves=curves,
        plots=plots,
        best_model=models[f"pimc_{cfg.mode}"],
        example_input=inputs["test"][:4].numpy(),
        source=source,
        seconds=time.perf_counter() - start,
        cached=store.hits,
    )
    return {**result, "normalisation": norms[f"pimc_{cfg.mode}"]}


def deploy_metadata(params: Params, result: dict[str, Any]) -> dict[str, Any]:
    """The bands (in the order the model reads them), tile resize and class names (logit
    ``k`` is ``class_names[k]``)."""
    cfg = params.finetune.eurosat
    return {"bands": list(cfg.bands), "resize": cfg.resize, "class_names": list(EuroSAT.classes)}
