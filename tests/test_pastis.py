from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pimc.core.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError, InputError
from pimc.data import PASTIS


def all_folds(root):
    return PASTIS(root / "PASTIS", folds=PASTIS.all_folds)


def test_sample_keys_shapes_and_types(tiny_data):
    ds = all_folds(tiny_data)
    assert len(ds) == 5
    sample = ds[0]
    image, mask = sample["image"], sample["mask"]
    assert image.dtype == torch.float32 and image.ndim == 4 and image.shape[1] == 10
    assert mask.dtype == torch.int64 and mask.shape == image.shape[2:]
    assert sample["dates"].dtype == np.dtype("datetime64[D]")
    assert len(sample["dates"]) == image.shape[0]
    assert np.all(np.diff(sample["dates"]).astype(int) > 0)
    assert sample["dates"].min() >= np.datetime64("2018-09-01")
    assert int(mask.min()) >= 0 and int(mask.max()) <= 19
    raw = np.load(ds.s2_path(sample["id"]))
    assert torch.equal(image, torch.from_numpy(raw.astype(np.float32)))


def test_folds_filter_and_values(tiny_data):
    for fold in PASTIS.all_folds:
        ds = PASTIS(tiny_data / "PASTIS", folds=(fold,))
        assert len(ds) >= 1
        assert all(ds[i]["fold"] == fold for i in range(len(ds)))
    train = PASTIS(tiny_data / "PASTIS", folds=(1, 2, 3))
    assert sorted(train.metadata["fold"].unique()) == [1, 2, 3]


def test_bands_by_name(tiny_data):
    ds = PASTIS(tiny_data / "PASTIS", folds=PASTIS.all_folds, bands=("B8A", "B02"))
    sample = ds[0]
    raw = np.load(ds.s2_path(sample["id"])).astype(np.float32)
    assert torch.equal(sample["image"][:, 0], torch.from_numpy(raw[:, 7]))  # B8A is index 7
    assert torch.equal(sample["image"][:, 1], torch.from_numpy(raw[:, 0]))


def test_norm_is_average_over_folds(tiny_data):
    ds = PASTIS(tiny_data / "PASTIS", folds=(1, 2), bands=("B04", "B08"))
    table = json.loads((tiny_data / "PASTIS" / "NORM_S2_patch.json").read_text())
    mean, std = ds.norm()
    expected = (np.array(table["Fold_1"]["mean"]) + np.array(table["Fold_2"]["mean"])) / 2
    np.testing.assert_allclose(mean.numpy(), expected[[2, 6]], rtol=1e-6)
    assert std.shape == (2,) and bool((std > 0).all())


def test_dates_as_json_string(data_copy):
    meta = data_copy / "PASTIS" / "metadata.geojson"
    doc = json.loads(meta.read_text())
    for feat in doc["features"]:
        feat["properties"]["dates-S2"] = json.dumps(feat["properties"]["dates-S2"])
    meta.write_text(json.dumps(doc))
    ds = all_folds(data_copy)
    assert len(ds[0]["dates"]) == ds[0]["image"].shape[0]


def test_unknown_fold_and_band(tiny_data):
    with pytest.raises(ConfigError, match="fold"):
        PASTIS(tiny_data / "PASTIS", folds=(6,))
    with pytest.raises(ConfigError, match="B99.*B02"):
        PASTIS(tiny_data / "PASTIS", bands=("B99",))


def test_index_of_names_an_unknown_patch(tiny_data):
    ds = PASTIS(tiny_data / "PASTIS", folds=(1,))
    first = int(ds.metadata["id"][0])
    assert ds[ds.index_of(first)]["id"] == first
    with pytest.raises(InputError, match=r"patch 999999 is not in folds \(1,\)"):
        ds.index_of(999999)


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="metadata.geojson.*download"):
        PASTIS(tmp_path / "PASTIS")


def test_patch_file_missing_is_named(data_copy):
    ds = all_folds(data_copy)
    victim = ds.s2_path(int(ds.metadata["id"][2]))
    victim.unlink()
    with pytest.raises(DatasetNotFoundError, match=victim.name):
        all_folds(data_copy)


def test_truncated_npy_is_named(data_copy):
    ds = all_folds(data_copy)
    path = ds.s2_path(ds[0]["id"])
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError, match=rf"{path.name}.*truncated"):
        ds[0]


def test_garbage_npy_is_named(data_copy):
    ds = all_folds(data_copy)
    path = ds.s2_path(ds[0]["id"])
    path.write_bytes(b"not a numpy file at all")
    with pytest.raises(DatasetCorruptError, match=path.name):
        ds[0]


def test_date_count_mismatch(data_copy):
    ds = all_folds(data_copy)
    path = ds.s2_path(ds[0]["id"])
    np.save(path, np.load(path)[:-1])
    with pytest.raises(DatasetCorruptError, match=r"T=\d+ dates but metadata.geojson lists"):
        ds[0]


def test_target_wrong_shape(data_copy):
    ds = all_folds(data_copy)
    path = ds.target_path(ds[0]["id"])
    np.save(path, np.load(path)[0])
    with pytest.raises(DatasetCorruptError, match=rf"{path.name} has shape.*expected \(3,"):
        ds[0]


@pytest.mark.parametrize(
    "change, match",
    [
        ("duplicate", r"ID_PATCH \d+ listed more than once \(folds \[\d, \d\]"),
        ("fold", r"has Fold 7 \(1 patch\(es\) outside folds \[1, 2, 3, 4, 5\]\)"),
    ],
)
def test_metadata_with_a_patch_twice_or_an_unknown_fold_is_refused(data_copy, change, match):
    path = data_copy / "PASTIS" / "metadata.geojson"
    meta = json.loads(path.read_text())
    feats = meta["features"]
    if change == "duplicate":  # the same patch again, in another fold (train and test pixels)
        twin = json.loads(json.dumps(feats[0]))
        twin["properties"]["Fold"] = 1 + twin["properties"]["Fold"] % 5
        feats.append(twin)
    else:
        feats[1]["properties"]["Fold"] = 7
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetCorruptError, match=match):
        PASTIS(data_copy / "PASTIS", folds=PASTIS.all_folds)


def _edit_s2(ds, edit):
    path = ds.s2_path(ds[0]["id"])
    array = np.load(path)
    np.save(path, edit(array))
    return path


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda a: np.where(np.arange(a.shape[-1]) < 8, -5000, a).astype(a.dtype),
         r"values lie outside the reflectance range 0\.\.30000 \(min -5000"),
        (lambda a: np.full_like(a, 32767), r"outside the reflectance range.*max 32767"),
        (lambda a: np.zeros_like(a), r"every value is 0 \(an empty patch\)"),
        (lambda a: np.where(np.arange(a.shape[-1]) < 1, np.nan, a.astype(np.float32)),
         r"NaN/inf value"),
    ],
    ids=["negative", "saturated", "all_zero", "nan"],
)  # fmt: skip
def test_bad_reflectance_names_the_file(data_copy, edit, match):
    ds = all_folds(data_copy)
    path = _edit_s2(ds, edit)
    with pytest.raises(DatasetCorruptError, match=rf"{path.name}: .*{match}"):
        ds[0]


def test_a_few_out_of_range_values_are_clipped_and_counted(data_copy):
    ds = all_folds(data_copy)

    def poke(a):
        a = a.copy()
        a[0, 0, 0, :3] = (-5000, 32767, -1)
        return a

    _edit_s2(ds, poke)
    sample = ds[0]
    assert sample["clipped"] == 3
    assert sample["image"][0, 0, 0, :3].tolist() == [0.0, 30000.0, 0.0]
    assert ds[1]["clipped"] == 0


@pytest.mark.parametrize("value", [25, 255])
def test_a_target_class_outside_0_19_names_the_file(data_copy, value):
    ds = all_folds(data_copy)
    path = ds.target_path(ds[0]["id"])
    target = np.load(path)
    target[0, 0, 0] = value
    np.save(path, target)
    with pytest.raises(DatasetCorruptError, match=rf"{path.name}: class {value} in channel 0"):
        ds[0]


def test_a_norm_table_with_std_0_is_refused(data_copy):
    path = data_copy / "PASTIS" / "NORM_S2_patch.json"
    table = json.loads(path.read_text())
    for fold in table.values():
        fold["std"][3] = 0.0
    path.write_text(json.dumps(table))
    with pytest.raises(
        DatasetCorruptError, match=r"NORM_S2_patch.json: every band needs .* std > 0"
    ):
        all_folds(data_copy).norm()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: dict(list(d.items())[:2]), r"has 2 date\(s\) in 'dates-S2'; at least 3"),
        (lambda d: {**d, "1": d["0"]}, r"not strictly increasing"),
        (lambda d: {"0": d["1"], "1": d["0"], **{k: v for k, v in d.items() if k not in "01"}},
         r"not strictly increasing"),
    ],
    ids=["two_dates", "duplicate_date", "unsorted"],
)  # fmt: skip
def test_too_few_duplicate_or_unsorted_dates_name_the_patch(data_copy, edit, match):
    path = data_copy / "PASTIS" / "metadata.geojson"
    meta = json.loads(path.read_text())
    props = meta["features"][0]["properties"]
    dates = props["dates-S2"]
    dates = json.loads(dates) if isinstance(dates, str) else dates
    props["dates-S2"] = edit(dates)
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetCorruptError, match=rf"patch {props['ID_PATCH']}.*{match}|{match}"):
        PASTIS(data_copy / "PASTIS", folds=PASTIS.all_folds)
