"""Label budgets and the fixed step budget of the fit loop."""

from __future__ import annotations

import torch

from pimc.tasks.budget import label_subset, row_subset
from pimc.tasks.fit import epoch_indices


def test_stratified_budget_keeps_every_class():
    labels = torch.tensor([0] * 200 + [1] * 50 + [2] * 3)
    keep = label_subset(len(labels), 0.01, seed=0, labels=labels)
    counts = torch.bincount(labels[keep], minlength=3).tolist()
    assert counts == [2, 1, 1]  # round(1 % of 200), and at least one of each rarer class
    assert torch.equal(keep, keep.sort().values) and len(keep.unique()) == len(keep)
    assert torch.equal(keep, label_subset(len(labels), 0.01, seed=0, labels=labels))
    assert not torch.equal(keep, label_subset(len(labels), 0.01, seed=1, labels=labels))
    tenth = label_subset(len(labels), 0.1, seed=0, labels=labels)
    assert torch.bincount(labels[tenth], minlength=3).tolist() == [20, 5, 1]


def test_uniform_budget_and_full_budget():
    assert len(label_subset(1000, 0.05, seed=3)) == 50
    assert len(label_subset(10, 0.001, seed=3)) == 1  # never empty
    assert torch.equal(label_subset(7, 1.0, seed=3), torch.arange(7))


def test_row_subset():
    rows = row_subset(100, 10, seed=0)
    assert len(rows) == 10 and torch.equal(rows, rows.sort().values)
    assert torch.equal(rows, row_subset(100, 10, seed=0))
    assert torch.equal(row_subset(5, 10, seed=0), torch.arange(5))
    assert torch.equal(row_subset(5, None, seed=0), torch.arange(5))


def test_epoch_steps_fix_the_step_budget():
    # 10 labelled rows, batch 4: one pass is 2 batches (the short tail merges into the last),
    # but an epoch of 5 steps cycles over reshuffled passes.
    one_pass = epoch_indices(10, 4, seed=0, epoch=1, steps=None)
    assert [len(b) for b in one_pass] == [4, 6]
    five = epoch_indices(10, 4, seed=0, epoch=1, steps=5)
    assert len(five) == 5
    assert torch.equal(torch.cat(five[:2]).sort().values, torch.arange(10))
    assert torch.equal(torch.cat(five[2:4]).sort().values, torch.arange(10))
    assert not torch.equal(torch.cat(five[:2]), torch.cat(five[2:4]))  # reshuffled
    again = epoch_indices(10, 4, 0, 1, 5)
    assert all(torch.equal(x, y) for x, y in zip(five, again, strict=True))
    # A budget smaller than the labelled set: each epoch sees a different part of it.
    many = epoch_indices(1000, 4, seed=0, epoch=1, steps=3)
    assert [len(b) for b in many] == [4, 4, 4]
