"""What the downstream tasks share: the task model and result plumbing.

The fit loop is :mod:`pimc.tasks.fit`; pretrained-tower loading lives in
:mod:`pimc.tasks.pretrained` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pimc.core.config import Params
from pimc.core.typed_config import to_dict
from pimc.tasks.pretrained import (
    Pretrained,
    resolve_pretrained,
    resolve_sources,
    tower_backbone,
)

__all__ = [
    "Pretrained",
    "TaskModel",
    "resolve_pretrained",
    "resolve_sources",
    "series_stats",
    "tower_backbone",
]


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
    cached: Sequence[str] = (),
) -> dict[str, Any]:
    """The result dict of a ``run_<task>``; also written (without the model) as
    ``<out_dir>/results.json``. ``cached``: the methods whose results came from a
    :class:`~pimc.tasks.cache.MethodCache` (a run statistic, not in ``results.json``)."""
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
        "cached": list(cached),
    }


def pastis_metadata(params: Params) -> dict[str, Any]:
    """Deployment metadata of a PASTIS-pixel task: what rebuilds its input from a raw patch
    (the ``prepare`` and ``recurrence`` configs and the index names)."""
    return {
        "prepare": to_dict(params.prepare),
        "recurrence": to_dict(params.recurrence),
        "indices": list(params.prepare.indices),
    }
