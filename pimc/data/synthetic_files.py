"""Byte-reproducible zip members and in-memory GeoTIFFs of the synthetic EuroSAT archive.

Kept apart from :mod:`pimc.data.synthetic`, which decides *what* is written; files are written
atomically with :func:`pimc.core.io.atomic_path`.
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


def zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a member with fixed metadata, so the same content gives the same zip bytes."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.create_system = 3  # Unix, whatever the platform, for identical bytes
    if name.endswith("/"):
        info.external_attr = (0o40755 << 16) | 0x10  # directory
    else:
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data, compresslevel=ZIP_LEVEL)


def geotiff_bytes(rng: np.random.Generator, tile: np.ndarray) -> bytes:
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
