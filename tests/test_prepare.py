from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pimc.core.config import PrepareConfig
from pimc.core.paths import MANIFEST, PATCHES, shard_name
from pimc.data import PASTIS
from pimc.stages.prepare import (
    finalize_prepare,
    open_pastis,
    plan_prepare,
    prepare_patches,
    run_prepare,
)
from pimc.transforms.timegrid import make_grid


def prepare(tiny_data, tmp_path, **kw):
    cfg = PrepareConfig(out=str(tmp_path / "prep"), pixels_per_patch=24, **kw)
    return cfg, run_prepare(tiny_data / "PASTIS", cfg, progress=False)


def test_series_match_indices_computed_by_hand(tiny_data, tmp_path):
    cfg, stats = prepare(tiny_data, tmp_path, despike="none")
    out = tmp_path / "prep"
    manifest = pd.read_parquet(out / MANIFEST)
    assert stats["pixels"] == len(manifest) == 5 * 24
    assert set(manifest.columns) >= {"patch_id", "row", "col", "fold", "label", "shard", "index"}
    assert 19 not in set(manifest["label"])
    row = manifest.iloc[7]
    ds = PASTIS(tiny_data / "PASTIS", folds=PASTIS.all_folds)
    raw = np.load(ds.s2_path(row.patch_id)).astype(np.float64) * 1e-4
    nir, red = raw[:, 6, row.row, row.col], raw[:, 2, row.row, row.col]
    ndvi = (nir - red) / (nir + red)
    dates = ds.metadata.set_index("id").loc[row.patch_id, "dates"]
    grid = make_grid(cfg.grid_start, cfg.grid_end, cfg.grid_step_days)
    expected = np.interp(grid.astype(np.int64), dates.astype(np.int64), ndvi)
    with np.load(out / "shards" / row.shard) as z:
        np.testing.assert_allclose(z["series"][row["index"], 0], expected, atol=1e-5)
        assert z["labels"][row["index"]] == row.label
        assert z["image"].shape == (24, 10, 9, 9) and z["image"].dtype == np.float16


def test_image_window_is_centred_median_composite(tiny_data, tmp_path):
    prepare(tiny_data, tmp_path)
    manifest = pd.read_parquet(tmp_path / "prep" / MANIFEST)
    row = manifest.iloc[3]
    ds = PASTIS(tiny_data / "PASTIS", folds=PASTIS.all_folds)
    raw = np.load(ds.s2_path(row.patch_id)).astype(np.float32)
    # torch's median: the lower of the two middle values when T is even
    centre = np.sort(raw[:, :, row.row, row.col], axis=0)[(raw.shape[0] - 1) // 2]
    with np.load(tmp_path / "prep" / "shards" / row.shard) as z:
        got = z["image"][row["index"], :, 4, 4].astype(np.float32)
    np.testing.assert_allclose(got, centre, rtol=2e-3, atol=1)


def test_pad_mode_keeps_raw_dates_with_mask(tiny_data, tmp_path):
    prepare(tiny_data, tmp_path, time_axis="pad", max_length=61)
    patches = pd.read_parquet(tmp_path / "prep" / PATCHES)
    first = patches.iloc[0]
    with np.load(tmp_path / "prep" / "shards" / shard_name(first.patch_id)) as z:
        assert z["series"].shape[-1] == 61
        assert (z["valid"].sum(1) == first.n_dates).all()
        assert (z["series"][:, :, first.n_dates :] == 0).all()


def test_resume_and_reset(tiny_data, tmp_path):
    cfg, first = prepare(tiny_data, tmp_path)
    assert first["resumed_patches"] == 0
    shards = sorted((tmp_path / "prep" / "shards").glob("*.npz"))
    shards[0].unlink()  # as if the run was killed before writing it
    again = run_prepare(tiny_data / "PASTIS", cfg, progress=False)
    assert again["resumed_patches"] == 4 and again["pixels"] == first["pixels"]
    _, changed = prepare(tiny_data, tmp_path, sampler="hilbert")
    assert changed["resumed_patches"] == 0  # another config never reuses old shards


def test_background_can_be_excluded(tiny_data, tmp_path):
    prepare(tiny_data, tmp_path, exclude_classes=(0, 19), sampler="stratified")
    labels = set(pd.read_parquet(tmp_path / "prep" / MANIFEST)["label"])
    assert 0 not in labels and 19 not in labels and len(labels) >= 3


def test_window_larger_than_patch_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="larger than the patch"):
        prepare(tiny_data, tmp_path, patch_size=41)


def test_worker_batches_write_what_the_sequential_run_writes(tiny_data, tmp_path):
    cfg, whole = prepare(tiny_data, tmp_path)
    steps_cfg = replace(cfg, out=str(tmp_path / "steps"))
    plan = plan_prepare(open_pastis(tiny_data / "PASTIS", steps_cfg), steps_cfg)
    # As the Dask fan-out does: batches, each opening the dataset itself, finalized elsewhere.
    results = [
        *prepare_patches(plan.root, steps_cfg, plan.todo[:2]),
        *prepare_patches(plan.root, steps_cfg, plan.todo[2:]),
    ]
    stats = finalize_prepare(open_pastis(plan.root, steps_cfg), plan, results)
    timing = ("seconds", "peak_rss_mib")
    assert {k: v for k, v in stats.items() if k not in timing} == {
        k: v for k, v in whole.items() if k not in timing
    }
    for table in (MANIFEST, PATCHES):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "prep" / table), pd.read_parquet(tmp_path / "steps" / table)
        )
    for shard in sorted((tmp_path / "prep" / "shards").glob("*.npz")):
        with np.load(shard) as a, np.load(tmp_path / "steps" / "shards" / shard.name) as b:
            assert a.files == b.files
            assert all(np.array_equal(a[k], b[k]) for k in a.files), shard.name


def test_an_edited_dataset_is_read_afresh(data_copy, tmp_path):
    # Nothing is cached between runs: a patch removed from the metadata is gone from the next.
    cfg = PrepareConfig(out=str(tmp_path / "prep"), pixels_per_patch=8)
    assert run_prepare(data_copy / "PASTIS", cfg, progress=False)["patches"] == 5
    meta = data_copy / "PASTIS" / "metadata.geojson"
    doc = json.loads(meta.read_text())
    doc["features"] = doc["features"][1:]
    meta.write_text(json.dumps(doc))
    again = run_prepare(data_copy / "PASTIS", cfg, progress=False)
    assert again["patches"] == 4 and again["resumed_patches"] == 0  # new data: fresh folder


def test_a_corrupted_patch_file_is_prepared_again_on_resume(data_copy, tmp_path):
    """Issue 13: resume used to reuse every old shard after an S2_*.npy was changed."""
    cfg = PrepareConfig(out=str(tmp_path / "prep"), pixels_per_patch=8)
    run_prepare(data_copy / "PASTIS", cfg, progress=False)
    ds = PASTIS(data_copy / "PASTIS", folds=PASTIS.all_folds)
    pid = int(ds.metadata["id"][0])
    s2 = np.load(ds.s2_path(pid))
    np.save(ds.s2_path(pid), (s2 // 2).astype(s2.dtype))  # another valid-looking file
    again = run_prepare(data_copy / "PASTIS", cfg, progress=False)
    assert again["resumed_patches"] == 4  # only the changed patch was prepared again
    with np.load(tmp_path / "prep" / "shards" / shard_name(pid)) as z:
        fresh = PrepareConfig(out=str(tmp_path / "fresh"), pixels_per_patch=8)
        run_prepare(data_copy / "PASTIS", fresh, progress=False)
        with np.load(tmp_path / "fresh" / "shards" / shard_name(pid)) as f:
            assert np.array_equal(z["series"], f["series"], equal_nan=True)


def test_clipped_reflectances_are_counted_in_the_stats_and_patch_table(data_copy, tmp_path):
    ds = PASTIS(data_copy / "PASTIS", folds=PASTIS.all_folds)
    pid = int(ds.metadata["id"][2])
    s2 = np.load(ds.s2_path(pid))
    s2[0, 0, 0, :2] = -5000
    np.save(ds.s2_path(pid), s2)
    cfg = PrepareConfig(out=str(tmp_path / "prep"), pixels_per_patch=8)
    stats = run_prepare(data_copy / "PASTIS", cfg, progress=False)
    patches = pd.read_parquet(tmp_path / "prep" / PATCHES).set_index("patch_id")
    assert stats["clipped_values"] == 2 and patches.loc[pid, "clipped_values"] == 2
    assert patches["clipped_values"].sum() == 2
