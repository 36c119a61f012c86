"""A tiled GeoTIFF copied into a Cloud-Optimized GeoTIFF with memory that does not grow with it.

GDAL's COG driver builds the overviews itself, a row of tiles of every band at a time, and
keeps the partly written overview tiles in its block cache: with 30 float32 bands (a forecast
map) that is a few hundred MiB per 4,096 px of width, and with the cache bounded below it the
copy re-reads and recompresses tiles over and over (a 4k^2 forecast map: 393 s instead of 29 s).
Here each overview level is built from the level below one output tile at a time (a 2 x 2 tile
block read, one tile written, nothing kept), and GDAL only copies the levels into the COG
(``OVERVIEWS=FORCE_USE_EXISTING``, through a VRT that names them as the draft's overviews).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from contextlib import ExitStack
from pathlib import Path

import numpy as np

__all__ = ["COG_TILE", "halve", "write_cog"]

COG_TILE = 256  # the COG's internal tile side (GDAL's COG driver takes >= 128)


def halve(block: np.ndarray, resampling: str, nodata: float) -> np.ndarray:
    """One overview step: every 2 x 2 pixels become one.

    Args:
        block: ``(bands, H, W)``; an odd edge is padded with ``nodata``.
        resampling: ``"NEAREST"`` (the top-left pixel: class maps) or ``"AVERAGE"`` (the mean
            of the pixels that are not NaN: float maps whose nodata is NaN).
        nodata: The map's nodata value.

    Returns:
        ``(bands, ceil(H / 2), ceil(W / 2))``, ``block``'s dtype.
    """
    bands, height, width = block.shape
    if resampling == "NEAREST":
        return block[:, ::2, ::2]
    padded = np.full((bands, height + height % 2, width + width % 2), nodata, block.dtype)
    padded[:, :height, :width] = block
    quads = padded.reshape(bands, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    valid = ~np.isnan(quads)
    total = np.where(valid, quads, 0).sum(axis=(2, 4), dtype=np.float64)
    count = valid.sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):  # all four NaN: NaN, as nodata
        return (total / count).astype(block.dtype)


def _overview_levels(draft: Path, resampling: str, stack: ExitStack) -> list[Path]:
    """Write each overview level beside ``draft`` (half the level below, until one tile holds
    it), a tile at a time; the files are removed when ``stack`` closes."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(draft) as src:
        profile = {**src.profile, "blockxsize": COG_TILE, "blockysize": COG_TILE}
        width, height, nodata = src.width, src.height, src.nodata
    levels, below = [], draft
    while max(width, height) > COG_TILE:
        width, height = -(-width // 2), -(-height // 2)
        level = draft.with_name(f"{draft.name}.ovr{len(levels) + 1}.tif")
        stack.callback(level.unlink, missing_ok=True)
        with (
            rasterio.open(below) as src,
            rasterio.open(level, "w", **{**profile, "width": width, "height": height}) as dst,
        ):
            for row in range(0, height, COG_TILE):
                for col in range(0, width, COG_TILE):
                    w, h = min(COG_TILE, width - col), min(COG_TILE, height - row)
                    block = src.read(window=Window(  # the level below may be 1 px short
                        2 * col, 2 * row, min(2 * w, src.width - 2 * col),
                        min(2 * h, src.height - 2 * row),
                    ))  # fmt: skip
                    out = halve(block, resampling, nodata)[:, :h, :w]
                    dst.write(out, window=Window(col, row, w, h))
        levels.append(level)
        below = level
    return levels


def write_cog(draft: Path, out: Path, resampling: str) -> None:
    """Copy the tiled GeoTIFF ``draft`` (its bands, nodata, descriptions, tags, colormap) to
    the COG ``out``: deflate, :data:`COG_TILE`-px tiles, overviews by ``resampling`` (see
    :func:`halve`) down to one tile."""
    from rasterio.shutil import copy as raster_copy

    with ExitStack() as stack:
        levels = _overview_levels(draft, resampling, stack)
        vrt = draft.with_name(draft.name + ".vrt")
        stack.callback(vrt.unlink, missing_ok=True)
        raster_copy(draft, vrt, driver="VRT")  # GDAL writes the metadata; we add the levels
        tree = ET.parse(vrt)  # our own file, just written
        for band in tree.getroot().iter("VRTRasterBand"):
            for level in levels:
                overview = ET.SubElement(band, "Overview")
                ET.SubElement(overview, "SourceFilename", relativeToVRT="1").text = level.name
                ET.SubElement(overview, "SourceBand").text = band.get("band")
        tree.write(vrt)
        raster_copy(
            vrt, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_TILE,
            OVERVIEWS="FORCE_USE_EXISTING" if levels else "NONE",
        )  # fmt: skip
