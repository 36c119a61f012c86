"""Building PIMC from the ``model`` config, and loading a pretraining checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pimc.core.config import ModelConfig
from pimc.core.io import load_checkpoint
from pimc.models.pimc import PIMC

__all__ = ["build_model", "load_pretrained_model"]


def build_model(cfg: ModelConfig, rp_channels: int, image_channels: int) -> PIMC:
    """PIMC from the ``model`` section; channel counts come from the data."""
    return PIMC(rp_channels=rp_channels, image_channels=image_channels, **asdict(cfg))


def load_pretrained_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[PIMC, dict[str, Any]]:
    """The model (in eval mode) and the checkpoint dict of a ``last.pt`` or ``best.pt``."""
    ckpt = load_checkpoint(path, map_location)
    model = PIMC(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
