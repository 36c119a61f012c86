"""Tests for pimc.training.utils (and the seed mixing it builds on, pimc.core.seeds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pimc.core.seeds import mix_seed
from pimc.training.utils import (
    ORDER,
    DistInfo,
    adamw,
    cosine_with_warmup,
    epoch_batches,
    make_generator,
    resolve_device,
    retrieval_accuracy,
    seed_everything,
    setup_distributed,
)

P = 1_000_003


def test_mix_seed_is_the_horner_fold_of_its_parts():
    assert mix_seed(7) == 7
    assert mix_seed(3, 10_005) == 3 * P + 10_005  # prepare: (seed, patch id)
    assert mix_seed(2, 1, 9) == (2 * P + 1) * P + 9
    with pytest.raises(TypeError):
        mix_seed()


def test_make_generator_seeds_are_the_mixed_triple_and_distinct():
    for seed, stream, counter in [(0, 0, 0), (5, 2, 17), (2**40, 3, 10**6)]:
        expected = ((seed * P + stream) * P + counter) % 2**63
        assert make_generator(seed, stream, counter).initial_seed() == expected
    triples = [(s, st, c) for s in range(4) for st in range(4) for c in range(50)]
    seeds = {make_generator(*t).initial_seed() for t in triples}
    assert len(seeds) == len(triples)
    a = torch.rand(3, generator=make_generator(0, 1))
    assert torch.equal(a, torch.rand(3, generator=make_generator(0, 1)))
    assert not torch.equal(a, torch.rand(3, generator=make_generator(0, 2)))


def test_cosine_with_warmup():
    lrs = [cosine_with_warmup(s, total=10, warmup=4) for s in range(11)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[7] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert cosine_with_warmup(0, total=5, warmup=0) == 1.0
    assert cosine_with_warmup(20, total=10, warmup=4) == pytest.approx(0.0)  # past the end


def test_adamw_decays_only_matrices_and_kernels():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3, 2))
    model.register_parameter("scale", nn.Parameter(torch.tensor(1.0)))
    opt = adamw(model, lr=0.1, weight_decay=0.05)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 5  # conv bias, BN weight + bias, linear bias, scale
    assert all(g["lr"] == 0.1 for g in opt.param_groups)


def test_retrieval_accuracy_on_hand_made_embeddings():
    image = torch.eye(4)
    # pixel 0 → image 0 (rank 0); pixel 1 closest to image 2, then its own (rank 1);
    # pixel 2 ranks its own third; pixel 3 ties every image (ties count against it).
    pixel = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0.6, 0.8, 0], [0.7, 0.5, 0.1, 0], [0.5, 0.5, 0.5, 0.5]]
    )
    assert retrieval_accuracy(pixel, image, ks=(1, 2, 3, 4)) == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0}
    assert retrieval_accuracy(pixel, image, ks=(1, 2, 3), chunk=3) == {1: 0.25, 2: 0.5, 3: 0.75}
    assert retrieval_accuracy(torch.ones(5, 3), torch.ones(5, 3), ks=(1,)) == {1: 0.0}


def test_epoch_batches_shard_the_global_permutation():
    single = epoch_batches(50, 8, epoch=3, seed=1)
    assert len(single) == 6 and all(len(b) == 8 for b in single)  # last 2 pairs dropped
    order = torch.randperm(50, generator=make_generator(1, ORDER, 3))
    assert torch.equal(torch.cat(single), order[:48])
    ranks = [epoch_batches(50, 4, epoch=3, seed=1, world_size=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    for j in range(6):  # global batch j = rank 0's slice then rank 1's
        assert torch.equal(torch.cat([ranks[0][j], ranks[1][j]]), single[j])
    assert not torch.equal(torch.cat(single), torch.cat(epoch_batches(50, 8, epoch=4, seed=1)))


def test_epoch_batches_by_group_stay_within_one_group():
    groups = torch.tensor([5] * 20 + [9] * 13 + [2] * 3)  # group 2 is smaller than a batch
    single = epoch_batches(36, 4, epoch=0, seed=1, groups=groups)
    assert len(single) == 20 // 4 + 13 // 4  # remainders and too-small groups dropped
    for b in single:
        assert len(b) == 4 and len(groups[b].unique()) == 1
    assert len(torch.cat(single).unique()) == len(torch.cat(single))  # no pair twice
    assert {int(groups[b[0]]) for b in single} == {5, 9}
    ranks = [epoch_batches(36, 2, 0, 1, world_size=2, rank=r, groups=groups) for r in (0, 1)]
    for j, global_batch in enumerate(single):  # ranks split each one-group global batch
        assert torch.equal(torch.cat([ranks[0][j], ranks[1][j]]), global_batch)
    other = epoch_batches(36, 4, epoch=1, seed=1, groups=groups)
    assert len(other) == len(single) and not torch.equal(torch.cat(other), torch.cat(single))


def test_seed_everything_replays_torch():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_devices_and_single_process_run(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda:2")
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", local_rank=1) == torch.device(expected)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = setup_distributed("cpu")
    assert info == DistInfo() and not info.distributed


def test_set_threads_uses_the_free_cores_by_default(monkeypatch):
    import os

    from pimc.core.threads import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 0.0, 0.0))
        assert set_threads(None) == 3 and torch.get_num_threads() == 3  # 8 cores - load 5
        monkeypatch.setattr(os, "getloadavg", lambda: (12.0, 0.0, 0.0))
        assert set_threads(None) == 1  # never 0
    finally:
        torch.set_num_threads(before)
