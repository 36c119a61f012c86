from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from pimc.core.config import PrepareConfig, RecurrenceConfig
from pimc.core.errors import ConfigError
from pimc.stages.prepare import run_prepare
from pimc.training.pairs import PairDataset, augment_images, batch_rps, channel_dropout
from pimc.training.utils import batch_loader, epoch_batches, make_generator
from pimc.transforms.recurrence import build_rps
from tests.helpers import PIXELS, make_pairs_data


@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    return make_pairs_data(tiny_data, tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def random_dates(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs_random")
    prepared = root / "prep"
    cfg = PrepareConfig(out=str(prepared), pixels_per_patch=PIXELS, patch_date="random")
    run_prepare(tiny_data / "PASTIS", cfg, progress=False)
    return prepared


def test_items_shapes_and_fold_filtering(data):
    prepared, rp_dir, rcfg = data
    ds = PairDataset(prepared, (1, 2, 3), rp_dir, rcfg)
    assert len(ds) == 3 * PIXELS
    item = ds[5]
    assert item["rp"].shape == (3, 32, 32) and item["rp"].dtype == torch.float32
    assert item["image"].shape == (10, 9, 9) and item["image"].dtype == torch.float32
    assert all(isinstance(item[k], int) for k in ("label", "patch_id", "index"))
    manifest = pd.read_parquet(prepared / "pixels.parquet")
    folds = manifest.set_index("patch_id")["fold"].groupby(level=0).first()
    assert set(folds[ds.patch_ids.unique().numpy()]) == {1, 2, 3}
    # An item is the row of its shard that the manifest names.
    with np.load(prepared / "shards" / f"S2_{item['patch_id']}.npz") as z:
        np.testing.assert_array_equal(item["image"].numpy(), z["image"][item["index"]])
        assert item["label"] == z["labels"][item["index"]]
    # default_collate of items gives what get_batch gives (collate-friendly items).
    idx = torch.tensor([3, 0, 7])
    collated = default_collate([ds[i] for i in idx])
    batch = ds.get_batch(idx)
    assert collated.keys() == batch.keys()
    for key in batch:
        assert torch.equal(collated[key], batch[key]), key
    fly = PairDataset(prepared, (4,), recurrence_cfg=rcfg)
    assert len(fly) == PIXELS and set(fly.patch_ids.tolist()).isdisjoint(ds.patch_ids.tolist())
    item = fly[0]
    assert item["series"].shape == (3, 46) and item["valid"].shape == (46,) and "rp" not in item


def test_fine_tuning_can_skip_the_image_patches(data):
    """Issue 15: fine-tuning on plots or series never loads the 1.6 KB/px image patches."""
    prepared, _, _ = data
    full, lean = PairDataset(prepared, (1, 2)), PairDataset(prepared, (1, 2), images=False)
    assert lean.image is None and full.image is not None
    assert torch.equal(lean.series, full.series) and torch.equal(lean.labels, full.labels)
    batch = lean.get_batch(torch.tensor([0, 3]))
    assert "image" not in batch and torch.equal(batch["series"], full.series[[0, 3]])


def test_more_pairs_than_ram_holds_is_a_clear_error(data, monkeypatch):
    """Issue 15: every pixel of full PASTIS (~40M pairs) would not fit; say so, name the fix."""
    import pimc.training.pairs as pairs

    prepared, _, _ = data
    monkeypatch.setattr(pairs, "available_memory", lambda: 10_000)
    with pytest.raises(ConfigError, match=r"need ~.* GB of RAM.*prepare.pixels_per_patch"):
        PairDataset(prepared, (1, 2))
    monkeypatch.setattr(pairs, "available_memory", lambda: None)  # unknown: no check
    assert len(PairDataset(prepared, (1, 2))) == 2 * PIXELS


def test_materialized_and_on_the_fly_rps_agree(data):
    prepared, rp_dir, rcfg = data
    stored = PairDataset(prepared, (1, 2, 3, 4, 5), rp_dir, rcfg)
    fly = PairDataset(prepared, (1, 2, 3, 4, 5), recurrence_cfg=rcfg)
    idx = torch.randperm(len(stored), generator=torch.Generator().manual_seed(0))[:50]
    a, b = stored.get_batch(idx), fly.get_batch(idx)
    # A stored plot is the row of its RP shard that the manifest names.
    shard = np.load(rp_dir / "shards" / f"S2_{int(a['patch_id'][0])}.npy")
    assert torch.equal(a["rp"][0], torch.from_numpy(shard[int(a["index"][0])]).float())
    built = batch_rps(b, rcfg, "cpu")
    assert built.shape == a["rp"].shape == (50, 3, 32, 32)
    assert (built - batch_rps(a, rcfg, "cpu")).abs().max() < 2e-3
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_stale_rps_and_bad_folds_are_rejected(data):
    prepared, rp_dir, rcfg = data
    with pytest.raises(ConfigError, match="rerun the recurrence stage"):
        PairDataset(prepared, (1,), rp_dir, RecurrenceConfig(out=str(rp_dir), size=24))
    with pytest.raises(ConfigError, match="available folds"):
        PairDataset(prepared, (9,))


def test_image_stats(data):
    prepared, rp_dir, rcfg = data
    ds = PairDataset(prepared, (1, 2), recurrence_cfg=rcfg)
    images = []
    for name in ("S2_10000.npz", "S2_10001.npz"):
        with np.load(prepared / "shards" / name) as z:
            images.append(z["image"].astype(np.float64))
    x = np.concatenate(images)  # (N, 10, K, K)
    mean, std = ds.image_stats()
    assert mean.shape == std.shape == (10,)
    np.testing.assert_allclose(mean.numpy(), x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), x.std(axis=(0, 2, 3)), rtol=1e-4)


def test_random_date_selection(random_dates):
    ds = PairDataset(random_dates, (1, 2, 3), recurrence_cfg=RecurrenceConfig())
    assert ds.image.ndim == 5 and ds.image.shape[1] == 4
    idx = torch.arange(len(ds))
    a = ds.get_batch(idx, make_generator(1, 0))["image"]
    assert torch.equal(a, ds.get_batch(idx, make_generator(1, 0))["image"])
    b = ds.get_batch(idx, make_generator(2, 0))["image"]
    assert not torch.equal(a, b)
    # Each image is one of its row's R stored dates, and different dates do get picked.
    match = (ds.image.float() == a[:, None]).flatten(2).all(-1)  # (N, R)
    assert match.any(1).all()
    assert len(set(match.float().argmax(1).tolist())) == 4
    # __getitem__ draws from the dataset's own seeded generator.
    same = PairDataset(random_dates, (1, 2, 3), seed=0)
    other = PairDataset(random_dates, (1, 2, 3), seed=0)
    assert all(torch.equal(same[i]["image"], other[i]["image"]) for i in range(20))


def test_temporal_crop_builds_rp_of_a_window(data):
    prepared, _, rcfg = data
    ds = PairDataset(prepared, (1,), recurrence_cfg=rcfg)
    batch = ds.get_batch(torch.arange(8))
    crop = batch_rps(batch, rcfg, "cpu", crop=0.5, generator=make_generator(0, 2))
    again = batch_rps(batch, rcfg, "cpu", crop=0.5, generator=make_generator(0, 2))
    assert torch.equal(crop, again) and crop.shape == (8, 3, 32, 32)
    assert not torch.allclose(crop, batch_rps(batch, rcfg, "cpu"))
    keep = 46 - 23
    for b in range(8):
        windows = [
            build_rps(batch["series"][b : b + 1, :, o : o + keep], None, rcfg)[0]
            for o in range(46 - keep + 1)
        ]
        assert any(torch.allclose(crop[b], w) for w in windows)


def test_augment_images_are_dihedral_transforms():
    x = torch.randn(64, 2, 5, 5)
    y = augment_images(x, make_generator(0, 2))
    assert not torch.equal(x, y)
    for a, b in zip(x, y, strict=True):
        variants = [torch.rot90(v, k, (-2, -1)) for v in (a, a.flip(-1)) for k in range(4)]
        assert any(torch.equal(b, v) for v in variants)


def test_channel_dropout_never_drops_everything():
    rp = torch.ones(2000, 3, 4, 4)
    out = channel_dropout(rp, 0.6, make_generator(0, 2))
    kept = out.amax(dim=(-2, -1))  # (B, I): 1 kept, 0 dropped
    assert kept.sum(1).min() >= 1
    assert 0.3 < 1 - kept.mean() < 0.6  # some re-kept channels pull it below p
    assert torch.equal(channel_dropout(rp, 0.0, make_generator(0, 2)), rp)


def test_batch_loader_is_independent_of_workers(random_dates):
    ds = PairDataset(random_dates, (1, 2, 3))
    batches = epoch_batches(len(ds), 16, epoch=0, seed=0)
    seeds = list(range(100, 100 + len(batches)))
    inline = list(batch_loader(ds, batches, seeds))
    workers = list(batch_loader(ds, batches, seeds, num_workers=2))
    assert len(inline) == len(workers) == 6
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
        assert torch.equal(a["index"], ds.indices[batches[int(a["seed"]) - 100]])
