from __future__ import annotations

import numpy as np
import pytest
import torch

from pimc.core.config import PrepareConfig, RecurrenceConfig
from pimc.core.errors import InputError
from pimc.stages.prepare import run_prepare
from pimc.stages.recurrence import (
    finalize_recurrence,
    plan_recurrence,
    recurrence_one,
    run_recurrence,
)
from pimc.transforms.recurrence import build_rps


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    run_prepare(tiny_data / "PASTIS", PrepareConfig(out=str(out), pixels_per_patch=16), False)
    return out


def test_materialized_shards_and_gallery(prepared, tmp_path):
    cfg = RecurrenceConfig(out=str(tmp_path / "rp"), size=24, materialize=True)
    stats = run_recurrence(prepared, cfg, tmp_path / "gallery.png", progress=False)
    shards = sorted((tmp_path / "rp" / "shards").glob("*.npy"))
    assert len(shards) == stats["shards"] == 5
    rps = np.load(shards[0])
    assert rps.shape == (16, 3, 24, 24) and rps.dtype == np.float16
    assert 0.0 <= rps.min() and rps.max() <= 1.0
    with np.load(prepared / "shards" / shards[0].name.replace(".npy", ".npz")) as z:
        expected = build_rps(torch.from_numpy(z["series"]), None, cfg, torch.float32)
    np.testing.assert_allclose(rps.astype(np.float32), expected.numpy(), atol=1e-3)
    png = (tmp_path / "gallery.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and stats["classes_in_gallery"] >= 3


def test_not_materialized_writes_only_gallery(prepared, tmp_path):
    cfg = RecurrenceConfig(out=str(tmp_path / "rp"), materialize=False)
    stats = run_recurrence(prepared, cfg, tmp_path / "g.png", progress=False)
    assert not (tmp_path / "rp" / "shards").exists()
    assert stats["bytes_written"] == 0 and (tmp_path / "g.png").is_file()


def test_steps_match_the_run_and_finalize_checks_the_order(prepared, tmp_path):
    cfg = RecurrenceConfig(out=str(tmp_path / "rp"), materialize=False)
    whole = run_recurrence(prepared, cfg, tmp_path / "run.png", progress=False)
    plan = plan_recurrence(prepared, cfg)
    results = [recurrence_one(plan.prepared, cfg, pid) for pid in plan.patch_ids]
    with pytest.raises(InputError, match="plan.patch_ids in order"):
        finalize_recurrence(plan, results[::-1], tmp_path / "steps.png")
    steps = finalize_recurrence(plan, results, tmp_path / "steps.png")
    timing = ("rps_per_second",)
    assert {k: v for k, v in steps.items() if k not in timing} == {
        k: v for k, v in whole.items() if k not in timing
    }
    assert (tmp_path / "run.png").read_bytes() == (tmp_path / "steps.png").read_bytes()


def test_padding_is_masked_out():
    series = torch.tensor([[[0.1, 0.5, 0.2, 0.0, 0.0]]])
    valid = torch.tensor([[True, True, True, False, False]])
    rp = build_rps(series, valid, RecurrenceConfig(normalize=False, size=None))
    assert rp.shape == (1, 1, 5, 5)
    assert torch.all(rp[0, 0, 3:] == 0) and torch.all(rp[0, 0, :, 3:] == 0)
    assert torch.isclose(rp[0, 0, 0, 1], torch.tensor(0.4))
