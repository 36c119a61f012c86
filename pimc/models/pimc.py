"""The PIMC two-tower model: a recurrence-plot (pixel) encoder and an image-patch encoder.

As in open_clip, the model owns the learnable temperature (``logit_scale``) and ``forward``
returns a dict whose keys are the argument names of
:class:`pimc.training.losses.SymmetricInfoNCE`, so a
training step is ``loss = criterion(**model(rp, image))``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pimc.core.errors import ConfigError
from pimc.models.backbones import build_backbone
from pimc.models.heads import ProjectionHead

__all__ = ["PIMC", "Encoder"]


class Encoder(nn.Sequential):
    """Backbone followed by a projection head, usable on its own.

    ``encoder.backbone`` gives pooled features ``(B, num_features)`` for downstream tasks;
    ``encoder(x)`` gives un-normalised embeddings ``(B, out_dim)``.
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead) -> None:
        super().__init__(OrderedDict(backbone=backbone, head=head))
        self.num_features: int = backbone.num_features
        self.out_dim: int = head.out_dim


def _check_input(name: str, x: Tensor, channels: int, layout: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{name} must have shape {layout} with {channels} channels, got {tuple(x.shape)}"
        )


class PIMC(nn.Module):
    """Pixel-wise multimodal contrastive model.

    Args:
        rp_backbone: Backbone name for recurrence plots (see ``build_backbone``).
        image_backbone: Backbone name for image patches.
        rp_channels: RP channels (one per vegetation index).
        image_channels: Spectral bands of the image patches.
        embed_dim: Shared embedding size D.
        hidden_dim: Hidden width of both projection heads.
        init_logit_scale: Initial log inverse temperature; CLIP's ``log(1/0.07)``.
        max_logit_scale: Upper clamp of the log scale; ``log(100)`` as in CLIP/open_clip, since
            a larger scale makes the softmax near one-hot and training unstable.
        small_input: For ResNet backbones, skip the stem's down-sampling (RPs are 32–64 px,
            patches 9–32 px); ignored by ``small_cnn``.

    Attributes:
        rp_encoder: :class:`Encoder` for RPs ``(B, rp_channels, S, S)``.
        image_encoder: :class:`Encoder` for patches ``(B, image_channels, K, K)``.
        logit_scale: Learnable scalar parameter (log of the inverse temperature).
        config: The constructor arguments; ``PIMC(**model.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        rp_backbone: str = "small_cnn",
        image_backbone: str = "small_cnn",
        rp_channels: int = 3,
        image_channels: int = 10,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
        small_input: bool = True,
    ) -> None:
        super().__init__()
        if not (math.isfinite(max_logit_scale) and max_logit_scale > 0):
            raise ConfigError(f"max_logit_scale must be finite and > 0, got {max_logit_scale}")
        if not (math.isfinite(init_logit_scale) and 0 <= init_logit_scale <= max_logit_scale):
            raise ConfigError(
                f"init_logit_scale must lie in [0, max_logit_scale={max_logit_scale:.4g}], "
                f"got {init_logit_scale}; lower it or raise max_logit_scale"
            )
        self.config: dict[str, Any] = {
            "rp_backbone": rp_backbone,
            "image_backbone": image_backbone,
            "rp_channels": rp_channels,
            "image_channels": image_channels,
            "embed_dim": embed_dim,
            "hidden_dim": hidden_dim,
            "init_logit_scale": init_logit_scale,
            "max_logit_scale": max_logit_scale,
            "small_input": small_input,
        }
        self.rp_channels, self.image_channels = rp_channels, image_channels
        self.max_logit_scale = max_logit_scale
        self.rp_encoder = self._encoder(
            rp_backbone, rp_channels, embed_dim, hidden_dim, small_input
        )
        self.image_encoder = self._encoder(
            image_backbone, image_channels, embed_dim, hidden_dim, small_input
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    @staticmethod
    def _encoder(
        name: str, channels: int, embed_dim: int, hidden_dim: int, small_input: bool
    ) -> Encoder:
        kw = {"small_input": small_input} if name.startswith("resnet") else {}
        backbone = build_backbone(name, channels, **kw)
        return Encoder(backbone, ProjectionHead(backbone.num_features, hidden_dim, embed_dim))

    def encode_pixel(self, rp: Tensor, normalize: bool = True) -> Tensor:
        """Embed recurrence plots ``(B, rp_channels, S, S)`` → ``(B, D)`` (unit norm by default)."""
        _check_input("rp", rp, self.rp_channels, "(B, C, S, S)")
        z = self.rp_encoder(rp)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image(self, img: Tensor, normalize: bool = True) -> Tensor:
        """Embed image patches ``(B, image_channels, K, K)`` → ``(B, D)`` (unit norm by default)."""
        _check_input("img", img, self.image_channels, "(B, C, K, K)")
        z = self.image_encoder(img)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(
        self, rp: Tensor, image: Tensor | None = None, rp_view: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Embed a batch of matching (RP, patch) pairs, or of two views of the same RPs.

        Args:
            rp: ``(B, rp_channels, S, S)``.
            image: ``(B, image_channels, K, K)``; row i is the patch around RP i's pixel.
            rp_view: Instead of ``image``: ``(B, rp_channels, S', S')``, another augmented view
                of each RP, embedded by the RP tower too (RP-only self-supervision).

        Returns:
            ``pixel_features`` ``(B, D)`` and ``image_features`` ``(B, D)`` (of ``image``, or of
            ``rp_view``), both L2-normalised, and ``logit_scale``, the scalar
            ``exp(clamp(logit_scale, 0, max_logit_scale))``.
        """
        if (image is None) == (rp_view is None):
            raise ValueError("pass exactly one of image and rp_view")
        other = self.encode_image(image) if rp_view is None else self.encode_pixel(rp_view)
        return {
            "pixel_features": self.encode_pixel(rp),
            "image_features": other,
            "logit_scale": self.logit_scale.clamp(0, self.max_logit_scale).exp(),
        }

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter in place (open_clip does this after each optimizer step).

        ``forward`` already clamps its output, but the clamp has zero gradient outside the range,
        so a parameter pushed past the bound would otherwise stay stuck there.
        """
        self.logit_scale.clamp_(0, self.max_logit_scale)
