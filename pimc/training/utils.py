"""Plain-torch training utilities: schedule, optimiser, seeding, batches, DDP helpers.

Checkpoints are read with ``torch.load(weights_only=True)``, so they may hold only tensors and
plain Python containers/scalars: RNG state is stored as ``torch.get_rng_state()`` (a uint8
tensor), and pimc's data randomness comes from generators derived from the seed and the step
(:func:`make_generator`) rather than from numpy's or Python's global RNG.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pimc.core.seeds import mix_seed

__all__ = [
    "DistInfo",
    "batch_loader",
    "epoch_batches",
    "make_generator",
    "adamw",
    "decay_groups",
    "all_gather_with_grad",
    "autocast",
    "cosine_with_warmup",
    "resolve_device",
    "retrieval_accuracy",
    "seed_everything",
    "setup_distributed",
]

# Independent random streams of one seed.
ORDER, BATCH, AUGMENT, EVAL = 0, 1, 2, 3


def make_generator(seed: int, stream: int, counter: int = 0) -> torch.Generator:
    """A CPU generator for ``(seed, stream, counter)``; distinct triples give distinct seeds."""
    return torch.Generator().manual_seed(mix_seed(seed, stream, counter) % 2**63)


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


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with CLIP's convention: no weight decay on gains, biases and the temperature.

    Decaying 1-D parameters (BatchNorm gains, biases, ``logit_scale``) only pulls them towards
    0, which shrinks activations or the temperature instead of regularising features.
    """
    return torch.optim.AdamW(decay_groups(model.parameters(), weight_decay), lr=lr)


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float, **options: Any) -> list:
    """AdamW parameter groups: ``weight_decay`` on weights (>= 2-D), none on 1-D gains and
    biases; ``options`` (e.g. ``lr``) go into both groups. The one place this rule lives."""
    params = list(params)
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **options},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **options},
    ]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed), nothing elsewhere (CPU stays fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def retrieval_accuracy(
    query: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5), chunk: int = 1024
) -> dict[int, float]:
    """Cross-modal retrieval accuracy: is query i's own target among its k most similar?

    Args:
        query: ``(N, D)`` embeddings (L2-normalised, so dot = cosine), e.g. pixels.
        target: ``(N, D)`` embeddings; row i is query i's match, e.g. its image patch.
        ks: Cut-offs.
        chunk: Queries scored at once (memory ``chunk x N``).

    Returns:
        ``{k: accuracy}``. Ties count against the query (a constant model scores 0, not 1).
    """
    n = len(query)
    hits = dict.fromkeys(ks, 0)
    for start in range(0, n, chunk):
        sim = query[start : start + chunk] @ target.T  # (c, N)
        rows = torch.arange(len(sim), device=sim.device)
        positive = sim[rows, rows + start]
        rank = (sim >= positive[:, None]).sum(1) - 1  # other candidates scoring as high
        for k in ks:
            hits[k] += int((rank < k).sum())
    return {k: hits[k] / n for k in ks}


@torch.no_grad()
def group_retrieval(query: Tensor, target: Tensor, groups: Tensor, chunk: int = 1024) -> float:
    """Top-1 retrieval at group level: does query i's most similar target share its group?

    Neighbouring pixels of one parcel look alike, so exact-pixel top-1 undersells an encoder
    that retrieves the right field or crop; this scores that (groups: parcel ids or classes).

    Args:
        query: ``(N, D)`` L2-normalised embeddings; target: ``(N, D)``, row i matches query i.
        groups: ``(N,)`` integer group of each pair.

    Returns:
        The fraction of queries whose top-1 target is in their group (their own target counts).
    """
    groups = groups.to(query.device)
    hits = 0
    for start in range(0, len(query), chunk):
        best = (query[start : start + chunk] @ target.T).argmax(1)
        hits += int((groups[best] == groups[start : start + chunk]).sum())
    return hits / max(len(query), 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and, for third-party code, Python's and numpy's RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``(B, ...)`` tensor in rank order: ``(world·B, ...)``.

    ``torch.distributed.nn.functional.all_gather`` back-propagates into every rank's input, so
    negatives from other ranks also train their own encoders (SymmetricInfoNCE's ``gather_fn``).
    """
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def epoch_batches(
    n: int,
    batch_size: int,
    epoch: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    groups: Tensor | None = None,
) -> list[Tensor]:
    """This rank's index batches of one epoch (incomplete global batches dropped).

    The permutation depends on ``(seed, epoch)`` only; global batch ``j`` is
    ``perm[j·W·B : (j+1)·W·B]`` and rank ``r`` takes its ``r``-th slice of ``B``, as a
    ``DistributedSampler`` would, so every rank has the same number of equal-sized batches.

    With ``groups`` (``(n,)`` ints, e.g. the patch of each pair) every global batch is drawn
    from one group: each group's shuffled rows are cut into global batches, and the batches of
    all groups are shuffled together. The number of batches is then ``sum(n_g // (W·B))``, the
    same in every epoch (:func:`batch_count`).
    """
    gen = make_generator(seed, ORDER, epoch)
    step = world_size * batch_size
    if groups is None:
        order = torch.randperm(n, generator=gen)
        chunks = [order[j * step : (j + 1) * step] for j in range(n // step)]
    else:
        chunks = []
        for g in groups.unique().tolist():  # ascending: a fixed draw order
            rows = (groups == g).nonzero().flatten()
            rows = rows[torch.randperm(len(rows), generator=gen)]
            chunks += [rows[j * step : (j + 1) * step] for j in range(len(rows) // step)]
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()]
    return [c[rank * batch_size : (rank + 1) * batch_size] for c in chunks]


def batch_count(n: int, global_batch: int, groups: Tensor | None = None) -> int:
    """How many global batches :func:`epoch_batches` makes of ``n`` rows (every epoch)."""
    if groups is None:
        return n // global_batch
    return int((torch.bincount(groups - groups.min()) // global_batch).sum())


class _Batches(Dataset):
    """Dataset of whole batches: item ``i`` is ``get_batch`` of ``batches[i]`` with its seed."""

    def __init__(self, pairs: Any, batches: list[Tensor], seeds: list[int]) -> None:
        self.pairs, self.batches, self.seeds = pairs, batches, seeds

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        seed = self.seeds[i]
        batch = self.pairs.get_batch(self.batches[i], generator=make_generator(seed, BATCH))
        batch["seed"] = torch.tensor(seed)
        return batch


def batch_loader(
    pairs: Any,
    batches: list[Tensor],
    seeds: list[int],
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Iterate ``pairs.get_batch`` of ``batches`` in order, optionally prefetched by workers.

    ``pairs`` is a :class:`pimc.training.pairs.PairDataset` (anything with
    ``get_batch(idx, generator)``).

    Each batch's random choices come from its own ``seeds[i]``, so the result does not depend
    on ``num_workers`` or on where iteration (re)starts.
    """
    return DataLoader(
        _Batches(pairs, batches, seeds),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_drop_inherited_atexit_hooks,
        # Its own generator: an iterator draws its base seed from it, not from the global RNG,
        # whose state is checkpointed (a resume starts an iterator mid-epoch; same bytes).
        generator=torch.Generator().manual_seed(seeds[0] if seeds else 0),
    )


def _drop_inherited_atexit_hooks(worker_id: int) -> None:
    """Forget the parent's ``threading`` at-exit hooks in a forked DataLoader worker.

    Stages run inside Prefect flows. Prefect 3.8 registers such hooks for its background
    services and resets the services after fork, so in a forked child the hook fails an
    assertion at exit and turns the worker's clean exit into status 1, which the DataLoader
    reports as a crash. The worker owns none of those services, so it has nothing to drain.
    """
    import threading

    hooks = getattr(threading, "_threading_atexits", None)
    if isinstance(hooks, list):
        hooks.clear()
