"""The ``pretrain`` stage: CLIP-style contrastive pretraining of :class:`~pimc.models.PIMC`.

One linear loop: AdamW, linear warmup + cosine decay, symmetric InfoNCE with in-batch negatives
(gathered across ranks under ``torchrun``), validation by pixel→image retrieval on held-out
folds after every epoch. Rank 0 writes to ``pretrain.out``::

    last.pt              the checkpoint (every ``checkpoint_every`` steps and at the end)
    final_metrics.json   what :func:`pretrain` returns
    history.json         one entry per epoch (train/val loss, val top-1/top-5)
    rp_encoder.pt        state dicts of the two encoders, for downstream tasks
    image_encoder.pt

Resuming: if ``last.pt`` exists and holds the same resolved config, training continues from its
step. Each batch (order, date picks, augmentations) is a pure function of ``(seed, step, rank)``
and CPU runs use deterministic algorithms, so a killed and re-run job ends with exactly the
weights of an uninterrupted one.

Under ``torchrun`` this module runs the stage itself (``--params``, ``-S key=value``); the
tracked entry point lives in ``flows/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pimc.core.config import Params, load_params
from pimc.core.errors import ConfigError
from pimc.core.io import atomic_path, load_checkpoint, save_checkpoint, write_json
from pimc.core.paths import CHECKPOINT
from pimc.models import PIMC
from pimc.models.build import build_model
from pimc.training.losses import SymmetricInfoNCE
from pimc.training.pairs import (
    PairDataset,
    augment_images,
    batch_rps,
    channel_dropout,
    resolve_source,
)
from pimc.training.utils import (
    AUGMENT,
    EVAL,
    DistInfo,
    adamw,
    all_gather_with_grad,
    autocast,
    batch_loader,
    cosine_with_warmup,
    epoch_batches,
    make_generator,
    resolve_device,
    retrieval_accuracy,
    seed_everything,
    setup_distributed,
)

__all__ = [
    "evaluate",
    "pretrain",
    "retrieval_accuracy",
]

FINAL, HISTORY = "final_metrics.json", "history.json"
ENCODERS = ("rp_encoder", "image_encoder")
Log = Callable[[dict[str, float], int], None]


def resolved_config(params: Params, source: str, world_size: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (JSON-normalised: tuples become lists)."""
    cfg = {k: asdict(getattr(params, k)) for k in ("model", "pretrain", "recurrence", "prepare")}
    cfg["runtime"] = {"source": source, "world_size": world_size}
    return json.loads(json.dumps(cfg))


@torch.no_grad()
def evaluate(
    model: PIMC,
    pairs: PairDataset,
    params: Params,
    device: torch.device,
    norm: Callable[[Tensor], Tensor],
) -> dict[str, float]:
    """Validation loss and pixel→image retrieval over the whole of ``pairs``.

    ``val/loss`` is the InfoNCE of consecutive batches of ``pretrain.batch_size`` pairs (as the
    training loss, so the two are comparable); retrieval ranks all N pairs against each other.
    """
    was_training = model.training
    model.eval()
    criterion = SymmetricInfoNCE()
    gen = make_generator(params.pretrain.seed, EVAL)  # same date picks every epoch
    size = params.pretrain.batch_size
    pixels, images, total, counted = [], [], 0.0, 0
    for start in range(0, len(pairs), size):
        batch = pairs.get_batch(torch.arange(start, min(start + size, len(pairs))), gen)
        with autocast(device):
            out = model(batch_rps(batch, params.recurrence, device), norm(batch["image"]))
        p, i = out["pixel_features"].float(), out["image_features"].float()
        if len(p) >= 2:
            total += float(criterion(p, i, out["logit_scale"].float())) * len(p)
            counted += len(p)
        pixels.append(p)
        images.append(i)
    model.train(was_training)
    acc = retrieval_accuracy(torch.cat(pixels), torch.cat(images))
    return {"val/loss": total / max(counted, 1), "val/top1": acc[1], "val/top5": acc[5]}


def pretrain(
    params: Params,
    *,
    log: Log | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) pretraining; see the module docstring for outputs.

    Args:
        params: All sections; uses ``prepare.out``, ``recurrence``, ``model``, ``pretrain``.
        log: ``log(metrics, step)``, called on rank 0 only: ``train/loss``,
            ``train/logit_scale``, ``train/lr`` every step; ``val/*`` after every epoch.
        progress: Show a tqdm bar (rank 0).
        max_steps: Stop once this many steps are done, as if killed: only the periodic
            checkpoints are written (no final checkpoint, metrics or encoders). For tests.

    Returns:
        ``val/top1``, ``val/top5``, ``val/loss`` (last epoch), ``chance_top1`` (1/N_val),
        ``chance_top5``, ``steps``, ``seconds``, ``samples_per_second`` (training steps of
        this call only), ``global_batch``, ``candidates_per_query`` (pairs each pixel was
        contrasted with: the global batch under DDP), ``world_size``, ``resumed_from_step``,
        pair counts and ``stopped_early``.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = setup_distributed(params.pretrain.device)
    device = resolve_device(params.pretrain.device, info.local_rank)
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":  # exact resume; CUDA would also need CUBLAS_WORKSPACE_CONFIG
        torch.use_deterministic_algorithms(True, warn_only=True)  # a backbone op may lack one
    try:
        result = _train(params, info, device, log, progress, max_steps)
        if info.distributed:
            dist.barrier()  # rank 0 may still be validating/writing; leave together
        return result
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
        if info.distributed and owns_group:
            dist.destroy_process_group()


def _batch_loss(
    model: torch.nn.Module,
    criterion: SymmetricInfoNCE,
    batch: dict[str, Tensor],
    params: Params,
    device: torch.device,
    norm: Callable[[Tensor], Tensor],
) -> tuple[Tensor, float]:
    """InfoNCE of one training batch after its random crop, channel dropout and flips.

    Returns:
        The loss and the temperature ``exp(logit_scale)`` used.
    """
    cfg = params.pretrain
    gen = make_generator(int(batch["seed"]), AUGMENT)  # the batch's own stream: replayable
    rp = batch_rps(batch, params.recurrence, device, crop=cfg.temporal_crop, generator=gen)
    rp = channel_dropout(rp, cfg.channel_dropout, gen)
    image = norm(batch["image"])
    if cfg.flip_rotate:
        image = augment_images(image, gen)
    with autocast(device):
        out = model(rp, image)
    scale = out["logit_scale"].float()
    loss = criterion(out["pixel_features"].float(), out["image_features"].float(), scale)
    return loss, float(scale.detach())


def _train(
    params: Params,
    info: DistInfo,
    device: torch.device,
    log: Log | None,
    progress: bool,
    max_steps: int | None,
) -> dict[str, Any]:
    cfg, rcfg = params.pretrain, params.recurrence
    main, start_time = info.rank == 0, time.perf_counter()
    source = resolve_source(cfg, rcfg.materialize)
    rp_dir = rcfg.out if source == "materialized" else None
    train = PairDataset(params.prepare.out, cfg.train_folds, rp_dir, rcfg, seed=cfg.seed)
    val = PairDataset(params.prepare.out, cfg.val_folds, rp_dir, rcfg, seed=cfg.seed)
    global_batch = info.world_size * cfg.batch_size
    steps_per_epoch = len(train) // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"'pretrain.batch_size' x world size = {global_batch} exceeds the {len(train)} "
            f"training pairs of folds {list(cfg.train_folds)}; lower the batch size"
        )
    total = steps_per_epoch * cfg.epochs
    bands = train.image_channels
    mean, std = train.image_stats() if cfg.image_norm else (torch.zeros(bands), torch.ones(bands))
    m, s = mean.to(device)[:, None, None], std.to(device)[:, None, None]

    def norm(image: Tensor) -> Tensor:
        return (image.to(device, non_blocking=True) - m) / s

    seed_everything(cfg.seed)
    model = build_model(params.model, train.rp_channels, bands).to(device)
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    lr_lambda = partial(cosine_with_warmup, total=total, warmup=cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    out, config = Path(cfg.out), resolved_config(params, source, info.world_size)
    step, history, epoch_loss = 0, [], [0.0, 0]
    ckpt_file = out / CHECKPOINT
    ckpt = load_checkpoint(ckpt_file) if ckpt_file.is_file() else None
    if ckpt is not None and ckpt.get("config") == config:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, history, epoch_loss = ckpt["step"], list(ckpt["history"]), list(ckpt["epoch_loss"])
        torch.set_rng_state(ckpt["rng"])
    elif main:
        if ckpt is not None:
            print(f"pretrain: {ckpt_file} has another config; starting afresh")
        for name in (FINAL, HISTORY, *(f"{e}.pt" for e in ENCODERS)):
            (out / name).unlink(missing_ok=True)
    resumed_from = step

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_file,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            step=step,
            epoch=step // steps_per_epoch,
            epoch_loss=epoch_loss,
            rng=torch.get_rng_state(),
            config=config,
            model_config=model.config,
            image_mean=mean,
            image_std=std,
            history=history,
        )

    ddp = model
    if info.distributed:
        ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    candidates = [cfg.batch_size]  # what each pixel is scored against: global batch under DDP

    def gather(x: Tensor) -> Tensor:
        gathered = all_gather_with_grad(x)
        candidates[0] = len(gathered)
        return gathered

    criterion = SymmetricInfoNCE(gather_fn=gather if info.distributed else None, rank=info.rank)
    bar = tqdm(
        total=total, initial=step, desc="pretrain", unit="step", disable=not (progress and main)
    )
    eval_seconds, train_start = 0.0, time.perf_counter()
    ddp.train()
    while step < total and (max_steps is None or step < max_steps):
        epoch, first = divmod(step, steps_per_epoch)
        batches = epoch_batches(
            len(train), cfg.batch_size, epoch, cfg.seed, info.world_size, info.rank
        )
        seeds = [
            cfg.seed * 1_000_003 + (epoch * steps_per_epoch + j) * info.world_size + info.rank
            for j in range(first, steps_per_epoch)
        ]
        loader = batch_loader(train, batches[first:], seeds, cfg.num_workers, device.type == "cuda")
        for batch in loader:
            loss, scale = _batch_loss(ddp, criterion, batch, params, device, norm)
            lr = sched.get_last_lr()[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.clamp_logit_scale_()
            step += 1
            value = loss.detach()
            if info.distributed:  # log the global-batch loss, not rank 0's share
                dist.all_reduce(value)
                value /= info.world_size
            epoch_loss = [epoch_loss[0] + float(value), epoch_loss[1] + 1]
            if main and log:
                metrics = {"train/loss": float(value), "train/logit_scale": scale, "train/lr": lr}
                log(metrics, step)
            bar.update()
            bar.set_postfix(loss=f"{float(value):.3f}")
            if step % steps_per_epoch == 0 and main:
                t0 = time.perf_counter()
                metrics = evaluate(model, val, params, device, norm)
                eval_seconds += time.perf_counter() - t0
                train_loss = epoch_loss[0] / max(epoch_loss[1], 1)
                history.append(
                    {"epoch": epoch + 1, "step": step, "train/loss": train_loss, **metrics}
                )
                if log:
                    log({**metrics, "train/epoch_loss": train_loss}, step)
            if step % steps_per_epoch == 0:
                epoch_loss = [0.0, 0]
            if main and step % cfg.checkpoint_every == 0 and step < total:
                checkpoint()
            if max_steps is not None and step >= max_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - train_start - eval_seconds
    last = history[-1] if history else {}
    result = {
        "val/top1": last.get("val/top1"),
        "val/top5": last.get("val/top5"),
        "val/loss": last.get("val/loss"),
        "chance_top1": 1 / len(val),
        "chance_top5": min(5, len(val)) / len(val),
        "steps": step,
        "seconds": round(time.perf_counter() - start_time, 3),
        "samples_per_second": round((step - resumed_from) * global_batch / train_seconds, 1)
        if step > resumed_from
        else None,
        "global_batch": global_batch,
        "candidates_per_query": candidates[0],
        "world_size": info.world_size,
        "resumed_from_step": resumed_from,
        "train_pairs": len(train),
        "val_pairs": len(val),
        "stopped_early": step < total,
    }
    if main and step >= total:
        checkpoint()
        for name in ENCODERS:
            with atomic_path(out / f"{name}.pt") as tmp:
                torch.save(getattr(model, name).state_dict(), tmp)
        write_json(out / HISTORY, history)
        write_json(out / FINAL, result)
    return result


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m pimc.stages.pretrain --params params.yaml -S pretrain.epochs=2``."""
    parser = argparse.ArgumentParser(description="PIMC contrastive pretraining")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"override '{item}' must look like section.key=value")
        overrides[key] = yaml.safe_load(value)  # YAML typing, as `dvc exp run -S` does
    result = pretrain(load_params(args.params, overrides), progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
