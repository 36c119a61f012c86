"""Your own Sentinel-2 scenes: per-date GeoTIFFs or one multi-date stack -> a tiled COG map.

Two layouts are read (``pimc predict --scene PATH``):

* a **folder of per-date GeoTIFFs**, one file per acquisition, its date in the file name
  (``YYYYMMDD`` or ``YYYY-MM-DD`` anywhere, e.g. ``S2B_20190514_T31TFM.tif``), each holding
  the 10 PASTIS bands (order from the band descriptions when every band has one, else
  ``bands``, else PASTIS order) on one grid (CRS, transform, shape);
* **one stack** of T x 10 bands described ``<band>_<date>`` (e.g. ``B04_2019-05-14``).

Values are surface reflectance x 1e4, as in PASTIS. A pixel's observation that is nodata (the
file's nodata value, or 0 in every band) or cloudy (``mask_dir``: per-date single-band GeoTIFFs
on the scene's grid, the date in each name as above, 1 = cloudy; a date without one is taken as
clear) becomes NaN; the pipeline's despiking fills it where it can, as in training, and pixels
whose series stay incomplete get no prediction (counted in the summary).

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
        masks: Per date, its cloud mask file (1 = cloudy) or None.
    """

    dates: np.ndarray
    sources: list[tuple[Path, list[int]]]
    crs: Any
    transform: Any
    height: int
    width: int
    nodata: dict[Path, float | None] = field(default_factory=dict)
    masks: list[Path | None] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file a window is read from (the dates', then the masks'), each once."""
        return list(dict.fromkeys([p for p, _ in self.sources] + [m for m in self.masks if m]))

    def windows(self, size: int) -> Iterator[Any]:
        """The ``size`` x ``size`` windows (``rasterio.windows.Window``) covering the scene."""
        from rasterio.windows import Window

        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(col, row, min(size, self.width - col), min(size, self.height - row))

    def read(self, window: Any, files: dict[Path, Any]) -> torch.Tensor:
        """``(T, 10, h, w)`` float32 reflectance of ``window``; nodata and cloudy observations
        are NaN. ``files``: every path of :attr:`files`, opened."""
        out = []
        masks = self.masks or [None] * len(self.sources)
        for (path, indexes), mask in zip(self.sources, masks, strict=True):
            data = files[path].read(indexes, window=window).astype(np.float32)
            missing = (data == 0).all(axis=0)
            if self.nodata.get(path) is not None:
                missing |= (data == self.nodata[path]).any(axis=0)
            if mask is not None:
                missing |= files[mask].read(1, window=window) == 1
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


def open_scene(
    path: str | Path, bands: Sequence[str] | None = None, mask_dir: str | Path | None = None
) -> Scene:
    """Open a folder of per-date GeoTIFFs or a multi-date stack (see the module docstring),
    with the cloud masks of ``mask_dir`` if given.

    Raises:
        InputError: an empty folder, a file without a date, two files of one date, files on
            different grids, bands that cannot be matched to the 10 PASTIS bands; a mask that
            is not one band on the scene's grid, or whose date is not one of the scene's.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"--scene {path}: no such file or folder")
    scene = _open_stack(path) if path.is_file() else _open_folder(path, bands)
    if mask_dir is not None:
        scene.masks = _masks(Path(mask_dir), scene, path)
    return scene


def _masks(mask_dir: Path, scene: Scene, scene_path: Path) -> list[Path | None]:
    """Per scene date, its mask file in ``mask_dir`` (matched by the date in the name)."""
    import rasterio

    if not mask_dir.is_dir():
        raise InputError(f"--mask-dir {mask_dir}: no such folder")
    by_date: dict[np.datetime64, Path] = {}
    grid = (scene.crs, scene.transform, scene.height, scene.width)
    for file in sorted(p for p in mask_dir.iterdir() if p.suffix.lower() in SUFFIXES):
        date = _date_in(file)
        if date in by_date:
            raise InputError(f"{by_date[date]} and {file} are both masks of {date}: keep one")
        if date not in scene.dates:
            raise InputError(
                f"{file}: mask of {date}, a date {scene_path} does not have "
                f"({scene.dates[0]}..{scene.dates[-1]}, {len(scene.dates)} dates); remove it "
                "or name it with its acquisition's date"
            )
        with rasterio.open(file) as src:
            if src.count != 1 or _grid(file, src) != grid:
                raise InputError(
                    f"{file}: a cloud mask must be one band (1 = cloudy) on the scene's grid; "
                    f"it has {src.count} bands, CRS {src.crs}, shape {src.height}x{src.width} "
                    f"(scene {scene.crs}, {scene.height}x{scene.width})"
                )
        by_date[date] = file
    if not by_date:
        raise InputError(f"--mask-dir {mask_dir}: no .tif/.tiff masks in the folder")
    return [by_date.get(d) for d in scene.dates]


def _open_folder(path: Path, bands: Sequence[str] | None) -> Scene:
    """A folder of per-date GeoTIFFs."""
    import rasterio

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
