"""Validation of the pretraining: contrastive loss and retrieval on the val-fold pairs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pimc.core.config import Params
from pimc.models import PIMC
from pimc.training.losses import SymmetricInfoNCE
from pimc.training.pairs import PairDataset, batch_rps, contrast_inputs
from pimc.training.utils import (
    EVAL,
    autocast,
    group_retrieval,
    make_generator,
    retrieval_accuracy,
)

__all__ = ["evaluate"]


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
    training loss, so the two are comparable); retrieval ranks all N pairs against each other:
    ``val/top1``/``val/top5`` for the pixel's own patch, ``val/parcel_top1`` for a patch of its
    parcel (background pixels: their own), ``val/class_top1`` for one of its class. With
    ``pretrain.objective: rp_views`` the "image" is a second augmented view of the RP.
    """
    was_training = model.training
    model.eval()
    criterion = SymmetricInfoNCE()
    gen = make_generator(params.pretrain.seed, EVAL)  # same date picks every epoch
    size = params.pretrain.batch_size
    pixels, images, total, counted = [], [], 0.0, 0
    for start in range(0, len(pairs), size):
        batch = pairs.get_batch(torch.arange(start, min(start + size, len(pairs))), gen)
        rp = batch_rps(batch, params.recurrence, device)
        with autocast(device):
            out = model(
                rp,
                **contrast_inputs(
                    batch, params.pretrain, params.recurrence, device, norm, gen, False
                ),
            )
        p, i = out["pixel_features"].float(), out["image_features"].float()
        if len(p) >= 2:
            total += float(criterion(p, i, out["logit_scale"].float())) * len(p)
            counted += len(p)
        pixels.append(p)
        images.append(i)
    model.train(was_training)
    pixels, images = torch.cat(pixels), torch.cat(images)
    acc = retrieval_accuracy(pixels, images)
    return {
        "val/loss": total / max(counted, 1),
        "val/top1": acc[1],
        "val/top5": acc[5],
        "val/parcel_top1": group_retrieval(pixels, images, pairs.groups),
        "val/class_top1": group_retrieval(pixels, images, pairs.labels),
    }
