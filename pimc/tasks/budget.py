"""Label budgets: which training rows keep their labels, which val rows are scored.

Self-supervised pretraining earns its keep when labels are scarce, so every task trains on
``finetune.<task>.label_fraction`` of its training rows (pretraining sees all of them, without
labels). Classification budgets are stratified: each class keeps ``round(fraction * n_c)`` rows
and at least one, as in the usual "1 % of the labels" protocols, so no class vanishes at 1 %.
Both draws are seeded by the task's seed alone, so every method of a run, and the PIMC and
random-init arms of a paired comparison, train on the same rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pimc.training.utils import make_generator

__all__ = ["LABELS", "VAL", "label_subset", "row_subset"]

LABELS, VAL = 10, 11  # generator streams (pimc.training.utils.make_generator)


def label_subset(n: int, fraction: float, seed: int, labels: Tensor | None = None) -> Tensor:
    """Sorted indices of the training rows that keep their labels.

    Args:
        n: Number of training rows.
        fraction: Share kept, in (0, 1]; 1 keeps every row.
        seed: The task's seed.
        labels: ``(n,)`` classes: stratify (``round(fraction * n_c)`` per class, at least 1);
            None: a uniform draw of ``max(1, round(fraction * n))`` rows.

    Returns:
        int64 ``(k,)`` indices into the ``n`` rows, ascending.
    """
    if fraction >= 1.0:
        return torch.arange(n)
    gen = make_generator(seed, LABELS)
    if labels is None:
        k = max(1, round(fraction * n))
        return torch.randperm(n, generator=gen)[:k].sort().values
    keep = []
    for c in labels.unique().tolist():  # ascending, so the draw order is fixed
        rows = (labels == c).nonzero().flatten()
        k = max(1, round(fraction * len(rows)))
        keep.append(rows[torch.randperm(len(rows), generator=gen)[:k]])
    return torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.long)


def row_subset(n: int, k: int | None, seed: int) -> Tensor:
    """Sorted indices of ``min(k, n)`` rows drawn uniformly (all ``n`` when ``k`` is None).

    Validation runs after every epoch of every method; a fixed random subset keeps its cost
    bounded on large folds while staying the same for all methods.
    """
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=make_generator(seed, VAL))[:k].sort().values
