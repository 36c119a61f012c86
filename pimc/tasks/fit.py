"""The fit loop every downstream method trains with.

Deliberately short (nanoGPT style): AdamW, linear warmup (one epoch) + cosine decay, one
validation pass per epoch, early stopping after ``patience`` epochs without a better validation
metric. An epoch is ``epoch_steps`` optimiser steps (cycling over reshuffled passes of the
labelled rows), so every method and label budget gets the same step budget; with
``epoch_steps: null`` it is one pass. The best epoch's weights are kept in memory, restored at
the end and saved atomically (``torch.save`` of tensors only, readable with
``weights_only=True``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pimc.core.errors import TrainingDivergedError
from pimc.core.io import save_checkpoint
from pimc.core.task_config import TaskConfig
from pimc.tasks.common import TaskModel
from pimc.training.utils import AUGMENT, ORDER, cosine_with_warmup, decay_groups, make_generator

__all__ = [
    "FitResult",
    "Log",
    "Objective",
    "Schedule",
    "Setup",
    "epoch_indices",
    "fit",
    "index_batches",
    "transfer",
]

Log = Callable[[dict[str, float], int], None]
StepLoss = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


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


def transfer(cfg: TaskConfig, pretrained: bool) -> Schedule:
    """:func:`fit`'s :class:`Schedule` for a (non-)pretrained encoder.

    A pretrained encoder learns at ``lr * encoder_lr_scale`` after ``freeze_epochs`` head-only
    epochs; a random one has nothing to preserve, so it learns at the head's pace from the start.
    """
    if not pretrained:
        return Schedule(cfg.lr, 0)
    return Schedule(cfg.lr * cfg.encoder_lr_scale, cfg.freeze_epochs)
