"""The ``pretrain`` stage: CLIP-style contrastive pretraining of :class:`~pimc.models.PIMC`.

One linear loop: AdamW, linear warmup + cosine decay, symmetric InfoNCE with in-batch negatives
(gathered across ranks under ``torchrun``), validation by pixel→image retrieval on held-out
folds after every epoch. Rank 0 writes to ``pretrain.out``::

    last.pt              the checkpoint (every ``checkpoint_every`` steps and at the end)
    best.pt              the weights of the epoch with the lowest val loss (same format),
                         what downstream tasks and the registry get
    final_metrics.json   what :func:`pretrain` returns
    history.json         one entry per epoch (train/val loss, val retrieval)
    train_curve.json     train loss, logit scale and LR every 5 steps (kept in last.pt)
    rp_encoder.pt        state dicts of best.pt's two encoders
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
from typing import Any

import torch
import torch.distributed as dist

from pimc.core.config import Params, load_params
from pimc.core.typed_config import add_set_argument, parse_overrides
from pimc.training.pretrain_loop import Log, resolved_config, train_loop
from pimc.training.utils import (
    resolve_device,
    setup_distributed,
)

__all__ = ["pretrain", "resolved_config"]


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
        ``val/loss``, ``val/top1``, ``val/top5``, ``val/parcel_top1``, ``val/class_top1`` of
        the best epoch (``best_epoch``), ``last_val_loss``, ``final_logit_scale`` (the learnt
        inverse temperature), ``chance_top1`` (1/N_val),
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
        result = train_loop(params, info, device, log, progress, max_steps)
        if info.distributed:
            dist.barrier()  # rank 0 may still be validating/writing; leave together
        return result
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
        if info.distributed and owns_group:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m pimc.stages.pretrain --params params.yaml -S pretrain.epochs=2``."""
    parser = argparse.ArgumentParser(description="PIMC contrastive pretraining")
    parser.add_argument("--params", default="params.yaml")
    add_set_argument(parser, "override a parameter, e.g. -S pretrain.epochs=2 (repeatable)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params, parse_overrides(args.overrides))
    result = pretrain(params, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
