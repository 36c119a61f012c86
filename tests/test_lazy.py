"""PlotRows: plots built per batch are the plots built up front, bit for bit."""

from __future__ import annotations

import pytest
import torch

from pimc.core.config import RecurrenceConfig
from pimc.tasks.lazy import PlotRows
from pimc.transforms.recurrence import build_rps


@pytest.mark.parametrize("normalize", [False, True])
def test_plots_read_by_batch_equal_plots_built_at_once(normalize):
    gen = torch.Generator().manual_seed(0)
    series = torch.rand(300, 3, 46, generator=gen)
    valid = torch.rand(300, 46, generator=gen) > 0.2
    cfg = RecurrenceConfig(normalize=normalize, size=32)
    rows, full = PlotRows(series, valid, cfg), build_rps(series, valid, cfg)
    idx = torch.randperm(300, generator=gen)[:128]
    assert len(rows) == 300
    assert torch.equal(rows[idx], full[idx])
    assert torch.equal(rows[10:20], full[10:20])
    chunks = list(rows.split(128))
    assert [len(c) for c in chunks] == [128, 128, 44]
    assert torch.equal(torch.cat(chunks), full)


def test_a_mask_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        PlotRows(torch.rand(4, 3, 10), torch.ones(4, 9, dtype=torch.bool), RecurrenceConfig())
