"""The pretraining loop behind the ``pretrain`` stage (:mod:`pimc.stages.pretrain`).

nanoGPT-style: a small mutable :class:`TrainState` (step, history, running loss) and a fixed
:class:`Setup` (model, optimiser, data, config); each step, epoch end and checkpoint is a plain
function of them. Every batch is a pure function of ``(seed, step, rank)``, so a resumed run
ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pimc.core.config import Params
from pimc.core.errors import ConfigError, TrainingDivergedError
from pimc.core.io import load_checkpoint, save_checkpoint, write_json
from pimc.core.paths import BEST_CHECKPOINT, CHECKPOINT
from pimc.core.seeds import mix_seed
from pimc.models import PIMC
from pimc.models.build import build_model
from pimc.training.losses import SymmetricInfoNCE
from pimc.training.pairs import (
    PairDataset,
    contrast_inputs,
    resolve_source,
    rp_view,
)
from pimc.training.utils import (
    AUGMENT,
    DistInfo,
    adamw,
    all_gather_with_grad,
    autocast,
    batch_count,
    batch_loader,
    cosine_with_warmup,
    epoch_batches,
    make_generator,
    seed_everything,
)
from pimc.training.validation import evaluate

FINAL, HISTORY, TRAIN_CURVE = "final_metrics.json", "history.json", "train_curve.json"
RUN_KEYS = ("seconds", "samples_per_second", "resumed_from_step")  # not in FINAL: run-dependent
CURVE_EVERY = 5  # steps between train-curve rows (kept in last.pt: a resumed run has them all)
ENCODERS = ("rp_encoder", "image_encoder")
VAL_KEYS = ("val/loss", "val/top1", "val/top5", "val/parcel_top1", "val/class_top1")
Log = Callable[[dict[str, float], int], None]


def resolved_config(params: Params, source: str, world_size: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (JSON-normalised: tuples become lists)."""
    cfg = {k: asdict(getattr(params, k)) for k in ("model", "pretrain", "recurrence", "prepare")}
    cfg["runtime"] = {"source": source, "world_size": world_size}
    return json.loads(json.dumps(cfg))


@dataclass
class TrainState:
    """Where training stands: what ``last.pt`` holds besides weights, optimiser and RNG."""

    step: int = 0  # optimizer steps done
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    loss_sum: float = 0.0  # train loss summed over the current epoch's steps so far
    loss_steps: int = 0
    # The epoch of lowest val loss so far: its history entry and weights (what best.pt gets).
    best: dict[str, Any] = field(default_factory=dict)
    # ``step``, ``train/loss``, ``train/logit_scale``, ``train/lr`` every CURVE_EVERY steps.
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Setup:
    """What a run fixes before its first step (see :func:`_setup`)."""

    params: Params
    info: DistInfo
    device: torch.device
    source: str  # where the plots come from: materialized | on_the_fly
    train: PairDataset
    val: PairDataset
    model: PIMC  # unwrapped, also under DDP
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    mean: Tensor  # (C,) band mean/std of the train patches; 0/1 without image_norm
    std: Tensor
    norm: Callable[[Tensor], Tensor]  # patches to the device, standardised with mean/std
    groups: Tensor | None  # what a batch is drawn from (pretrain.batches): a patch, or anywhere
    steps_per_epoch: int

    @property
    def global_batch(self) -> int:
        return self.info.world_size * self.params.pretrain.batch_size

    @property
    def total(self) -> int:
        return self.steps_per_epoch * self.params.pretrain.epochs

    @property
    def config(self) -> dict[str, Any]:
        return resolved_config(self.params, self.source, self.info.world_size)


def _setup(params: Params, info: DistInfo, device: torch.device) -> Setup:
    """Datasets, band statistics, the seeded model, optimiser and LR schedule."""
    cfg, rcfg = params.pretrain, params.recurrence
    source = resolve_source(cfg, rcfg.materialize)
    rp_dir = rcfg.out if source == "materialized" else None
    train = PairDataset(params.prepare.out, cfg.train_folds, rp_dir, rcfg, seed=cfg.seed)
    val = PairDataset(params.prepare.out, cfg.val_folds, rp_dir, rcfg, seed=cfg.seed)
    global_batch = info.world_size * cfg.batch_size
    groups = train.patch_ids if cfg.batches == "by_patch" else None
    steps_per_epoch = batch_count(len(train), global_batch, groups)
    if steps_per_epoch == 0:
        where = "any one patch" if groups is not None else f"folds {list(cfg.train_folds)}"
        raise ConfigError(
            f"'pretrain.batch_size' x world size = {global_batch} exceeds the training pairs "
            f"of {where} ({len(train)} in all); lower the batch size"
        )
    bands = train.image_channels
    mean, std = train.image_stats() if cfg.image_norm else (torch.zeros(bands), torch.ones(bands))
    seed_everything(cfg.seed)  # the initial weights
    model = build_model(params.model, train.rp_channels, bands).to(device)
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    total = steps_per_epoch * cfg.epochs
    lr_lambda = partial(cosine_with_warmup, total=total, warmup=cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    norm = partial(
        _standardise, mean=mean.to(device)[:, None, None], std=std.to(device)[:, None, None]
    )
    return Setup(
        params, info, device, source, train, val, model, opt, sched, mean, std, norm, groups,
        steps_per_epoch,
    )  # fmt: skip


def _standardise(image: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(B, C, K, K)`` patches on the device of ``mean``/``std`` ``(C, 1, 1)``, standardised."""
    return (image.to(mean.device, non_blocking=True) - mean) / std


def _restore(setup: Setup) -> TrainState:
    """Load ``last.pt`` into the setup if it holds the same config; else start afresh.

    Starting afresh, rank 0 deletes the outputs of a finished run of another config.
    """
    out = Path(setup.params.pretrain.out)
    ckpt_file = out / CHECKPOINT
    ckpt = load_checkpoint(ckpt_file) if ckpt_file.is_file() else None
    if ckpt is not None and ckpt.get("config") == setup.config:
        setup.model.load_state_dict(ckpt["model"])
        setup.opt.load_state_dict(ckpt["optimizer"])
        setup.sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        loss_sum, loss_steps = ckpt["epoch_loss"]
        history, best = list(ckpt["history"]), dict(ckpt["best"])
        curve = list(ckpt.get("curve", []))
        return TrainState(ckpt["step"], history, loss_sum, loss_steps, best, curve)
    if setup.info.rank == 0:
        if ckpt is not None:
            print(f"pretrain: {ckpt_file} has another config; starting afresh")
        for name in (FINAL, HISTORY, TRAIN_CURVE, BEST_CHECKPOINT, *(f"{e}.pt" for e in ENCODERS)):
            (out / name).unlink(missing_ok=True)
    return TrainState()


def _save(setup: Setup, state: TrainState) -> None:
    """Write ``last.pt``: everything :func:`_restore` needs to continue exactly."""
    save_checkpoint(
        Path(setup.params.pretrain.out) / CHECKPOINT,
        model=setup.model.state_dict(),
        optimizer=setup.opt.state_dict(),
        scheduler=setup.sched.state_dict(),
        step=state.step,
        epoch=state.step // setup.steps_per_epoch,
        epoch_loss=[state.loss_sum, state.loss_steps],
        rng=torch.get_rng_state(),
        config=setup.config,
        model_config=setup.model.config,
        image_mean=setup.mean,
        image_std=setup.std,
        history=state.history,
        best=state.best,
        curve=state.curve,
    )


def _epoch_loader(setup: Setup, step: int) -> DataLoader:
    """The batches of ``step``'s epoch from ``step`` on, each with its own seed.

    A batch's seed mixes the config seed with its global step and rank, so the batch does not
    depend on where the run (re)started.
    """
    cfg, info, per_epoch = setup.params.pretrain, setup.info, setup.steps_per_epoch
    epoch, first = divmod(step, per_epoch)
    batches = epoch_batches(
        len(setup.train), cfg.batch_size, epoch, cfg.seed, info.world_size, info.rank, setup.groups
    )
    seeds = [
        mix_seed(cfg.seed, (epoch * per_epoch + j) * info.world_size + info.rank)
        for j in range(first, per_epoch)
    ]
    cuda = setup.device.type == "cuda"
    return batch_loader(setup.train, batches[first:], seeds, cfg.num_workers, cuda)


def _train_step(
    model: torch.nn.Module,
    setup: Setup,
    criterion: SymmetricInfoNCE,
    batch: dict[str, Tensor],
    step: int,
) -> tuple[float, float, float]:
    """One optimizer step on ``batch`` after its random crop, channel dropout and flips.

    Args:
        model: ``setup.model``, DDP-wrapped under torchrun.
        step: the 1-based number of this step (named if the loss is not finite).

    Raises:
        TrainingDivergedError: the loss is NaN/inf.

    Returns:
        The loss (of the global batch under DDP), the temperature ``exp(logit_scale)`` and
        the LR it used.
    """
    cfg, device = setup.params.pretrain, setup.device
    gen = make_generator(int(batch["seed"]), AUGMENT)  # the batch's own stream: replayable
    rp = rp_view(batch, cfg, setup.params.recurrence, device, gen)
    other = contrast_inputs(batch, cfg, setup.params.recurrence, device, setup.norm, gen, True)
    with autocast(device):
        out = model(rp, **other)
    scale = out["logit_scale"].float()
    groups = batch["parcel"].to(device) if cfg.negatives == "other_parcels" else None
    loss = criterion(out["pixel_features"].float(), out["image_features"].float(), scale, groups)
    if not torch.isfinite(loss):  # before the step: the last checkpoint stays clean
        patches = sorted(set(batch["patch_id"].tolist()))[:5]
        raise TrainingDivergedError(
            f"pretrain: loss is {float(loss.detach())} at step {step} (batch from patch(es) "
            f"{patches}): the inputs or weights are not finite, or pretrain.lr = {cfg.lr} is "
            "too high. Checkpoints before this step are kept."
        )
    temperature, lr = float(scale.detach()), setup.sched.get_last_lr()[0]
    setup.opt.zero_grad(set_to_none=True)
    loss.backward()
    setup.opt.step()
    setup.sched.step()
    setup.model.clamp_logit_scale_()
    value = loss.detach()
    if setup.info.distributed:  # log the global-batch loss, not this rank's share
        dist.all_reduce(value)
        value /= setup.info.world_size
    return float(value), temperature, lr


def _end_epoch(setup: Setup, state: TrainState, log: Log | None) -> float:
    """After an epoch's last step: validate and record it (rank 0), reset the epoch loss.

    Returns:
        The seconds spent validating.
    """
    seconds = 0.0
    if setup.info.rank == 0:
        start = time.perf_counter()
        metrics = evaluate(setup.model, setup.val, setup.params, setup.device, setup.norm)
        seconds = time.perf_counter() - start
        train_loss = state.loss_sum / max(state.loss_steps, 1)
        epoch = state.step // setup.steps_per_epoch
        state.history.append(
            {"epoch": epoch, "step": state.step, "train/loss": train_loss, **metrics}
        )
        if not state.best or metrics["val/loss"] < state.best["entry"]["val/loss"]:
            weights = {k: v.detach().cpu().clone() for k, v in setup.model.state_dict().items()}
            state.best = {"entry": dict(state.history[-1]), "model": weights}
        if log:
            log({**metrics, "train/epoch_loss": train_loss}, state.step)
    state.loss_sum, state.loss_steps = 0.0, 0
    return seconds


def train_loop(
    params: Params,
    info: DistInfo,
    device: torch.device,
    log: Log | None,
    progress: bool,
    max_steps: int | None,
) -> dict[str, Any]:
    """The loop of :func:`pretrain`, inside its distributed/determinism context."""
    start = time.perf_counter()
    setup = _setup(params, info, device)
    state = _restore(setup)
    resumed_from, main, total = state.step, info.rank == 0, setup.total
    stop = total if max_steps is None else min(total, max_steps)
    model, gather = setup.model, None
    if info.distributed:
        ids = [device] if device.type == "cuda" else None
        # rp_views leaves the image tower without gradients.
        unused = params.pretrain.objective == "rp_views"
        model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        gather = all_gather_with_grad
    criterion = SymmetricInfoNCE(gather_fn=gather, rank=info.rank)
    quiet = not (progress and main)
    bar = tqdm(total=total, initial=state.step, desc="pretrain", unit="step", disable=quiet)
    eval_seconds, train_start = 0.0, time.perf_counter()
    model.train()
    while state.step < stop:
        for batch in _epoch_loader(setup, state.step):
            loss, scale, lr = _train_step(model, setup, criterion, batch, state.step + 1)
            state.step += 1
            state.loss_sum, state.loss_steps = state.loss_sum + loss, state.loss_steps + 1
            row = {"train/loss": loss, "train/logit_scale": scale, "train/lr": lr}
            if main and state.step % CURVE_EVERY == 0:
                state.curve.append({"step": state.step, **row})
            if main and log:
                log(row, state.step)
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
            if state.step % setup.steps_per_epoch == 0:
                eval_seconds += _end_epoch(setup, state, log)
            if main and state.step % params.pretrain.checkpoint_every == 0 and state.step < total:
                _save(setup, state)
            if state.step == stop:
                break
    bar.close()
    train_seconds = time.perf_counter() - train_start - eval_seconds
    result = _result(setup, state, resumed_from, criterion, start, train_seconds)
    if main and state.step >= total:
        _write_outputs(setup, state, result)
    return result


def _result(
    setup: Setup,
    state: TrainState,
    resumed_from: int,
    criterion: SymmetricInfoNCE,
    start: float,
    train_seconds: float,
) -> dict[str, Any]:
    """What :func:`pretrain` returns; ``start`` is the call's ``time.perf_counter()``."""
    best = state.best.get("entry", {})
    last = state.history[-1] if state.history else {}
    trained = state.step - resumed_from
    n_val = len(setup.val)
    return {
        # The best epoch (by val loss): the weights downstream tasks get.
        **{k: best.get(k) for k in VAL_KEYS},
        "best_epoch": best.get("epoch"),
        "last_val_loss": last.get("val/loss"),
        "final_logit_scale": float(setup.model.logit_scale.detach().exp()),
        "chance_top1": 1 / n_val,
        "chance_top5": min(5, n_val) / n_val,
        "steps": state.step,
        "seconds": round(time.perf_counter() - start, 3),
        "samples_per_second": round(trained * setup.global_batch / train_seconds, 1)
        if trained
        else None,
        "global_batch": setup.global_batch,
        # What each pixel was scored against; a call that trained no step has the local batch.
        "candidates_per_query": criterion.candidates or setup.params.pretrain.batch_size,
        "world_size": setup.info.world_size,
        "resumed_from_step": resumed_from,
        "train_pairs": len(setup.train),
        "val_pairs": n_val,
        "stopped_early": state.step < setup.total,
    }


def _write_outputs(setup: Setup, state: TrainState, result: dict[str, Any]) -> None:
    """Rank 0, after the last step: final checkpoint, the best epoch's checkpoint and its two
    encoders, history, metrics."""
    out = Path(setup.params.pretrain.out)
    _save(setup, state)
    save_checkpoint(
        out / BEST_CHECKPOINT,
        model=state.best["model"],
        model_config=setup.model.config,
        config=setup.config,
        image_mean=setup.mean,
        image_std=setup.std,
        **{k.replace("/", "_"): v for k, v in state.best["entry"].items()},
    )
    # rp_views never trains the image tower: it is not an output.
    towers = ENCODERS[:1] if setup.params.pretrain.objective == "rp_views" else ENCODERS
    for name in towers:
        prefix = f"{name}."
        tower = {
            k[len(prefix) :]: v for k, v in state.best["model"].items() if k.startswith(prefix)
        }
        save_checkpoint(out / f"{name}.pt", **tower)
    write_json(out / HISTORY, state.history)
    write_json(out / TRAIN_CURVE, state.curve)
    # The folder is a DVC output: only what the weights determine, so that a resumed run
    # writes the same bytes as an uninterrupted one (timings go to MLflow via the result).
    write_json(out / FINAL, {k: v for k, v in result.items() if k not in RUN_KEYS})
