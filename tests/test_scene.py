"""`pimc predict --scene`: the user's own GeoTIFFs (per-date files or one stack) -> a COG map.

The scenes are built from a synthetic PASTIS patch, tiled 2 x 2, so every window's map must
equal `pimc predict --patch` on that patch: same preprocessing, same model, same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pimc.cli import main
from pimc.core.bands import PASTIS_BANDS
from pimc.predict import CLASS_NODATA, load_deployed, predict_patch, read_patch
from tests import test_predict
from tests.test_predict import _first_patch

registered = test_predict.registered  # the registered test models (a module fixture)
CRS = "EPSG:32631"
TAGS = {"PIMC_VERSION": "test"}
TRANSFORM = from_origin(500000, 5000000, 10, 10)


def _patch(tiny_data):
    _, s2 = _first_patch(tiny_data)
    return read_patch(s2)


def _write(path, data, descriptions, transform=TRANSFORM, crs=CRS, nodata=None):
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": data.dtype.name, "crs": crs,
               "transform": transform, "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for band, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(band, text)


def _tiled(patch) -> np.ndarray:
    """``(T, 10, 2H, 2W)`` uint16: the patch repeated 2 x 2."""
    return np.tile(patch.image.numpy(), (1, 1, 2, 2)).round().astype(np.uint16)


def per_date_folder(patch, folder, order=PASTIS_BANDS):
    """One GeoTIFF per date, bands in ``order`` (described), dates in two name styles."""
    folder.mkdir()
    image = _tiled(patch)
    perm = [PASTIS_BANDS.index(b) for b in order]
    for t, date in enumerate(patch.dates):
        name = f"S2B_{str(date).replace('-', '')}_T31TFM.tif" if t % 2 else f"{date}.tif"
        _write(folder / name, image[t, perm], order)
    return folder


def _blank(folder, rows, cols):
    """Set pixels ``[rows, cols]`` of every file in ``folder`` to 0 (nodata); returns it."""
    for file in sorted(folder.iterdir()):
        with rasterio.open(file, "r+") as src:
            data = src.read()
            data[:, rows, cols] = 0
            src.write(data)
    return folder


def _predict(*args):
    return main(["predict", "--model", *args, "--window", "16", "--quiet"])


def _quadrants(raster):
    h, w = raster.shape[-2] // 2, raster.shape[-1] // 2
    return [raster[..., r : r + h, c : c + w] for r in (0, h) for c in (0, w)]


def test_per_date_folder_gives_the_patch_map_as_a_cog(registered, tiny_data, tmp_path, capsys):
    patch = _patch(tiny_data)
    # Bands stored in another order: the descriptions say which is which.
    folder = per_date_folder(patch, tmp_path / "scene", order=PASTIS_BANDS[::-1])
    out = tmp_path / "map.tif"
    assert _predict("pimc-test-classifier", "--scene", str(folder), "--out", str(out)) == 0
    assert "4 windows" in capsys.readouterr().out
    model, meta = load_deployed("pimc-test-classifier")
    expected = predict_patch(model, meta, patch, progress=False)["classes"]
    with rasterio.open(out) as src:
        assert src.driver == "GTiff" and src.profile["tiled"] and src.crs.to_string() == CRS
        assert src.transform == TRANSFORM and src.nodata == CLASS_NODATA
        assert src.tags()["PIMC_MODEL"] == "pimc-test-classifier" and src.tags()["PIMC_RUN_ID"]
        assert src.colormap(1)[0] and src.descriptions == ("class",)
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        classes = src.read(1)
    assert layout == "COG"
    for quadrant in _quadrants(classes):
        np.testing.assert_array_equal(quadrant, expected)


def test_stack_and_forecast_match_the_patch(registered, tiny_data, tmp_path):
    patch = _patch(tiny_data)
    image = _tiled(patch)
    stack = image.reshape(-1, *image.shape[2:])
    names = [f"{b}_{d}" for d in patch.dates for b in PASTIS_BANDS]
    _write(tmp_path / "stack.tif", stack, names)
    out = tmp_path / "forecast.tif"
    assert _predict("pimc-test-forecaster", "--scene", str(tmp_path / "stack.tif"),
                    "--out", str(out)) == 0  # fmt: skip
    model, meta = load_deployed("pimc-test-forecaster")
    expected = predict_patch(model, meta, patch, progress=False)["forecast"]
    with rasterio.open(out) as src:
        raster = src.read()
        assert src.descriptions[0].startswith("ndvi ")
    for quadrant in _quadrants(raster):
        np.testing.assert_allclose(quadrant, expected.reshape(quadrant.shape), rtol=1e-6)


def test_nodata_pixels_get_no_prediction_and_are_counted(registered, tiny_data, tmp_path, capsys):
    patch = _patch(tiny_data)
    folder = _blank(per_date_folder(patch, tmp_path / "scene"), 0, 0)  # never observed
    out = tmp_path / "map.tif"
    assert _predict("pimc-test-classifier", "--scene", str(folder), "--out", str(out)) == 0
    assert "1 of 1024 px without a prediction" in capsys.readouterr().out
    with rasterio.open(out) as src:
        classes = src.read(1)
    assert classes[0, 0] == CLASS_NODATA and (classes != CLASS_NODATA).sum() == 1023


def test_a_nodata_margin_of_whole_windows_is_mapped_as_nodata(
    registered, tiny_data, tmp_path, capsys
):
    """A scene's nodata margin (whole windows never observed, as at a swath edge)."""
    patch = _patch(tiny_data)
    # The right half: two 16-px windows of nodata.
    folder = _blank(per_date_folder(patch, tmp_path / "scene"), slice(None), slice(16, None))
    out = tmp_path / "map.tif"
    assert _predict("pimc-test-classifier", "--scene", str(folder), "--out", str(out)) == 0
    assert "512 of 1024 px without a prediction" in capsys.readouterr().out
    model, meta = load_deployed("pimc-test-classifier")
    expected = predict_patch(model, meta, patch, progress=False)["classes"]
    with rasterio.open(out) as src:
        classes = src.read(1)
    np.testing.assert_array_equal(classes[:, :16], np.tile(expected, (2, 1)))
    assert (classes[:, 16:] == CLASS_NODATA).all()


def _masks(folder, masks_dir, cloudy):
    """Per-date uint8 masks (1 = cloudy) of ``folder``'s files; ``cloudy[t]`` (H, W) bool."""
    masks_dir.mkdir()
    for t, file in enumerate(sorted(folder.iterdir(), key=lambda f: str(_date_of(f)))):
        _write(masks_dir / file.name, cloudy[t][None].astype(np.uint8), ["cloud"])
    return masks_dir


def _date_of(file):
    from pimc.scene import _date_in

    return _date_in(file)


def test_cloud_masks_are_missing_observations_as_nodata_is(registered, tiny_data, tmp_path, capsys):
    """Issue 14: --mask-dir; a cloudy observation is handled exactly as a nodata one."""
    patch = _patch(tiny_data)
    masked = per_date_folder(patch, tmp_path / "masked")
    files = sorted(masked.iterdir(), key=lambda f: str(_date_of(f)))
    rng = np.random.default_rng(0)
    with rasterio.open(files[0]) as src:
        shape = (src.height, src.width)
    cloudy = rng.random((len(files), *shape)) < 0.3  # 30 % of observations, scattered
    cloudy[:, 0, 0] = True  # and one pixel never seen clear
    masks = _masks(masked, tmp_path / "masks", cloudy)
    zeroed = per_date_folder(patch, tmp_path / "zeroed")
    for t, file in enumerate(sorted(zeroed.iterdir(), key=lambda f: str(_date_of(f)))):
        with rasterio.open(file, "r+") as src:
            data = src.read()
            data[:, cloudy[t]] = 0  # the same observations as nodata
            src.write(data)
    maps = {}
    for name, args in {"masked": ["--scene", str(masked), "--mask-dir", str(masks)],
                       "zeroed": ["--scene", str(zeroed)],
                       "clear": ["--scene", str(masked)]}.items():  # fmt: skip
        out = tmp_path / f"{name}.tif"
        assert _predict("pimc-test-classifier", *args, "--out", str(out)) == 0
        with rasterio.open(out) as src:
            maps[name] = src.read(1)
    assert "without a prediction" in capsys.readouterr().out
    np.testing.assert_array_equal(maps["masked"], maps["zeroed"])
    assert maps["masked"][0, 0] == CLASS_NODATA and maps["clear"][0, 0] != CLASS_NODATA
    assert (maps["masked"] != maps["clear"]).any()  # the masks changed the map


def test_bad_cloud_masks_are_one_clear_line(registered, tiny_data, tmp_path, capsys):
    patch = _patch(tiny_data)
    folder = per_date_folder(patch, tmp_path / "scene")
    with rasterio.open(next(folder.iterdir())) as src:
        shape = (src.height, src.width)
    clear = np.zeros((1, *shape), dtype=np.uint8)
    cases = {}
    for name in ("grid", "bands", "date", "empty"):
        (tmp_path / name).mkdir()
        cases[name] = tmp_path / name
    first = sorted(folder.iterdir())[0].name
    _write(cases["grid"] / first, clear, ["cloud"], transform=from_origin(0, 0, 10, 10))
    _write(cases["bands"] / first, np.zeros((2, *shape), np.uint8), ["a", "b"])
    _write(cases["date"] / "mask_2030-01-01.tif", clear, ["cloud"])
    messages = {"grid": "on the scene's grid", "bands": "it has 2 bands",
                "date": "a date", "empty": "no .tif/.tiff masks"}  # fmt: skip
    for name, masks in cases.items():
        out = tmp_path / f"out_{name}.tif"
        argv = ["--scene", str(folder), "--mask-dir", str(masks), "--out", str(out)]
        assert _predict("pimc-test-classifier", *argv) == 1
        err = capsys.readouterr().err
        assert messages[name] in err and str(masks) in err and "Traceback" not in err, name
        assert not out.exists()


def _bad_scenes(patch, root):
    """name -> (scene path, expected message); each broken in one way."""
    good = per_date_folder(patch, root / "good")
    cases = {}

    def variant(name):
        folder = root / name
        folder.mkdir()
        for file in good.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        return folder

    folder = variant("undated")
    next(folder.iterdir()).rename(folder / "scene.tif")
    cases["undated"] = (folder, "no acquisition date in the file name")
    folder = variant("twice")
    first = sorted(folder.iterdir())[0]
    (folder / f"copy_{first.name}").write_bytes(first.read_bytes())
    cases["twice"] = (folder, "are both dated")
    folder = variant("grid")
    first = sorted(folder.iterdir())[0]
    with rasterio.open(first) as src:
        data = src.read()
    _write(first, data, PASTIS_BANDS, transform=from_origin(0, 0, 10, 10))
    cases["grid"] = (folder, "is on another grid than")
    folder = variant("bands")
    first = sorted(folder.iterdir())[0]
    _write(first, data[:9], [None] * 9)
    cases["bands"] = (folder, "pass --bands")
    _write(root / "stack.tif", data, [f"band{i}" for i in range(10)])
    cases["stack"] = (root / "stack.tif", "<band>_<date>")
    (root / "empty").mkdir()
    cases["empty"] = (root / "empty", "no .tif/.tiff files")
    folder = root / "short"
    folder.mkdir()
    for file in sorted(good.iterdir())[:2]:
        (folder / file.name).write_bytes(file.read_bytes())
    cases["short"] = (folder, "do not cover the model's input window")
    return cases


def test_bad_scenes_are_one_clear_line(registered, tiny_data, tmp_path, capsys):
    cases = _bad_scenes(_patch(tiny_data), tmp_path)
    for name, (scene, message) in cases.items():
        out = tmp_path / f"out_{name}.tif"
        assert _predict("pimc-test-classifier", "--scene", str(scene), "--out", str(out)) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    good = tmp_path / "good"
    bad_out = tmp_path / "missing" / "map.tif"
    assert _predict("pimc-test-classifier", "--scene", str(good), "--out", str(bad_out)) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("window", ["8", "100"])
def test_window_must_fit_cog_tiles(registered, tiny_data, tmp_path, window, capsys):
    folder = per_date_folder(_patch(tiny_data), tmp_path / "scene")
    argv = ["predict", "--model", "pimc-test-classifier", "--scene", str(folder),
            "--out", str(tmp_path / "m.tif"), "--window", window]  # fmt: skip
    assert main(argv) == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_killed_scene_run_resumes_to_the_same_file(registered, tiny_data, tmp_path, monkeypatch):
    from pimc import scene_predict
    from pimc.scene import open_scene

    scene = open_scene(per_date_folder(_patch(tiny_data), tmp_path / "scene"))
    model, meta = load_deployed("pimc-test-classifier")
    full = tmp_path / "full.tif"
    kw = {"window": 16, "progress": False, "tags": TAGS}
    scene_predict.predict_scene(model, meta, scene, full, **kw)
    out = tmp_path / "resumed.tif"
    plan = scene_predict.plan_scene(scene, meta, out, 16, TAGS)
    # "Killed" after two of the four windows: their parts are on disk, the map is not.
    scene_predict.predict_windows(model, meta, scene, plan.todo[:2], plan.work)
    assert not out.exists() and len(list(plan.work.glob("*.npz"))) == 2
    predicted = []
    real = scene_predict.predict_windows
    monkeypatch.setattr(
        scene_predict,
        "predict_windows",
        lambda m, mt, s, w, *a, **kw: predicted.extend(w) or real(m, mt, s, w, *a, **kw),
    )
    scene_predict.predict_scene(model, meta, scene, out, resume=True, **kw)
    assert len(predicted) == 2  # only the unfinished windows
    assert out.read_bytes() == full.read_bytes() and not plan.work.exists()
    # Without --resume an interrupted run's parts are dropped and every window is redone.
    plan = scene_predict.plan_scene(scene, meta, out, 16, TAGS)
    real(model, meta, scene, plan.todo[:1], plan.work)
    predicted.clear()
    scene_predict.predict_scene(model, meta, scene, out, **kw)
    assert len(predicted) == 4 and out.read_bytes() == full.read_bytes()  # in one call


def test_dask_flow_writes_the_same_map(registered, tiny_data, tmp_path):
    """Two LocalCluster worker processes, one window per task: the same bytes."""
    from flows.predict import build_parser, run

    folder = per_date_folder(_patch(tiny_data), tmp_path / "scene")
    single = tmp_path / "single.tif"
    assert _predict("pimc-test-classifier", "--scene", str(folder), "--out", str(single)) == 0
    out = tmp_path / "dask.tif"
    args = build_parser().parse_args(
        ["--model", "pimc-test-classifier", "--scene", str(folder), "--out", str(out),
         "--window", "16", "--workers", "2", "--windows-per-task", "1"]
    )  # fmt: skip
    assert "4 windows" in run(args)
    assert out.read_bytes() == single.read_bytes()


@pytest.mark.parametrize("user", [False, True])
def test_gdal_block_cache_is_bounded_unless_the_user_sets_it(
    registered, tiny_data, tmp_path, monkeypatch, user
):
    """GDAL's default cache (5 % of RAM) kept every block read, so peak RSS grew with the scene.
    GDAL reads ``GDAL_CACHEMAX`` once per process; a user who set it keeps GDAL's value."""
    from rasterio.env import get_gdal_config

    from pimc import scene_predict
    from pimc.scene import Scene

    before = get_gdal_config("GDAL_CACHEMAX")
    if user:
        monkeypatch.setenv("GDAL_CACHEMAX", "300")
    seen = []
    real_read, real_cog = Scene.read, scene_predict.write_cog
    monkeypatch.setattr(
        Scene, "read", lambda *a: seen.append(get_gdal_config("GDAL_CACHEMAX")) or real_read(*a)
    )
    monkeypatch.setattr(  # the COG copy: its overviews are built a tile at a time (pimc.cog)
        scene_predict,
        "write_cog",
        lambda *a: seen.append(get_gdal_config("GDAL_CACHEMAX")) or real_cog(*a),
    )
    folder = per_date_folder(_patch(tiny_data), tmp_path / "scene")
    out = tmp_path / "m.tif"
    assert _predict("pimc-test-classifier", "--scene", str(folder), "--out", str(out)) == 0
    bound = before if user else min(before, scene_predict.GDAL_CACHE_MIB * 2**20)
    assert len(seen) == 5 and set(seen) == {bound}  # 4 windows read, 1 COG written
    assert get_gdal_config("GDAL_CACHEMAX") == before  # restored
