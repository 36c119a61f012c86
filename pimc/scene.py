"""Your own Sentinel-2 scenes: per-date GeoTIFFs or one multi-date stack -> a tiled COG map.

Two layouts are read (``pimc predict --scene PATH``):

* a **folder of per-date GeoTIFFs**, one file per acquisition, its date in the file name
  (``YYYYMMDD`` or ``YYYY-MM-DD`` anywhere, e.g. ``S2B_20190514_T31TFM.tif``), each holding
  the 10 PASTIS bands (order from the band descriptions when every band has one, else
  ``bands``, else PASTIS order) on one grid (CRS, transform, shape);
* **one stack** of T x 10 bands described ``<band>_<date>`` (e.g. ``B04_2019-05-14``).

Values are surface reflectance x 1e4, as in PASTIS. A pixel's observation that is nodata (the
file's nodata value, or 0 in every band) becomes NaN; the pipeline's despiking fills it where
it can, and pixels whose series stay incomplete get no prediction (counted in the summary).

Prediction, window by window into a Cloud-Optimized GeoTIFF, is :mod:`pimc.scene_predict`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pimc.core.bands import PASTIS_BANDS
from pimc.core.errors import InputError

__all__ = ["Scene", "open_scene"]

_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_STACK_BAND = re.compile(r"^(B\d{2}|B8A)_(\d{4}-?\d{2}-?\d{2})$")
SUFFIXES = (".tif", ".tiff")


@dataclass
class Scene:
    """An opened scene: where each date's bands are, and the common grid.

    Attributes:
        dates: ``(T,)`` datetime64[D], ascending.
        sources: Per date, ``(file, 1-based band indexes in PASTIS band order)``.
        crs, transform, height, width: The grid every file shares.
        nodata: Per file, its nodata value (or None).
    """

    dates: np.ndarray
    sources: list[tuple[Path, list[int]]]
    crs: Any
    transform: Any
    height: int
    width: int
    nodata: dict[Path, float | None] = field(default_factory=dict)

    def windows(self, size: int) -> Iterator[Any]:
        """The ``size`` x ``size`` windows (``rasterio.windows.Window``) covering the scene."""
        from rasterio.windows import Window

        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(col, row, min(size, self.width - col), min(size, self.height - row))

    def read(self, window: Any, files: dict[Path, Any]) -> torch.Tensor:
        """``(T, 10, h, w)`` float32 reflectance of ``window``; nodata observations are NaN."""
        out = []
        for path, indexes in self.sources:
            data = files[path].read(indexes, window=window).astype(np.float32)
            missing = (data == 0).all(axis=0)
            if self.nodata.get(path) is not None:
                missing |= (data == self.nodata[path]).any(axis=0)
            data[:, missing] = np.nan
            out.append(data)
        return torch.from_numpy(np.stack(out))


def _date_in(path: Path) -> np.datetime64:
    match = _DATE.search(path.stem)
    if match:
        try:
            return np.datetime64("-".join(match.groups()), "D")
        except ValueError:
            pass
    raise InputError(
        f"{path}: no acquisition date in the file name; name each file with its date "
        "(YYYYMMDD or YYYY-MM-DD, e.g. S2B_20190514_T31TFM.tif)"
    )


def _band_order(path: Path, src: Any, bands: Sequence[str] | None) -> list[int]:
    """1-based indexes of the PASTIS bands in ``src``, in PASTIS order."""
    names = list(src.descriptions)
    if len(names) == len(PASTIS_BANDS) and set(names) == set(PASTIS_BANDS):  # None: undescribed
        return [names.index(b) + 1 for b in PASTIS_BANDS]
    if bands is None and src.count == len(PASTIS_BANDS):
        return list(range(1, src.count + 1))
    if bands is None or len(bands) != src.count or sorted(bands) != sorted(PASTIS_BANDS):
        raise InputError(
            f"{path} has {src.count} bands described {names}; pimc needs the 10 bands "
            f"{','.join(PASTIS_BANDS)}: describe them in the file or pass --bands with the "
            "file's band order"
        )
    return [list(bands).index(b) + 1 for b in PASTIS_BANDS]


def _grid(path: Path, src: Any) -> tuple[Any, Any, int, int]:
    return src.crs, src.transform, src.height, src.width


def open_scene(path: str | Path, bands: Sequence[str] | None = None) -> Scene:
    """Open a folder of per-date GeoTIFFs or a multi-date stack (see the module docstring).

    Raises:
        InputError: an empty folder, a file without a date, two files of one date, files on
            different grids, bands that cannot be matched to the 10 PASTIS bands.
    """
    import rasterio

    path = Path(path)
    if not path.exists():
        raise InputError(f"--scene {path}: no such file or folder")
    if path.is_file():
        return _open_stack(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"--scene {path}: no .tif/.tiff files in the folder")
    by_date: dict[np.datetime64, tuple[Path, list[int]]] = {}
    first, grid, nodata = files[0], None, {}
    for file in files:
        date = _date_in(file)
        if date in by_date:
            raise InputError(
                f"{by_date[date][0]} and {file} are both dated {date}: keep one per acquisition"
            )
        with rasterio.open(file) as src:
            this = _grid(file, src)
            if grid is None:
                grid = this
            elif this != grid:
                raise InputError(
                    f"{file} is on another grid than {first} (CRS {this[0]} vs {grid[0]}, "
                    f"shape {this[2:]} vs {grid[2:]}, transform {tuple(this[1])[:6]} vs "
                    f"{tuple(grid[1])[:6]}): resample every date to one grid"
                )
            by_date[date] = (file, _band_order(file, src, bands))
            nodata[file] = src.nodata
    dates = np.array(sorted(by_date), dtype="datetime64[D]")
    crs, transform, height, width = grid
    sources = [by_date[d] for d in dates]
    return Scene(dates, sources, crs, transform, height, width, nodata)


def _open_stack(path: Path) -> Scene:
    """One GeoTIFF of T x 10 bands described ``<band>_<date>``."""
    import rasterio

    with rasterio.open(path) as src:
        names, nodata = list(src.descriptions), src.nodata
        crs, transform, height, width = _grid(path, src)
    by_date: dict[np.datetime64, dict[str, int]] = {}
    for index, name in enumerate(names, start=1):
        match = _STACK_BAND.match(name or "")
        if not match:
            raise InputError(
                f"{path}: band {index} is described {name!r}; a multi-date stack needs every "
                "band described <band>_<date>, e.g. B04_2019-05-14 (or give a folder of "
                "per-date files)"
            )
        date = np.datetime64(_date_in(Path(match.group(2))), "D")
        by_date.setdefault(date, {})[match.group(1)] = index
    for date, found in by_date.items():
        if sorted(found) != sorted(PASTIS_BANDS):
            raise InputError(
                f"{path}: date {date} has bands {sorted(found)}; every date needs "
                f"{','.join(PASTIS_BANDS)}"
            )
    dates = np.array(sorted(by_date), dtype="datetime64[D]")
    sources = [(path, [by_date[d][b] for b in PASTIS_BANDS]) for d in dates]
    return Scene(dates, sources, crs, transform, height, width, {path: nodata})
