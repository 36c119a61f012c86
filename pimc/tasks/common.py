"""What the downstream tasks share: the task model, the fit loop, result plumbing.

Pretrained-tower loading lives in :mod:`pimc.tasks.pretrained` (re-exported here).

The fit loop is deliberately short (nanoGPT style): AdamW, linear warmup (one epoch) + cosine
decay, one validation pass per epoch, early stopping after ``patience`` epochs without a better
validation metric. An epoch is ``epoch_steps`` optimiser steps (cycling over reshuffled passes
of the labelled rows), so every method and label budget gets the same step budget; with
``epoch_steps: null`` it is one pass. The best epoch's weights are kept in memory, restored at
the end and saved atomically (``torch.save`` of tensors only, readable with ``weights_only=True``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pimc.core.config import Params
from pimc.core.errors import TrainingDivergedError
from pimc.core.io import save_checkpoint
from pimc.core.task_config import TaskConfig
from pimc.core.typed_config import to_dict
from pimc.tasks.pretrained import (
    Pretrained,
    resolve_pretrained,
    resolve_sources,
    tower_backbone,
)
from pimc.training.utils import (
    AUGMENT,
    ORDER,
    cosine_with_warmup,
    decay_groups,
    make_generator,
)

__all__ = [
    "FitResult",
    "Objective",
    "Schedule",
    "Setup",
    "Pretrained",
    "TaskModel",
    "fit",
    "index_batches",
    "resolve_pretrained",
    "resolve_sources",
    "series_stats",
    "tower_backbone",
]

Log = Callable[[dict[str, float], int], None]
StepLoss = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


class TaskModel(nn.Module):
    """Backbone + linear head, self-contained from raw input to output.

    The head is ``BatchNorm1d(affine=False) -> Linear`` (MAE's linear probe): frozen features
    of a contrastive or random network have arbitrary scales, and standardising them lets one
    learning rate suit every method. Using the same head for fine-tuning keeps the architecture
    identical across methods.

    Args:
        backbone: Maps ``(B, C, ...)`` to ``(B, num_features)``.
        out_dim: Outputs of the head.
        extra_dim: Size of extra features concatenated to the backbone's (see :meth:`head_input`).
        frozen: Linear probing: the backbone gets no gradient and stays in eval mode, so its
            BatchNorm statistics are the pretrained ones too.
        channel_mask: ``(C,)`` multiplied into the input (zeroes channels; single-index runs).
        in_mean: ``(C,)`` per-channel mean subtracted from the input (with ``in_std``).
        in_std: ``(C,)`` per-channel std the input is divided by.
        center: Subtract each sample's own mean over its last dim first (per channel): a
            series loses its level, keeping its shape (the ``cnn1d_nolevel`` ablation).
    """

    def __init__(
        self,
        backbone: nn.Module,
        out_dim: int,
        extra_dim: int = 0,
        frozen: bool = False,
        channel_mask: Tensor | None = None,
        in_mean: Tensor | None = None,
        in_std: Tensor | None = None,
        center: bool = False,
    ) -> None:
        super().__init__()
        self.center = center
        self.backbone = backbone
        features = int(backbone.num_features) + extra_dim
        self.head = nn.Sequential(
            nn.BatchNorm1d(features, affine=False), nn.Linear(features, out_dim)
        )
        self.frozen = False
        self.freeze(frozen)
        self.register_buffer("channel_mask", channel_mask)
        self.register_buffer("in_mean", in_mean)
        self.register_buffer("in_std", in_std)

    def freeze(self, frozen: bool = True) -> TaskModel:
        """Stop (or restart) training the backbone: no gradients, BatchNorm in eval mode."""
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen BN statistics: a linear probe must not adapt them
        return self

    def prepare(self, x: Tensor) -> Tensor:
        """Standardise and mask the channels (dim 1) of a raw input ``(B, C, ...)``."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        if self.in_mean is not None:
            x = (x - self.in_mean.view(shape)) / self.in_std.view(shape)
        if self.channel_mask is not None:
            x = x * self.channel_mask.view(shape)
        return x

    def head_input(
        self, x: Tensor, extra: Tensor | None = None, precomputed: bool = False
    ) -> Tensor:
        """Backbone features of a raw input, with ``extra`` ``(B, extra_dim)`` appended.

        With ``precomputed``, ``x`` already holds the features (see :meth:`encode`).
        """
        z = x if precomputed else self.backbone(self.prepare(x))
        return z if extra is None else torch.cat([z, extra], dim=1)

    @torch.no_grad()
    def encode(self, x: Tensor, device: torch.device, chunk: int = 1024) -> Tensor:
        """Backbone features ``(N, num_features)`` (on the CPU) of raw inputs, in eval mode.

        A frozen backbone without input augmentation gives every sample the same features in
        every epoch, so linear probes compute them once instead of once per epoch.
        """
        was_training = self.training
        self.eval()
        out = [self.backbone(self.prepare(c.to(device))).cpu() for c in x.split(chunk)]
        self.train(was_training)
        return torch.cat(out)

    def forward(self, x: Tensor) -> Tensor:
        """Raw input ``(B, C, ...)`` -> ``(B, out_dim)``."""
        return self.head(self.head_input(x))


# ---------------------------------------------------------------------------------------------
# Fit loop
# ---------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` returns; the model itself holds the best weights afterwards."""

    curves: list[dict[str, float]]
    best_epoch: int
    best: float
    seconds: float


@dataclass(frozen=True)
class Setup:
    """Where and how a task trains its methods; the same for every method of one run.

    Attributes:
        cfg: The task config: seed, epochs, batch size, lr, weight decay, patience.
        device: Where models train.
        out_dir: Each method's best checkpoint is saved as ``<out_dir>/<method>.pt``.
        progress: Show a bar over epochs.
        log: ``log(metrics, epoch)`` after every epoch (``<method>/train/loss``, ...).
    """

    cfg: TaskConfig
    device: torch.device
    out_dir: Path
    progress: bool = True
    log: Log | None = None


@dataclass(frozen=True)
class Schedule:
    """How the encoder learns (see :func:`transfer`).

    Attributes:
        encoder_lr: Learning rate of the backbone (the head uses ``cfg.lr``).
        freeze_epochs: Train only the head for this many epochs first, then everything (LP-FT,
            Kumar et al. 2022: a random head's first gradients would distort pretrained
            features). Ignored for models frozen throughout.
    """

    encoder_lr: float
    freeze_epochs: int = 0


@dataclass(frozen=True)
class Objective:
    """What one method minimises and how its epochs are judged.

    Attributes:
        step_loss: ``step_loss(model, idx, generator)`` -> scalar loss of training rows ``idx``
            ``(B,)``; ``generator`` drives any augmentation.
        n_train: Number of training rows.
        validate: Validation metrics ``{"val/...": value}``; called in eval mode, no grad.
        metric: The key of ``validate``'s result that selects the best epoch.
        higher_is_better: Direction of ``metric``.
    """

    step_loss: StepLoss
    n_train: int
    validate: Callable[[nn.Module], dict[str, float]]
    metric: str
    higher_is_better: bool


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A shuffled epoch of index batches; an incomplete last batch joins the previous one.

    Merging (rather than dropping) keeps every sample in every epoch while never handing
    BatchNorm a batch of 1.
    """
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        tail = batches.pop()
        batches[-1] = torch.cat([batches[-1], tail])
    return batches


def epoch_indices(
    n: int, batch_size: int, seed: int, epoch: int, steps: int | None
) -> list[Tensor]:
    """The index batches of one epoch, each pass reshuffled by ``(seed, epoch, pass)``.

    ``steps`` None: one pass over the ``n`` rows. Otherwise exactly ``steps`` batches: a
    small label set is passed over several times within the epoch, while a set of more than
    ``steps`` batches contributes its first ``steps`` (a new random subset every epoch).
    """
    batches: list[Tensor] = []
    for k in range(steps or 1):
        order = make_generator(seed, ORDER, epoch * 10_000 + k)
        batches += index_batches(n, batch_size, order)
        if steps is None or len(batches) >= steps:
            break
    return batches if steps is None else batches[:steps]


def _param_groups(model: TaskModel, lr: float, weight_decay: float, encoder_lr: float) -> list:
    groups = []
    for part, part_lr in ((model.backbone, encoder_lr), (model.head, lr)):
        params = [p for p in part.parameters() if p.requires_grad]
        groups += decay_groups(params, weight_decay, lr=part_lr)
    return [g for g in groups if g["params"]]


def fit(
    model: TaskModel,
    *,
    name: str,
    objective: Objective,
    setup: Setup,
    schedule: Schedule,
    extra: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with early stopping on ``objective.validate(model)[objective.metric]``.

    Args:
        model: Already on its device.
        name: Method name (progress bar, log keys ``<name>/...``, checkpoint ``<name>.pt``).
        objective: Loss, validation and the metric that picks the best epoch.
        setup: Config, device, output folder, progress and logging.
        schedule: The encoder's learning rate and head-only epochs.
        extra: More (weights-only-safe) entries for the checkpoint, e.g. class ids.

    Returns:
        Curves (one row per epoch: ``epoch``, ``train/loss``, ``lr`` and ``val/*``), the best
        epoch (1-based) and its metric, and the seconds spent.
    """
    start, cfg = time.perf_counter(), setup.cfg
    opt = torch.optim.AdamW(_param_groups(model, cfg.lr, cfg.weight_decay, schedule.encoder_lr))
    per_epoch = len(epoch_indices(objective.n_train, cfg.batch_size, cfg.seed, 0, cfg.epoch_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(cosine_with_warmup, total=per_epoch * cfg.epochs, warmup=per_epoch)
    )
    aug = make_generator(cfg.seed, AUGMENT)  # independent of the batch order
    best = _Best(objective.higher_is_better)
    curves: list[dict[str, float]] = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=name, unit="epoch", disable=not setup.progress)
    probe_only = model.frozen
    for epoch in bar:
        if not probe_only:
            model.freeze(epoch <= schedule.freeze_epochs)  # AdamW skips params without grads
        loss = _train_epoch(model, objective, cfg, epoch, opt, sched, aug, name)
        model.eval()
        with torch.no_grad():
            val = objective.validate(model)
        curves.append({"epoch": epoch, "train/loss": loss, "lr": opt.param_groups[-1]["lr"], **val})
        best.update(val[objective.metric], epoch, model)
        bar.set_postfix({objective.metric: f"{val[objective.metric]:.4f}"})
        if setup.log is not None:
            setup.log(
                {f"{name}/{k}": float(v) for k, v in curves[-1].items() if k != "epoch"}, epoch
            )
        if best.waited >= cfg.patience:
            break
    bar.close()
    model.load_state_dict(best.state)
    save_checkpoint(
        setup.out_dir / f"{name}.pt",
        model={k: v.cpu() for k, v in best.state.items()},
        method=name,
        epoch=best.epoch,
        metric=objective.metric,
        value=float(best.value),
        center=model.center,  # not in the state dict: rebuilding the model needs it
        curves=curves,
        **dict(extra or {}),
    )
    return FitResult(curves, best.epoch, float(best.value), time.perf_counter() - start)


def _train_epoch(
    model: TaskModel,
    objective: Objective,
    cfg: TaskConfig,
    epoch: int,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    aug: torch.Generator,
    name: str = "finetune",
) -> float:
    """One epoch of shuffled batches; returns the mean training loss.

    Raises:
        TrainingDivergedError: a batch's loss is NaN/inf (checked before the step is taken).
    """
    model.train()
    total, count = 0.0, 0
    batches = epoch_indices(objective.n_train, cfg.batch_size, cfg.seed, epoch, cfg.epoch_steps)
    for step, idx in enumerate(batches, start=1):
        loss = objective.step_loss(model, idx, aug)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"{name}: training loss is {float(loss.detach())} at epoch {epoch}, step "
                f"{step} (training rows {idx[:4].tolist()}...): the inputs or weights are not "
                "finite, or "
                f"{cfg.SECTION}.lr = {cfg.lr} is too high. Nothing was saved from this run."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total, count = total + float(loss.detach()) * len(idx), count + len(idx)
    return total / count


class _Best:
    """The best epoch so far, its metric and a copy of its weights (early stopping)."""

    def __init__(self, higher_is_better: bool) -> None:
        self.higher_is_better = higher_is_better
        self.value, self.epoch, self.state, self.waited = math.nan, 0, None, 0

    def update(self, value: float, epoch: int, model: nn.Module) -> None:
        # NaN never wins, but the first epoch is always kept so there is a state to restore.
        better = value > self.value if self.higher_is_better else value < self.value
        if self.state is None or better:
            self.value, self.epoch, self.waited = value, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1


# ---------------------------------------------------------------------------------------------
# Task plumbing
# ---------------------------------------------------------------------------------------------


def series_stats(series: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-index mean and std ``(I,)`` of series ``(N, I, L)`` over their valid dates ``(N, L)``
    (padded dates of ``time_axis: pad`` hold no value)."""
    w = valid[:, None, :].double()
    count = w.sum() if len(series) else torch.tensor(1.0)
    mean = (series.double() * w).sum((0, 2)) / count
    var = ((series.double() - mean[:, None]) * w).square().sum((0, 2)) / (count - 1).clamp_min(1)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()


def transfer(cfg: TaskConfig, pretrained: bool) -> Schedule:
    """:func:`fit`'s :class:`Schedule` for a (non-)pretrained encoder.

    A pretrained encoder learns at ``lr * encoder_lr_scale`` after ``freeze_epochs`` head-only
    epochs; a random one has nothing to preserve, so it learns at the head's pace from the start.
    """
    if not pretrained:
        return Schedule(cfg.lr, 0)
    return Schedule(cfg.lr * cfg.encoder_lr_scale, cfg.freeze_epochs)


def finish(
    out_dir: Path,
    task: str,
    *,
    methods: dict[str, dict[str, float]],
    headline: str,
    higher_is_better: bool,
    curves: dict[str, list[dict[str, float]]],
    plots: list[Path],
    best_model: nn.Module,
    example_input: np.ndarray,
    source: Pretrained,
    seconds: float,
) -> dict[str, Any]:
    """The result dict of a ``run_<task>``; also written (without the model) as
    ``<out_dir>/results.json``."""
    from pimc.core.io import write_json

    summary = {
        "task": task,
        "headline": headline,
        "higher_is_better": higher_is_better,
        "pretrained": source.source,
        "seconds": round(seconds, 3),
        "methods": methods,
    }
    write_json(out_dir / "results.json", summary)
    return {
        **summary,
        "best_model": best_model.cpu().eval(),
        "example_input": example_input,
        "plots": [str(p) for p in plots],
        "curves": curves,
    }


def pastis_metadata(params: Params) -> dict[str, Any]:
    """Deployment metadata of a PASTIS-pixel task: what rebuilds its input from a raw patch
    (the ``prepare`` and ``recurrence`` configs and the index names)."""
    return {
        "prepare": to_dict(params.prepare),
        "recurrence": to_dict(params.recurrence),
        "indices": list(params.prepare.indices),
    }
