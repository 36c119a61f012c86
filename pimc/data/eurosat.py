"""EuroSAT multispectral (Sentinel-2, 13 bands), read from the torchgeo mirror's layout.

On disk, ``root`` holds::

    EuroSATallBands.zip           ds/images/remote_sensing/otherDatasets/sentinel_2/tif/
                                      <Class>/<Class>_<n>.tif   (64x64, 13 bands, uint16)
    eurosat-train.txt             one name per line, "<Class>_<n>.jpg" (made for the RGB
    eurosat-val.txt               release: matched to the .tif tiles by stem)
    eurosat-test.txt

The zip is extracted in place on first use (atomically). Band order in the files is
B01..B12 then **B8A last**; bands are selected by name, so callers never index by position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pimc.core.bands import EUROSAT_BANDS, PASTIS_BANDS
from pimc.core.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError


class EuroSAT(Dataset):
    """EuroSAT-MS land-cover tiles.

    Args:
        root: folder holding ``EuroSATallBands.zip`` (or its extraction) and the split files.
        split: ``"train"``, ``"val"`` or ``"test"`` (official torchgeo split files).
        bands: band names to return, in this order (default: all 13 in file order).
        transforms: optional callable applied to each sample dict.
        download: fetch the zip and split files if missing (md5-checked).
        url: base URL of a mirror (default :attr:`url`).
        md5: md5 of the zip at that mirror (default :attr:`md5`; ``None`` skips the check).
        max_extract_gb: most GiB the zip may extract to (real EuroSAT-MS: ~2.8).

    Samples are dicts: ``image`` float32 (C, 64, 64) reflectance x1e4 in the order of ``bands``;
    ``label`` int, index into :attr:`classes`.

    Raises:
        DatasetNotFoundError: nothing found in ``root`` and ``download`` is False.
        ConfigError: unknown split or band name.
    """

    url = (
        "https://hf.co/datasets/torchgeo/eurosat/resolve/1ce6f1bfb56db63fd91b6ecc466ea67f2509774c/"
    )
    filename = "EuroSATallBands.zip"
    md5 = "5ac12b3b2557aa56e1826e981e8e200e"
    split_filenames = {
        "train": "eurosat-train.txt",
        "val": "eurosat-val.txt",
        "test": "eurosat-test.txt",
    }
    split_md5s = {
        "train": "908f142e73d6acdf3f482c5e80d851b1",
        "val": "95de90f2aa998f70a3b2416bfe0687b4",
        "test": "7ae5ab94471417b6e315763121e67c5f",
    }
    base_dir = "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"
    all_band_names = EUROSAT_BANDS
    # The 10 bands PASTIS also has, in PASTIS order: one image encoder serves both datasets.
    pastis_bands = PASTIS_BANDS
    classes = (
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
        "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
    )  # fmt: skip
    tile_size = 64

    def __init__(
        self,
        root: str | Path = "data/raw/EuroSAT",
        split: str = "train",
        bands: Sequence[str] = all_band_names,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        download: bool = False,
        url: str | None = None,
        md5: str | None = md5,
        max_extract_gb: float = 8.0,
    ) -> None:
        self.max_extract_gb = max_extract_gb
        if split not in self.split_filenames:
            raise ConfigError(
                f"EuroSAT: unknown split '{split}'; choose one of {', '.join(self.split_filenames)}"
            )
        unknown = [b for b in bands if b not in self.all_band_names]
        if unknown or not bands:
            raise ConfigError(
                f"EuroSAT: unknown band(s) {unknown or '(none given)'}; "
                f"valid names: {', '.join(self.all_band_names)}"
            )
        self.root = Path(root)
        self.split = split
        self.bands = tuple(bands)
        self.band_indices = [self.all_band_names.index(b) + 1 for b in self.bands]  # 1-based
        self.transforms = transforms
        self.download = download
        self.mirror = url or self.url
        self.zip_md5 = md5
        self._verify()
        self.files, self.labels = self._load_split()

    # -- on-disk checks ------------------------------------------------------------------------

    def _verify(self) -> None:
        """Make sure the tiles and split files are there: extract, or download, or explain."""
        tif_dir = self.root / self.base_dir
        archive = self.root / self.filename
        split_file = self.root / self.split_filenames[self.split]
        if self.download:
            self._download()
        if not tif_dir.is_dir():
            if not archive.is_file():
                raise DatasetNotFoundError(
                    f"EuroSAT not found in {self.root}: expected {self.filename} or its "
                    f"extraction {self.base_dir}/. Run `pimc download eurosat --root {self.root}`, "
                    f"pass download=True, or place {self.filename} and the split files there by "
                    f"hand (from {self.mirror})."
                )
            from pimc.data.download import extract_archive

            extract_archive(archive, self.root, max_bytes=int(self.max_extract_gb * 2**30))
        if not split_file.is_file():
            raise DatasetNotFoundError(
                f"EuroSAT split file {split_file} is missing. Download it from "
                f"{self.mirror}{split_file.name} (or pass download=True)."
            )

    def _download(self) -> None:
        from pimc.data.download import download_url

        if not (self.root / self.base_dir).is_dir():
            download_url(self.mirror + self.filename, self.root / self.filename, self.zip_md5)
        for split, name in self.split_filenames.items():
            # Split files only match the pinned md5 at the pinned mirror.
            md5 = self.split_md5s[split] if self.mirror == self.url else None
            download_url(self.mirror + name, self.root / name, md5)

    def _load_split(self) -> tuple[list[Path], list[int]]:
        split_file = self.root / self.split_filenames[self.split]
        names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        files, labels, missing = [], [], []
        for name in names:
            stem = Path(name).stem
            cls = stem.rsplit("_", 1)[0]
            if cls not in self.classes:
                raise DatasetCorruptError(
                    f"{split_file}: entry '{name}' does not start with a EuroSAT class name "
                    f"({', '.join(self.classes)}); the split file is not EuroSAT's."
                )
            path = self.root / self.base_dir / cls / f"{stem}.tif"
            if not path.is_file():
                missing.append(path)
            files.append(path)
            labels.append(self.classes.index(cls))
        if not names:
            raise DatasetCorruptError(
                f"{split_file} lists no tile; the {self.split} split would be empty. Download "
                f"the split file again from {self.mirror}{split_file.name}."
            )
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} tile(s) listed in {split_file} are missing, e.g. {missing[0]}. "
                f"Delete {self.root / 'ds'} and its .extracted-* marker to re-extract "
                f"{self.filename}, or re-download it."
            )
        return files, labels

    # -- Dataset protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return ``{"image": float32 (C, 64, 64), "label": int}``."""
        sample = {
            "image": torch.from_numpy(self.read_tile(self.files[index])),
            "label": self.labels[index],
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def read_tile(self, path: str | Path) -> np.ndarray:
        """Read the selected bands of one GeoTIFF tile as float32 (C, H, W)."""
        return read_tile(path, self.bands)

    @property
    def targets(self) -> list[int]:
        """Labels of every sample, in order (for stratified sampling and class counts)."""
        return list(self.labels)


def read_tile(path: str | Path, bands: Sequence[str] = EuroSAT.all_band_names) -> np.ndarray:
    """Read ``bands`` (by name) of one EuroSAT-MS GeoTIFF tile as float32 ``(C, H, W)``.

    Raises:
        ConfigError: an unknown band name.
        DatasetCorruptError: not a readable 13-band EuroSAT-MS tile.
    """
    import rasterio
    from rasterio.errors import RasterioError

    names = EuroSAT.all_band_names
    unknown = [b for b in bands if b not in names]
    if unknown:
        raise ConfigError(f"EuroSAT: unknown band(s) {unknown}; valid names: {', '.join(names)}")
    try:
        with rasterio.open(path) as src:
            if src.count != len(names):
                raise DatasetCorruptError(
                    f"{path} has {src.count} bands, expected {len(names)} "
                    f"({', '.join(names)}); it is not a EuroSAT-MS tile. "
                    "Re-extract or re-download the archive."
                )
            data = src.read([names.index(b) + 1 for b in bands])  # rasterio bands are 1-based
    except RasterioError as err:
        raise DatasetCorruptError(
            f"{path}: cannot read GeoTIFF ({err}); re-extract or re-download the archive."
        ) from err
    if not np.isfinite(data).all():  # a float tile: NaN would silently poison training
        bad = int((~np.isfinite(data)).sum())
        raise DatasetCorruptError(
            f"{path}: {bad} NaN/inf value(s); EuroSAT-MS tiles hold finite digital numbers. "
            "Re-extract or re-download the archive, or drop the tile from the split files."
        )
    return data.astype(np.float32)
