"""Contrastive losses for PIMC."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SymmetricInfoNCE"]


class SymmetricInfoNCE(nn.Module):
    """CLIP's symmetric InfoNCE over matching (pixel, image) pairs with in-batch negatives.

    With ``logits = logit_scale · pixel @ image.T`` (B × B), pair i is the positive of row i and
    column i, so the loss is ``(CE(logits, arange) + CE(logits.T, arange)) / 2``.

    Distributed training: pass ``gather_fn``, a callable mapping a local ``(B, D)`` tensor to the
    rank-ordered concatenation ``(world·B, D)`` of every rank's tensor, which must keep the
    gradient of at least the local slice (``torch.distributed.nn.functional.all_gather`` followed
    by ``torch.cat``, or ``all_gather`` with the own slice replaced by the local tensor, as
    open_clip does). Each rank then scores its B local rows against all world·B candidates, with
    labels ``arange(B) + rank·B`` (open_clip's ``local_loss``: O(B·world·B) memory instead of
    O((world·B)²)); averaging the ranks' losses (DDP's gradient averaging does this) equals the
    single-process loss on the global batch. Every rank must use the same local batch size.

    False negatives: neighbouring pixels of one parcel are near-duplicates, so scoring them as
    negatives of each other pushes apart what should match. Passing ``groups`` (e.g. parcel
    ids) removes every other pair of the query's group from its candidates (their logits
    become ``-inf``), as in false-negative elimination (Huynh et al., WACV 2022).

    Args:
        gather_fn: All-gather hook; ``None`` (default) for single-process training.
        rank: This process' rank for the label offset; by default
            ``torch.distributed.get_rank()`` when initialised, else 0.

    Attributes:
        candidates: How many pairs each query was scored against in the last call (B, or
            world·B with ``gather_fn``); ``None`` before the first call.
    """

    def __init__(
        self, gather_fn: Callable[[Tensor], Tensor] | None = None, rank: int | None = None
    ) -> None:
        super().__init__()
        self.gather_fn = gather_fn
        self.rank = rank
        self.candidates: int | None = None

    def _rank(self) -> int:
        if self.rank is not None:
            return self.rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def forward(
        self,
        pixel_features: Tensor,
        image_features: Tensor,
        logit_scale: Tensor | float,
        groups: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            pixel_features: ``(B, D)`` RP embeddings, normally L2-normalised.
            image_features: ``(B, D)`` image embeddings; row i pairs with ``pixel_features[i]``.
            logit_scale: Positive finite scalar (the model's ``exp``-ed inverse temperature).
            groups: Optional int ``(B,)``: pairs of the same group are not negatives of each
                other (give a pair its own unique value to keep all its negatives).

        Returns:
            Scalar loss tensor.

        Raises:
            ValueError: Non-2-D or mismatched features, fewer than 2 pairs, or a non-positive or
                non-finite ``logit_scale``.
        """
        _validate(pixel_features, image_features, logit_scale)
        batch = pixel_features.shape[0]
        if self.gather_fn is None:
            if batch < 2:
                raise ValueError(
                    f"pixel_features has batch size {batch}; InfoNCE needs >= 2 pairs so each "
                    "positive has in-batch negatives: increase the batch size"
                )
            logits_per_pixel = logit_scale * pixel_features @ image_features.T
            logits_per_image = logits_per_pixel.T
            labels = torch.arange(batch, device=pixel_features.device)
            all_groups = groups
        else:
            all_pixel = self.gather_fn(pixel_features)
            all_image = self.gather_fn(image_features)
            offset = self._rank() * batch
            _validate_gathered(all_pixel, all_image, pixel_features.shape, offset)
            logits_per_pixel = logit_scale * pixel_features @ all_image.T
            logits_per_image = logit_scale * image_features @ all_pixel.T
            labels = torch.arange(batch, device=pixel_features.device) + offset
            all_groups = _gather_plain(groups) if groups is not None else None
        if groups is not None:
            same = groups[:, None] == all_groups[None, :]
            same[torch.arange(batch), labels] = False  # the positive always stays
            logits_per_pixel = logits_per_pixel.masked_fill(same, float("-inf"))
            logits_per_image = logits_per_image.masked_fill(same, float("-inf"))
        self.candidates = logits_per_pixel.shape[1]
        return (
            F.cross_entropy(logits_per_pixel, labels) + F.cross_entropy(logits_per_image, labels)
        ) / 2


def _gather_plain(x: Tensor) -> Tensor:
    """Every rank's ``(B,)`` tensor concatenated in rank order (no gradient needed)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _validate(pixel_features: Tensor, image_features: Tensor, logit_scale: Tensor | float) -> None:
    for name, x in (("pixel_features", pixel_features), ("image_features", image_features)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (B, D), got shape {tuple(x.shape)}")
    if pixel_features.shape != image_features.shape:
        raise ValueError(
            f"pixel_features {tuple(pixel_features.shape)} and image_features "
            f"{tuple(image_features.shape)} must have the same (B, D): one image per pixel"
        )
    if pixel_features.shape[0] == 0:
        raise ValueError("pixel_features and image_features are empty (B = 0); pass >= 2 pairs")
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
        value = float(logit_scale.detach())
    else:
        value = float(logit_scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"logit_scale must be finite and > 0 (it multiplies the cosine logits), got {value}; "
            "pass the model's exp()-ed scale, not the raw parameter if it may be negative"
        )


def _validate_gathered(
    all_pixel: Tensor, all_image: Tensor, local_shape: torch.Size, offset: int
) -> None:
    batch, dim = local_shape
    total = all_pixel.shape[0] if all_pixel.ndim == 2 else -1
    if (
        all_pixel.shape != all_image.shape
        or all_pixel.ndim != 2
        or all_pixel.shape[1] != dim
        or total % batch
        or total < offset + batch
    ):
        raise ValueError(
            f"gather_fn returned {tuple(all_pixel.shape)} and {tuple(all_image.shape)} for local "
            f"features {tuple(local_shape)} with label offset {offset}; it must return "
            "(world*B, D) in rank order, with the same B on every rank"
        )
    if total < 2:
        raise ValueError(
            f"only {total} pair across all ranks; InfoNCE needs >= 2: increase the batch size"
        )
