"""Byte-reproducible, atomic file writing for the synthetic datasets (npy, text, zip, GeoTIFF).

Kept apart from :mod:`pimc.data.synthetic`, which decides *what* is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the zip is byte-reproducible
# Noisy uint16 tiles barely compress; level 1 is twice as fast as 6 for a 1 % bigger zip.
ZIP_LEVEL = 1
PIXEL_M = 10


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file in the same folder, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the dataset private to its writer
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a member with fixed metadata, so the same content gives the same zip bytes."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.create_system = 3  # Unix, whatever the platform, for identical bytes
    if name.endswith("/"):
        info.external_attr = (0o40755 << 16) | 0x10  # directory
    else:
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data, compresslevel=ZIP_LEVEL)


def _geotiff(rng: np.random.Generator, tile: np.ndarray) -> bytes:
    """Encode a (13, 64, 64) tile as GeoTIFF in a random UTM zone of Europe, 10 m pixels."""
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    epsg = 32631 + int(rng.integers(5))  # UTM zones 31N-35N
    west = PIXEL_M * int(rng.integers(20_000, 80_000))
    north = PIXEL_M * int(rng.integers(450_000, 650_000))
    with MemoryFile() as memfile:
        with memfile.open(
            driver="GTiff",
            width=tile.shape[2],
            height=tile.shape[1],
            count=tile.shape[0],
            dtype="uint16",
            crs=CRS.from_epsg(epsg),
            # Affine directly: rasterio's from_origin warns about Affine's `*` deprecation.
            transform=Affine(PIXEL_M, 0.0, west, 0.0, -PIXEL_M, north),
        ) as dst:
            dst.write(tile)
        return bytes(memfile.getbuffer())
