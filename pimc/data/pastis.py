"""PASTIS (Garnot & Landrieu, ICCV 2021): Sentinel-2 time series of French crop parcels.

On disk, ``root`` holds::

    metadata.geojson          one feature per patch: ID_PATCH, Fold (1-5), TILE, dates-S2, footprint
    NORM_S2_patch.json        {"Fold_k": {"mean": [10], "std": [10]}}
    DATA_S2/S2_<ID>.npy       int16 (T, 10, H, W), T = 38..61, reflectance x1e4
    ANNOTATIONS/TARGET_<ID>.npy     (3, H, W); channel 0 = semantic class 0..19
    ANNOTATIONS/ParcelIDs_<ID>.npy  (H, W)

One sample per patch. Cloudy dates are kept (PASTIS has no cloud mask).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pimc.core.bands import PASTIS_BANDS
from pimc.core.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError, InputError

_REMEDY = "re-extract PASTIS.zip, or re-run `dvc repro data` for the synthetic dataset"


class PASTIS(Dataset):
    """PASTIS patches, filtered by fold.

    Args:
        root: folder holding ``metadata.geojson``.
        folds: folds to use (1-5). Usual split: train (1, 2, 3), val (4,), test (5,).
        bands: band names to return, in this order (default: all 10 in file order).
        transforms: optional callable applied to each sample dict.
        download: fetch and extract ``PASTIS.zip`` (29 GB) into ``root``'s parent if missing.
        url: mirror of the zip (default :attr:`url`). md5: its md5 (``None`` skips the check).
        max_extract_gb: most GiB the zip may extract to (real PASTIS: ~30-40); refuses a
            decompression bomb before writing anything.

    Samples are dicts: ``image`` float32 (T, C, H, W) reflectance x1e4; ``mask`` int64 (H, W)
    semantic class (0 background, 19 void); ``parcels`` int64 (H, W) parcel ids (0 outside
    parcels), from ``ParcelIDs``; ``dates`` datetime64[D] (T,); ``id`` int (ID_PATCH);
    ``fold`` int.

    Raises:
        DatasetNotFoundError: ``metadata.geojson`` or a patch's file is missing.
        ConfigError: unknown fold or band.
    """

    url = "https://zenodo.org/records/5012942/files/PASTIS.zip?download=1"
    md5 = "cfc441bf18137ff0bbf4fad58828fb98"
    filename = "PASTIS.zip"
    band_names = PASTIS_BANDS
    classes = (
        "Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed",
        "Spring barley", "Sunflower", "Grapevine", "Beet", "Winter triticale",
        "Winter durum wheat", "Fruits, vegetables, flowers", "Potatoes", "Leguminous fodder",
        "Soybeans", "Orchard", "Mixed cereal", "Sorghum", "Void label",
    )  # fmt: skip
    background_index = 0
    void_index = 19
    # Reflectance x1e4 of L2A surface reflectance; int16's 32767 and negatives are not
    # reflectances. A few such values (<= max_invalid_share of a patch) are clipped and counted
    # (``sample["clipped"]``), more make the file corrupt.
    reflectance_range = (0, 30000)
    max_invalid_share = 1e-3
    min_dates = 3  # fewer cannot be resampled or despiked (real PASTIS: 38-61)
    all_folds = (1, 2, 3, 4, 5)
    # The official 5-fold rotations (train, val, test).
    rotations = (
        ((1, 2, 3), (4,), (5,)),
        ((2, 3, 4), (5,), (1,)),
        ((3, 4, 5), (1,), (2,)),
        ((4, 5, 1), (2,), (3,)),
        ((5, 1, 2), (3,), (4,)),
    )

    def __init__(
        self,
        root: str | Path = "data/raw/PASTIS",
        folds: Sequence[int] = (1, 2, 3),
        bands: Sequence[str] = band_names,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        download: bool = False,
        url: str | None = None,
        md5: str | None = md5,
        max_extract_gb: float = 64.0,
    ) -> None:
        self.max_extract_gb = max_extract_gb
        bad_folds = [f for f in folds if f not in self.all_folds]
        if bad_folds or not folds:
            raise ConfigError(f"PASTIS: unknown fold(s) {bad_folds or '(none)'}; folds are 1-5")
        unknown = [b for b in bands if b not in self.band_names]
        if unknown or not bands:
            raise ConfigError(
                f"PASTIS: unknown band(s) {unknown or '(none given)'}; "
                f"valid names: {', '.join(self.band_names)}"
            )
        self.root = Path(root)
        self.folds = tuple(int(f) for f in folds)
        self.bands = tuple(bands)
        self.band_indices = [self.band_names.index(b) for b in self.bands]
        self.transforms = transforms
        if download:
            self._download(url or self.url, md5)
        self.metadata = self._load_metadata()
        self._verify()

    # -- on-disk checks ------------------------------------------------------------------------

    def _download(self, url: str, md5: str | None) -> None:
        from pimc.data.download import download_url, extract_archive

        if (self.root / "metadata.geojson").is_file():
            return
        # The zip's top folder is PASTIS/, so it is extracted beside root.
        archive = download_url(url, self.root.parent / self.filename, md5)
        extract_archive(archive, self.root.parent, max_bytes=int(self.max_extract_gb * 2**30))

    def _load_metadata(self) -> pd.DataFrame:
        path = self.root / "metadata.geojson"
        if not path.is_file():
            raise DatasetNotFoundError(
                f"PASTIS not found: {path} is missing. Run `pimc download pastis --root "
                f"{self.root}`, pass download=True, or extract PASTIS.zip (from {self.url}) so "
                f"that {self.root} holds metadata.geojson, DATA_S2/ and ANNOTATIONS/."
            )
        table, _ = read_metadata(path)
        return table[table["fold"].isin(self.folds)].reset_index(drop=True)

    @staticmethod
    def _parse_feature(feature: dict) -> tuple:
        props = feature["properties"]
        dates = props["dates-S2"]
        if isinstance(dates, str):  # some exports store the dict as a JSON string
            dates = json.loads(dates)
        ordered = [dates[k] for k in sorted(dates, key=int)]
        parsed = pd.to_datetime([str(d) for d in ordered], format="%Y%m%d").values
        return (
            int(props["ID_PATCH"]),
            int(props["Fold"]),
            props.get("TILE"),
            parsed.astype("datetime64[D]"),
            feature.get("geometry"),
        )

    def _verify(self) -> None:
        missing = []
        for pid in self.metadata["id"]:
            for path in (self.s2_path(pid), self.target_path(pid), self.parcel_path(pid)):
                if not path.is_file():
                    missing.append(path)
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} file(s) of patches listed in {self.root / 'metadata.geojson'} "
                f"are missing, e.g. {missing[0]}; {_REMEDY}, or drop those patches from the "
                "metadata."
            )

    # -- paths and norms -----------------------------------------------------------------------

    def s2_path(self, patch_id: int) -> Path:
        return self.root / "DATA_S2" / f"S2_{patch_id}.npy"

    def target_path(self, patch_id: int) -> Path:
        return self.root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy"

    def parcel_path(self, patch_id: int) -> Path:
        return self.root / "ANNOTATIONS" / f"ParcelIDs_{patch_id}.npy"

    def source_signature(self, patch_id: int) -> str:
        """Size and modification time of the patch's three files: what a cached product of the
        patch (a prepare shard) was made from."""
        parts = []
        for path in (self.s2_path(patch_id), self.target_path(patch_id), self.parcel_path(patch_id)):
            st = path.stat()
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
        return ";".join(parts)

    def norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band (mean, std) of the selected bands, averaged over this dataset's folds."""
        path = self.root / "NORM_S2_patch.json"
        try:
            table = json.loads(path.read_text())
            mean = np.mean([table[f"Fold_{f}"]["mean"] for f in self.folds], axis=0)
            std = np.mean([table[f"Fold_{f}"]["std"] for f in self.folds], axis=0)
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"{path} is missing; {_REMEDY}") from err
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DatasetCorruptError(f"{path}: unreadable normalisation table ({err})") from err
        if mean.shape != (len(self.band_names),) or std.shape != mean.shape:
            raise DatasetCorruptError(f"{path}: expected 10 values per fold, got {mean.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DatasetCorruptError(
                f"{path}: every band needs a finite mean and a std > 0 (got std {std.tolist()}); "
                f"standardising by it would give non-finite values. {_REMEDY}"
            )
        idx = self.band_indices
        return torch.tensor(mean[idx], dtype=torch.float32), torch.tensor(
            std[idx], dtype=torch.float32
        )

    # -- Dataset protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One patch: ``image`` (T, C, H, W), ``mask`` and ``parcels`` (H, W), ``dates``,
        ``id``, ``fold``."""
        row = self.metadata.iloc[index]
        pid = int(row["id"])
        series = self._load_npy(self.s2_path(pid))
        if series.ndim != 4 or series.shape[1] != len(self.band_names):
            raise DatasetCorruptError(
                f"{self.s2_path(pid)} has shape {series.shape}; expected (T, 10, H, W); {_REMEDY}"
            )
        dates = row["dates"]
        if series.shape[0] != len(dates):
            raise DatasetCorruptError(
                f"{self.s2_path(pid)} has T={series.shape[0]} dates but metadata.geojson lists "
                f"{len(dates)} in 'dates-S2' for patch {pid}; the files do not belong together. "
                f"{_REMEDY}"
            )
        series, clipped = self._checked_reflectance(series, pid)
        target = self._load_npy(self.target_path(pid))
        if target.shape != (3, *series.shape[2:]):
            raise DatasetCorruptError(
                f"{self.target_path(pid)} has shape {target.shape}; expected "
                f"(3, {series.shape[2]}, {series.shape[3]}) to match its S2 patch; {_REMEDY}"
            )
        labels = target[0]
        outside = labels[(labels < 0) | (labels >= len(self.classes))]
        if outside.size:
            raise DatasetCorruptError(
                f"{self.target_path(pid)}: class {int(outside[0])} in channel 0 ({outside.size} "
                f"pixels); PASTIS classes are 0..{len(self.classes) - 1}. {_REMEDY}"
            )
        parcels = self._load_npy(self.parcel_path(pid))
        if parcels.shape != target.shape[1:]:
            raise DatasetCorruptError(
                f"{self.parcel_path(pid)} has shape {parcels.shape}; expected "
                f"{target.shape[1:]} to match its TARGET file; {_REMEDY}"
            )
        sample = {
            "image": torch.from_numpy(series[:, self.band_indices].astype(np.float32)),
            "mask": torch.from_numpy(target[0].astype(np.int64)),
            "parcels": torch.from_numpy(parcels.astype(np.int64)),
            "dates": dates,
            "id": pid,
            "fold": int(row["fold"]),
            "clipped": clipped,
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def _checked_reflectance(self, series: np.ndarray, pid: int) -> tuple[np.ndarray, int]:
        """``series`` with the few out-of-range values clipped, and how many there were.

        Raises:
            DatasetCorruptError: non-finite values, an all-zero patch, or more than
                ``max_invalid_share`` of the values outside ``reflectance_range``.
        """
        path, (low, high) = self.s2_path(pid), self.reflectance_range
        if series.dtype.kind == "f" and not np.isfinite(series).all():
            bad = int((~np.isfinite(series)).sum())
            raise DatasetCorruptError(f"{path}: {bad} NaN/inf value(s); {_REMEDY}")
        if not series.any():
            raise DatasetCorruptError(f"{path}: every value is 0 (an empty patch); {_REMEDY}")
        invalid = int(((series < low) | (series > high)).sum())
        if invalid > self.max_invalid_share * series.size:
            raise DatasetCorruptError(
                f"{path}: {invalid} of {series.size} values lie outside the reflectance range "
                f"{low}..{high} (min {series.min()}, max {series.max()}); PASTIS stores L2A "
                f"reflectance x 10000. {_REMEDY}"
            )
        return (np.clip(series, low, high) if invalid else series), invalid

    @staticmethod
    def _load_npy(path: Path) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"{path} is missing; {_REMEDY}") from err
        except (ValueError, OSError, EOFError) as err:
            raise DatasetCorruptError(
                f"{path}: cannot read ({err}); the file is truncated or not a .npy array. {_REMEDY}"
            ) from err

    def index_of(self, patch_id: int) -> int:
        """Position of ``ID_PATCH`` in this dataset.

        Raises:
            InputError: no patch of this dataset's folds has that id.
        """
        hits = np.flatnonzero(self.metadata["id"].to_numpy() == int(patch_id))
        if not len(hits):
            raise InputError(
                f"PASTIS: patch {patch_id} is not in folds {self.folds} of {self.root}"
            )
        return int(hits[0])


def read_metadata(path: str | Path) -> tuple[pd.DataFrame, str | None]:
    """Every patch of a PASTIS ``metadata.geojson`` and the CRS of its footprints.

    Returns:
        A table sorted by ``id`` with columns ``id``, ``fold``, ``tile``, ``dates``
        (datetime64[D] arrays) and ``geometry`` (GeoJSON dicts), and the name in the file's
        old-style GeoJSON ``crs`` member (``urn:ogc:def:crs:EPSG::2154`` in the real file;
        None when absent: footprints are projected, so it cannot default to WGS 84).

    Raises:
        DatasetCorruptError: not a readable PASTIS metadata file.
    """
    try:
        collection = json.loads(Path(path).read_text())
        rows = [PASTIS._parse_feature(f) for f in collection["features"]]
        crs = (collection.get("crs") or {}).get("properties", {}).get("name")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetCorruptError(
            f"{path}: not a PASTIS metadata file ({type(err).__name__}: {err}); {_REMEDY}"
        ) from err
    table = pd.DataFrame(rows, columns=["id", "fold", "tile", "dates", "geometry"])
    _check_metadata(table, path)
    return table.sort_values("id").reset_index(drop=True), crs


def _check_metadata(table: pd.DataFrame, path: str | Path) -> None:
    """A patch listed twice would put the same pixels in two folds (train and test), and a
    fold outside 1-5 would drop its patch from every split: both are errors, never silent."""
    dup = table["id"][table["id"].duplicated()].unique()
    if len(dup):
        raise DatasetCorruptError(
            f"{path}: ID_PATCH {', '.join(map(str, dup[:5]))} listed more than once (folds "
            f"{sorted(set(table['fold'][table['id'] == dup[0]]))} for {dup[0]}); each patch must "
            f"appear once. {_REMEDY}"
        )
    for pid, dates in zip(table["id"], table["dates"], strict=True):
        if len(dates) < PASTIS.min_dates:
            raise DatasetCorruptError(
                f"{path}: patch {pid} has {len(dates)} date(s) in 'dates-S2'; at least "
                f"{PASTIS.min_dates} are needed (real PASTIS: 38-61). Drop the patch. {_REMEDY}"
            )
        steps = np.diff(dates.astype("datetime64[D]").astype(np.int64))
        if (steps <= 0).any():
            at = int(np.flatnonzero(steps <= 0)[0])
            raise DatasetCorruptError(
                f"{path}: patch {pid}'s 'dates-S2' are not strictly increasing ({dates[at]} then "
                f"{dates[at + 1]}, entries {at} and {at + 1}); list each date once, in order. "
                f"{_REMEDY}"
            )
    bad = table[~table["fold"].isin(PASTIS.all_folds)]
    if len(bad):
        raise DatasetCorruptError(
            f"{path}: patch {bad['id'].iloc[0]} has Fold {bad['fold'].iloc[0]} ({len(bad)} "
            f"patch(es) outside folds {list(PASTIS.all_folds)}). {_REMEDY}"
        )
