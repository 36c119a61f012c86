"""DataLoader workers forked inside a process where a Prefect flow has run (as in `pretrain`)."""

from __future__ import annotations

import torch

from pimc.training.utils import batch_loader


class _Pairs:
    def get_batch(self, idx, generator=None):
        return {"x": idx.float() + torch.rand(len(idx), generator=generator)}


def test_workers_survive_prefect_services(prefect_harness):
    from prefect import flow

    @flow(log_prints=True)
    def noop() -> int:
        print("flow ran")  # the log worker service is one whose at-exit hook broke children
        return 1

    assert noop() == 1  # starts Prefect's background services in this process
    batches = [torch.arange(i, i + 4) for i in range(0, 64, 4)]
    seeds = list(range(len(batches)))
    inline = list(batch_loader(_Pairs(), batches, seeds))
    workers = list(batch_loader(_Pairs(), batches, seeds, num_workers=2))
    assert len(workers) == len(batches)
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["x"], b["x"])
