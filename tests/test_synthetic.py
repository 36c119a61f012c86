"""Tests of the synthetic PASTIS / EuroSAT generator: layouts, determinism, learnability."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from pimc.core.errors import ConfigError
from pimc.data import synthetic_pastis
from pimc.data.synthetic import (
    EUROSAT_BASE_DIR,
    SyntheticSpec,
    _atomic_write,
    write_eurosat,
    write_pastis,
    write_synthetic,
)
from pimc.data.synthetic_eurosat import BANDS as EUROSAT_BANDS
from pimc.data.synthetic_eurosat import CLASSES as EUROSAT_CLASSES

SPEC = SyntheticSpec(seed=3, pastis_patches=10, eurosat_per_class=25)
TINY = SyntheticSpec(
    seed=1, pastis_patches=5, patch_size=16, min_dates=4, max_dates=8, eurosat_per_class=5
)
CROPS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    counts = write_synthetic(root, SPEC, progress=False)
    assert counts["pastis"]["patches"] == SPEC.pastis_patches
    assert counts["eurosat"]["tiles"] == 10 * SPEC.eurosat_per_class
    return root


def _patches(root: Path) -> list[dict]:
    return json.loads((root / "PASTIS" / "metadata.geojson").read_text())["features"]


def _days(feature: dict) -> np.ndarray:
    """Dates of a patch as days since the start of the season."""
    dates = feature["properties"]["dates-S2"]
    as_dates = [
        dt.datetime.strptime(str(dates[k]), "%Y%m%d").date() for k in sorted(dates, key=int)
    ]
    return np.array([(d - synthetic_pastis.SEASON_START).days for d in as_dates])


def _tiles(root: Path) -> dict[str, np.ndarray]:
    """Every tile of the synthetic EuroSAT zip, by stem."""
    out = {}
    with zipfile.ZipFile(root / "EuroSAT" / "EuroSATallBands.zip") as archive:
        for name in archive.namelist():
            if name.endswith(".tif"):
                with MemoryFile(archive.read(name)) as mem, mem.open() as src:
                    out[Path(name).stem] = src.read()
    return out


# -- spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"seed": -1},
        {"pastis_patches": 0},
        {"patch_size": 4},
        {"min_dates": 10, "max_dates": 5},
        {"max_dates": 10_000},
        {"cloud_prob": 1.5},
        {"eurosat_per_class": 2},
    ],
)
def test_spec_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError, match="SyntheticSpec"):
        SyntheticSpec(**bad)


# -- PASTIS -------------------------------------------------------------------------------------


def test_pastis_metadata(data: Path) -> None:
    metadata = json.loads((data / "PASTIS" / "metadata.geojson").read_text())
    assert metadata["type"] == "FeatureCollection"
    assert metadata["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::2154"
    features = metadata["features"]
    assert [f["properties"]["ID_PATCH"] for f in features] == list(range(10000, 10010))
    assert {f["properties"]["Fold"] for f in features} == {1, 2, 3, 4, 5}
    for feature in features:
        props = feature["properties"]
        assert isinstance(props["TILE"], str) and props["TILE"].startswith("t")
        assert isinstance(props["N_Parcel"], int) and 0 <= props["Parcel_Cover"] <= 1
        assert list(props["dates-S2"]) == [str(k) for k in range(len(props["dates-S2"]))]
        days = _days(feature)
        assert SPEC.min_dates <= len(days) <= SPEC.max_dates
        assert np.all(np.diff(days) > 0) and days[0] >= 0
        assert days[-1] < synthetic_pastis.SEASON_DAYS  # 2019-11-30 at the latest
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        xs, ys = {p[0] for p in ring}, {p[1] for p in ring}
        assert max(xs) - min(xs) == max(ys) - min(ys) == SPEC.patch_size * 10
        assert 5e5 < min(xs) < 8e5 and 6e6 < min(ys) < 7.2e6


def test_pastis_arrays(data: Path) -> None:
    root, size = data / "PASTIS", SPEC.patch_size
    semantic_values: set[int] = set()
    for feature in _patches(data):
        pid, props = feature["properties"]["ID_PATCH"], feature["properties"]
        s2 = np.load(root / "DATA_S2" / f"S2_{pid}.npy")
        target = np.load(root / "ANNOTATIONS" / f"TARGET_{pid}.npy")
        parcels = np.load(root / "ANNOTATIONS" / f"ParcelIDs_{pid}.npy")
        assert s2.dtype == np.int16 and s2.shape == (len(props["dates-S2"]), 10, size, size)
        assert 0 <= s2.min() and s2.max() <= 10000
        assert target.dtype == np.uint8 and target.shape == (3, size, size)
        assert parcels.dtype == np.int32 and parcels.shape == (size, size)
        semantic_values |= set(np.unique(target[0]).tolist())
        # Outside parcels only background (or a void border next to a parcel).
        assert set(np.unique(target[0][parcels == 0]).tolist()) <= {0, 19}
        assert props["N_Parcel"] == len(np.unique(parcels[parcels > 0]))
        assert props["Parcel_Cover"] == pytest.approx((parcels > 0).mean(), abs=1e-4)
    assert semantic_values <= set(range(20))
    assert {0, 19} <= semantic_values and len(semantic_values & CROPS) >= 3


def test_pastis_norm_matches_data(data: Path) -> None:
    root = data / "PASTIS"
    norm = json.loads((root / "NORM_S2_patch.json").read_text())
    assert sorted(norm) == [f"Fold_{k}" for k in range(1, 6)]
    for fold in norm.values():
        assert len(fold["mean"]) == len(fold["std"]) == 10
        assert all(s > 0 for s in fold["std"])
    ids = [f["properties"]["ID_PATCH"] for f in _patches(data) if f["properties"]["Fold"] == 2]
    values = np.concatenate(
        [
            np.load(root / "DATA_S2" / f"S2_{i}.npy").transpose(1, 0, 2, 3).reshape(10, -1)
            for i in ids
        ],
        axis=1,
    ).astype(np.float64)
    np.testing.assert_allclose(norm["Fold_2"]["mean"], values.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(norm["Fold_2"]["std"], values.std(axis=1), rtol=1e-6)


def test_pastis_classes_have_distinct_phenology(data: Path) -> None:
    """Spring NDVI: winter crops are green while summer crops are still bare soil."""
    root = data / "PASTIS"
    spring = (212, 273)  # April-May 2019, in days since 2018-09-01
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for feature in _patches(data):
        pid = feature["properties"]["ID_PATCH"]
        s2 = np.load(root / "DATA_S2" / f"S2_{pid}.npy").astype(np.float64)
        semantic = np.load(root / "ANNOTATIONS" / f"TARGET_{pid}.npy")[0]
        days = _days(feature)
        keep = (days >= spring[0]) & (days < spring[1])
        ndvi = (s2[keep, 6] - s2[keep, 2]) / (s2[keep, 6] + s2[keep, 2] + 1e-6)
        for cls in set(np.unique(semantic).tolist()) & CROPS:
            mask = semantic == cls
            sums[cls] = sums.get(cls, 0.0) + ndvi[:, mask].sum()
            counts[cls] = counts.get(cls, 0) + int(keep.sum() * mask.sum())
    means = np.array([sums[c] / counts[c] for c in sums if counts[c]])
    assert len(means) >= 3
    assert means.max() - means.min() > 0.2


def test_pastis_large_patch_works() -> None:
    rng = np.random.default_rng(0)
    patch = synthetic_pastis.generate_patch(rng, 128, 6, cloud_prob=0.5, id_offset=0)
    assert patch.s2.shape == (6, 10, 128, 128) and patch.target.shape == (3, 128, 128)
    assert patch.n_parcel > 15 and patch.target[1].max() < 256


def test_vegetation_fraction_is_bounded() -> None:
    days = np.arange(synthetic_pastis.SEASON_DAYS)
    for cover in synthetic_pastis.CROPS + synthetic_pastis.BACKGROUNDS:
        frac = synthetic_pastis.vegetation_fraction(cover, days)
        assert frac.min() >= 0 and frac.max() <= 1


# -- EuroSAT ------------------------------------------------------------------------------------


def test_eurosat_zip_layout(data: Path) -> None:
    archive_path = data / "EuroSAT" / "EuroSATallBands.zip"
    with zipfile.ZipFile(archive_path) as archive:
        tifs = sorted(n for n in archive.namelist() if not n.endswith("/"))
    expected = sorted(
        f"{EUROSAT_BASE_DIR}/{cls}/{cls}_{k}.tif"
        for cls in EUROSAT_CLASSES
        for k in range(1, SPEC.eurosat_per_class + 1)
    )
    assert tifs == expected
    assert list(EUROSAT_CLASSES) == sorted(EUROSAT_CLASSES)
    assert EUROSAT_BANDS[-1] == "B8A" and len(EUROSAT_BANDS) == 13
    for cls in ("Forest", "SeaLake"):
        with rasterio.open(f"/vsizip/{archive_path}/{EUROSAT_BASE_DIR}/{cls}/{cls}_3.tif") as src:
            assert src.driver == "GTiff" and src.count == 13 and src.dtypes[0] == "uint16"
            assert (src.width, src.height) == (64, 64) and src.res == (10.0, 10.0)
            assert src.crs is not None and 32631 <= src.crs.to_epsg() <= 32635


def test_eurosat_tiles_and_physics(data: Path) -> None:
    tiles = _tiles(data)
    assert len(tiles) == 10 * SPEC.eurosat_per_class
    assert all(t.shape == (13, 64, 64) and t.dtype == np.uint16 for t in tiles.values())
    band = {name: i for i, name in enumerate(EUROSAT_BANDS)}

    def mean(cls: str, name: str) -> float:
        return float(np.mean([t[band[name]].mean() for s, t in tiles.items() if s.startswith(cls)]))

    assert all(5 < t[band["B10"]].mean() < 60 for t in tiles.values())  # cirrus band
    assert mean("Forest", "B8A") > 2 * mean("Forest", "B04")
    assert mean("SeaLake", "B08") < 600 and mean("SeaLake", "B11") < 400
    assert mean("Pasture", "B8A") == pytest.approx(mean("Pasture", "B08"), rel=0.15)
    assert mean("Industrial", "B04") > mean("Forest", "B04")


def test_eurosat_splits(data: Path) -> None:
    root = data / "EuroSAT"
    splits = {
        s: (root / f"eurosat-{s}.txt").read_text().splitlines() for s in ("train", "val", "test")
    }
    names = [n for lines in splits.values() for n in lines]
    assert all(n.endswith(".jpg") for n in names)
    assert len(names) == len(set(names))  # disjoint
    assert {Path(n).stem for n in names} == set(_tiles(data))  # covering every tile
    n = SPEC.eurosat_per_class
    for split, share in (("train", 0.6), ("val", 0.2)):
        for cls in EUROSAT_CLASSES:
            assert sum(s.rsplit("_", 1)[0] == cls for s in splits[split]) == round(share * n)


def test_eurosat_mean_spectra_separate_classes(data: Path) -> None:
    tiles = _tiles(data)
    root = data / "EuroSAT"

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        stems = [Path(n).stem for n in (root / f"eurosat-{split}.txt").read_text().split()]
        x = np.stack([tiles[s].reshape(13, -1).mean(axis=1) for s in stems])
        y = np.array([EUROSAT_CLASSES.index(s.rsplit("_", 1)[0]) for s in stems])
        return x, y

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    mu, sd = x_train.mean(0), x_train.std(0)
    centroids = np.stack([((x_train - mu) / sd)[y_train == c].mean(0) for c in range(10)])
    dist = ((((x_test - mu) / sd)[:, None] - centroids[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == y_test).mean()
    assert accuracy > 0.6
    # ... yet tiles are not copies of a class template: they vary within a class and in space.
    for c in range(10):
        assert np.all(x_train[y_train == c].std(0) > 0)
    assert all(t.reshape(13, -1).std(axis=1).min() > 0 for t in tiles.values())


# -- determinism and safety ---------------------------------------------------------------------


def _contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = tmp_path / "a"
    write_synthetic(first, TINY, progress=False)
    write_synthetic(tmp_path / "b", TINY, progress=False)
    assert _contents(first) == _contents(tmp_path / "b")
    write_synthetic(first, TINY, progress=False)  # overwriting in place changes nothing
    assert _contents(first) == _contents(tmp_path / "b")

    other = tmp_path / "c"
    write_synthetic(other, SyntheticSpec(**{**TINY.__dict__, "seed": 2}), progress=False)
    a, c = _contents(first), _contents(other)
    assert a.keys() == c.keys()
    npys = [k for k in a if k.endswith(".npy")]
    assert npys and all(a[k] != c[k] for k in npys if "S2_" in k)
    assert a["EuroSAT/EuroSATallBands.zip"] != c["EuroSAT/EuroSATallBands.zip"]


def test_rerun_removes_stale_files(tmp_path: Path) -> None:
    write_pastis(
        tmp_path / "PASTIS", SyntheticSpec(**{**TINY.__dict__, "pastis_patches": 7}), progress=False
    )
    write_eurosat(tmp_path / "EuroSAT", TINY, progress=False)
    # What the EuroSAT reader leaves after extracting the zip.
    (tmp_path / "EuroSAT" / "ds").mkdir()
    (tmp_path / "EuroSAT" / ".extracted-EuroSATallBands.zip").touch()
    write_synthetic(tmp_path, TINY, progress=False)
    s2 = sorted(p.name for p in (tmp_path / "PASTIS" / "DATA_S2").iterdir())
    assert s2 == [f"S2_{10000 + i}.npy" for i in range(TINY.pastis_patches)]
    assert len(list((tmp_path / "PASTIS" / "ANNOTATIONS").iterdir())) == 2 * TINY.pastis_patches
    assert not (tmp_path / "EuroSAT" / "ds").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_refuses_to_overwrite_real_datasets(tmp_path: Path) -> None:
    (tmp_path / "PASTIS").mkdir()
    (tmp_path / "PASTIS" / "metadata.geojson").write_text('{"type": "FeatureCollection"}')
    with pytest.raises(ConfigError, match="refusing"):
        write_pastis(tmp_path / "PASTIS", TINY, progress=False)
    (tmp_path / "EuroSAT").mkdir()
    with zipfile.ZipFile(tmp_path / "EuroSAT" / "EuroSATallBands.zip", "w") as archive:
        archive.writestr("ds/x.tif", b"real")
    with pytest.raises(ConfigError, match="refusing"):
        write_eurosat(tmp_path / "EuroSAT", TINY, progress=False)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def fail(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _atomic_write(target, fail)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


# -- the real readers read it -------------------------------------------------------------------


def test_readers_load_synthetic_data(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import shutil

    from pimc.data.eurosat import EuroSAT
    from pimc.data.pastis import PASTIS

    pastis = PASTIS(data / "PASTIS", folds=(1, 2, 3, 4, 5))
    sample = pastis[0]
    assert len(pastis) == SPEC.pastis_patches
    assert tuple(sample["image"].shape[1:]) == (10, SPEC.patch_size, SPEC.patch_size)
    mean, std = pastis.norm()
    assert mean.shape == std.shape == (10,)
    # The reader extracts the zip next to it: work on a copy to keep the fixture pristine.
    shutil.copytree(data / "EuroSAT", tmp_path / "EuroSAT")
    eurosat = EuroSAT(tmp_path / "EuroSAT", split="val")
    assert len(eurosat) == 10 * round(0.2 * SPEC.eurosat_per_class)
    assert tuple(eurosat[0]["image"].shape) == (13, 64, 64)
