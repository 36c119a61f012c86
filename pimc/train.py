"""Plain-torch training utilities: schedule, seeding, atomic checkpoints, DDP helpers.

Checkpoints are read with ``torch.load(weights_only=True)``, so they may hold only tensors and
plain Python containers/scalars: RNG state is stored as ``torch.get_rng_state()`` (a uint8
tensor), and pimc's data randomness comes from generators derived from the seed and the step
(:func:`pimc.pairs.make_generator`) rather than from numpy's or Python's global RNG.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from pimc.io import atomic_path

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "cleanup",
    "cosine_with_warmup",
    "is_main",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
]


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier for ``LambdaLR``: linear warmup to 1, then cosine decay to 0 at ``total``.

    Args:
        step: Optimizer steps taken so far (``LambdaLR`` passes 0 for the first step).
        total: Total number of optimizer steps.
        warmup: Warmup steps; the first step already uses ``1 / warmup`` (never a zero LR).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and, for third-party code, Python's and numpy's RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Atomically ``torch.save`` ``state`` to ``path``: a kill mid-write keeps the old file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickles)."""
    return torch.load(path, map_location=map_location, weights_only=True)


@dataclass(frozen=True)
class DistInfo:
    """This process' place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` when CUDA is available, else CPU; else as named."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment, if any.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``
    through the ``env://`` init). Uses NCCL when the run's device is CUDA, else gloo.
    Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def is_main() -> bool:
    """True on rank 0, and in a non-distributed run."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``(B, ...)`` tensor in rank order: ``(world·B, ...)``.

    ``torch.distributed.nn.functional.all_gather`` back-propagates into every rank's input, so
    negatives from other ranks also train their own encoders (SymmetricInfoNCE's ``gather_fn``).
    """
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
