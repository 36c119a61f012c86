"""pimc.cog: overviews built a tile at a time, copied into a valid COG."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pimc.cog import COG_TILE, halve, write_cog

NAN = np.nan


def test_halve_averages_what_is_observed_and_pads_odd_edges():
    block = np.array([[[1, 3, 5], [NAN, 7, NAN], [2, NAN, NAN]]], np.float32)  # (1, 3, 3)
    out = halve(block, "AVERAGE", NAN)
    # (1+3+7)/3, (5)/1, (2)/1, all-NaN -> NaN
    np.testing.assert_allclose(out, [[[11 / 3, 5], [2, NAN]]], equal_nan=True)
    assert out.dtype == np.float32


def test_halve_nearest_keeps_the_top_left_class():
    block = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]], np.uint8)
    np.testing.assert_array_equal(halve(block, "NEAREST", 255), [[[1, 3], [7, 9]]])


def _draft(path, array, nodata, **extra):
    bands, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=bands,
        dtype=array.dtype, nodata=nodata, crs="EPSG:32631", transform=from_origin(0, 0, 10, 10),
        tiled=True, blockxsize=128, blockysize=128, compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(array)
        for band in range(bands):
            dst.set_band_description(band + 1, f"band {band}")
        dst.update_tags(PIMC_MODEL="m")
        if "colormap" in extra:
            dst.write_colormap(1, extra["colormap"])


@pytest.mark.parametrize("side", [(700, 1100), (200, 100)])
def test_write_cog_keeps_data_and_metadata_and_builds_the_pyramid(tmp_path, side):
    height, width = side
    rng = np.random.default_rng(0)
    array = rng.normal(size=(3, height, width)).astype(np.float32)
    array[:, :40, :50] = NAN  # a nodata corner
    draft, out = tmp_path / "draft.tif", tmp_path / "map.tif"
    _draft(draft, array, NAN)
    write_cog(draft, out, "AVERAGE")
    expected, level = [], array
    while max(level.shape[1:]) > COG_TILE:
        level = halve(level, "AVERAGE", NAN)
        expected.append(level)
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.descriptions == ("band 0", "band 1", "band 2")
        assert src.tags()["PIMC_MODEL"] == "m" and np.isnan(src.nodata)
        assert src.block_shapes[0] == (COG_TILE, COG_TILE) and src.crs.to_epsg() == 32631
        np.testing.assert_array_equal(src.read(), array)
        assert src.overviews(1) == [2**k for k in range(1, len(expected) + 1)]
    for k, level in enumerate(expected):
        with rasterio.open(out, overview_level=k) as ovr:
            np.testing.assert_allclose(ovr.read(), level, equal_nan=True, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draft.tif", "map.tif"]  # no leftovers


def test_write_cog_class_map_keeps_its_colormap(tmp_path):
    classes = np.random.default_rng(1).integers(0, 5, (1, 600, 300), dtype=np.uint8)
    draft, out = tmp_path / "draft.tif", tmp_path / "map.tif"
    _draft(draft, classes, 255, colormap={0: (255, 0, 0, 255), 1: (0, 255, 0, 255)})
    write_cog(draft, out, "NEAREST")
    with rasterio.open(out) as src:
        assert src.colormap(1)[1] == (0, 255, 0, 255) and src.nodata == 255
        np.testing.assert_array_equal(src.read(), classes)
    with rasterio.open(out, overview_level=0) as ovr:
        np.testing.assert_array_equal(ovr.read(), classes[:, ::2, ::2])
