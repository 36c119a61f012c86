from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
import torch

from pimc.core.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError
from pimc.data import EuroSAT


def test_splits_labels_and_shapes(tiny_data):
    root = tiny_data / "EuroSAT"
    sizes = {s: len(EuroSAT(root, split=s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 10 * 5 and min(sizes.values()) > 0
    ds = EuroSAT(root, split="train")
    sample = ds[0]
    assert sample["image"].shape == (13, 64, 64) and sample["image"].dtype == torch.float32
    assert set(ds.targets) == set(range(10))
    name = ds.files[0].stem.rsplit("_", 1)[0]
    assert EuroSAT.classes[sample["label"]] == name


def test_b8a_comes_from_the_last_file_band(tiny_data):
    ds = EuroSAT(tiny_data / "EuroSAT", bands=("B8A", "B08", "B02"))
    with rasterio.open(ds.files[3]) as src:
        raw = src.read().astype(np.float32)
    image = ds[3]["image"].numpy()
    np.testing.assert_array_equal(image[0], raw[12])
    np.testing.assert_array_equal(image[1], raw[7])
    np.testing.assert_array_equal(image[2], raw[1])


def test_extracts_zip_when_needed(data_copy):
    root = data_copy / "EuroSAT"
    shutil.rmtree(root / "ds", ignore_errors=True)  # another test may have extracted it
    for marker in root.glob(".extracted-*"):
        marker.unlink()
    EuroSAT(root)
    assert (root / EuroSAT.base_dir).is_dir()
    assert len(EuroSAT(root, split="test")) > 0


def test_unknown_split_and_band(tiny_data):
    with pytest.raises(ConfigError, match="split 'dev'"):
        EuroSAT(tiny_data / "EuroSAT", split="dev")
    with pytest.raises(ConfigError, match="B13"):
        EuroSAT(tiny_data / "EuroSAT", bands=("B13",))


def test_missing_dataset_explains_remedy(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="EuroSATallBands.zip.*download"):
        EuroSAT(tmp_path)


def test_wrong_band_count_is_named(data_copy):
    ds = EuroSAT(data_copy / "EuroSAT")
    path = ds.files[0]
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(count=12)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:12])
    with pytest.raises(DatasetCorruptError, match=rf"{path.name} has 12 bands, expected 13"):
        ds[0]


def test_a_float_tile_with_nan_is_named(data_copy):
    """Issue 13: one NaN tile used to give 97,502 NaN weights and a 'successful' stage."""
    ds = EuroSAT(data_copy / "EuroSAT")
    path = ds.files[0]
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read().astype(np.float32)
    data[3, 10, 10] = np.nan
    profile.update(dtype="float32")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(DatasetCorruptError, match=rf"{path.name}: 1 NaN/inf value"):
        ds[0]


def test_an_empty_split_file_is_named(data_copy):
    root = data_copy / "EuroSAT"
    split_file = root / EuroSAT.split_filenames["val"]
    split_file.write_text("\n")
    with pytest.raises(DatasetCorruptError, match=rf"{split_file.name} lists no tile"):
        EuroSAT(root, split="val")
