"""PIMC models: backbones, projection heads and the two-tower contrastive model."""

from __future__ import annotations

from pimc.models.backbones import (
    BACKBONES,
    BasicBlock,
    Bottleneck,
    ResNet,
    SmallCNN,
    build_backbone,
    resnet18,
    resnet34,
    resnet50,
)
from pimc.models.heads import ProjectionHead
from pimc.models.pimc import PIMC, Encoder

__all__ = [
    "BACKBONES",
    "PIMC",
    "BasicBlock",
    "Bottleneck",
    "Encoder",
    "ProjectionHead",
    "ResNet",
    "SmallCNN",
    "build_backbone",
    "resnet18",
    "resnet34",
    "resnet50",
]
