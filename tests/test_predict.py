"""`pimc predict`: registered task models -> georeferenced GeoTIFFs / EuroSAT classes.

The models here are untrained (random weights) but logged and registered exactly as the
finetune flow does (pt2 + deployment metadata), so the whole user path is exercised: registry
lookup, input rebuilt from the raw patch, batched prediction, GeoTIFF + PNG.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from pimc import tracking
from pimc.cli import main
from pimc.core.config import Params, PrepareConfig, RecurrenceConfig
from pimc.core.errors import DatasetCorruptError
from pimc.core.task_config import FinetuneConfig, ForecastConfig
from pimc.data.pastis import PASTIS
from pimc.predict import CLASS_NODATA, load_deployed, predict_patch, read_patch
from pimc.tasks.common import TaskModel, tower_backbone
from pimc.tasks.forecast import Forecaster
from pimc.tasks.registry import TASKS

PARAMS = Params(
    prepare=PrepareConfig(grid_step_days=20),  # 23 grid dates: 16 in, 5 forecast
    recurrence=RecurrenceConfig(size=16),
    finetune=FinetuneConfig(forecast=ForecastConfig(input_len=16, horizon=5)),
)
CLASS_IDS = [0, 1, 3, 7]


def _register(model, task, example, name, result=None):
    meta = TASKS[task].metadata(PARAMS, result or {})
    with tracking.start_run(f"finetune@{task}", {}, experiment="test-predict") as run:
        run.log_model(model.eval(), task, example, name, metadata=meta)
    tracking.set_alias(name, "champion", tracking.latest_version(name))


@pytest.fixture(scope="module")
def registered():
    torch.manual_seed(0)
    n_idx = len(PARAMS.prepare.indices)
    rp = torch.rand(4, n_idx, 16, 16)
    clf = TaskModel(tower_backbone(None, "rp_encoder", n_idx, PARAMS.model), len(CLASS_IDS))
    names = [PASTIS.classes[i] for i in CLASS_IDS]
    result = {"class_ids": CLASS_IDS, "class_names": names}
    _register(clf, "pixel_cls", rp.numpy(), "pimc-test-classifier", result)

    fc_cfg = PARAMS.finetune.forecast
    backbone = tower_backbone(None, "rp_encoder", n_idx, PARAMS.model)
    fc = Forecaster(
        backbone, n_idx, fc_cfg.horizon, torch.zeros(n_idx), torch.ones(n_idx), rp_input=True
    )
    packed = Forecaster.pack(rp, torch.rand(4, n_idx, 1))
    _register(fc, "forecast", packed.numpy(), "pimc-test-forecaster")

    bands = len(PARAMS.finetune.eurosat.bands)
    eu = TaskModel(tower_backbone(None, "image_encoder", bands, PARAMS.model), 10)
    _register(eu, "eurosat", torch.rand(4, bands, 64, 64).numpy(), "pimc-test-eurosat")
    return clf


def _first_patch(tiny_data):
    meta = json.loads((tiny_data / "PASTIS" / "metadata.geojson").read_text())
    feature = meta["features"][0]
    return feature, tiny_data / "PASTIS" / "DATA_S2" / f"S2_{feature['properties']['ID_PATCH']}.npy"


def test_classifier_geotiff_from_registry(registered, tiny_data, tmp_path, capsys):
    feature, s2 = _first_patch(tiny_data)
    out = tmp_path / "map.tif"
    code = main(["predict", "--model", "pimc-test-classifier@champion", "--patch", str(s2),
                 "--out", str(out), "--batch-size", "100", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "class map of patch" in capsys.readouterr().out
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 2154
        assert src.count == 1 and src.dtypes[0] == "uint8"
        # the raster covers exactly the footprint
        assert src.bounds.left == pytest.approx(ring[:, 0].min())
        assert src.bounds.top == pytest.approx(ring[:, 1].max())
        assert src.bounds.right == pytest.approx(ring[:, 0].max())
        assert src.bounds.bottom == pytest.approx(ring[:, 1].min())
        classes = src.read(1)
        assert src.tags()["CLASS_3"] == PASTIS.classes[3]
        assert src.colormap(1)[3][:3] != (0, 0, 0)
    assert classes.shape == np.load(s2, mmap_mode="r").shape[-2:]
    assert set(np.unique(classes)) <= set(CLASS_IDS)
    assert (tmp_path / "map.png").stat().st_size > 0


def test_predict_matches_model_on_pipeline_input(registered, tiny_data):
    """Batching and the pixel -> raster layout do not change what the model says."""
    from pimc.transforms.recurrence import build_rps
    from pimc.transforms.series import date_grid, pixel_series

    _, s2 = _first_patch(tiny_data)
    model, meta = load_deployed("pimc-test-classifier")  # bare name = champion
    patch = read_patch(s2)
    pixels = patch.image.shape[-1] * patch.image.shape[-2]
    # 7: many batches; pixels - 1: a last batch of one sample (torch.export's special case)
    a = predict_patch(model, meta, patch, batch_size=7, progress=False)
    b = predict_patch(model, meta, patch, batch_size=pixels - 1, progress=False)
    np.testing.assert_array_equal(a["classes"], b["classes"])
    r, c = 3, 5  # one pixel by hand, through the pipeline's own functions and the source model
    series, valid = pixel_series(
        patch.image, patch.dates, torch.tensor([r, r]), torch.tensor([c, c]),
        PARAMS.prepare, date_grid(PARAMS.prepare),
    )  # fmt: skip
    with torch.no_grad():
        logits = registered.eval()(build_rps(series, valid, PARAMS.recurrence))
    assert a["classes"][r, c] == CLASS_IDS[int(logits[0].argmax())]


@pytest.mark.parametrize("name", ["pimc-test-classifier", "pimc-test-forecaster"])
def test_unobserved_pixels_are_skipped_and_the_rest_unchanged(registered, tiny_data, name):
    """A scene's nodata margin (no observation at all) is not computed: those pixels get no
    prediction, every other pixel the answer it gets without the margin; an empty window
    gives an all-nodata answer."""
    from dataclasses import replace

    model, meta = load_deployed(name)
    patch = read_patch(_first_patch(tiny_data)[1])
    full = predict_patch(model, meta, patch, progress=False)
    image = patch.image.clone()
    image[..., :, 5:] = float("nan")  # columns 5.. never observed
    margin = predict_patch(model, meta, replace(patch, image=image), progress=False)
    key = "classes" if "classes" in full else "forecast"
    np.testing.assert_array_equal(margin[key][..., :5], full[key][..., :5])
    nodata = margin[key][..., 5:]
    assert (nodata == CLASS_NODATA).all() if key == "classes" else np.isnan(nodata).all()
    assert margin["no_prediction"] == full["no_prediction"] + image.shape[-2] * (
        image.shape[-1] - 5
    )
    empty = predict_patch(model, meta, replace(patch, image=image * np.nan), progress=False)
    assert empty["no_prediction"] == image.shape[-2] * image.shape[-1]


def test_forecaster_raster_by_patch_id(registered, tiny_data, tmp_path, capsys):
    feature, _ = _first_patch(tiny_data)
    pid = str(feature["properties"]["ID_PATCH"])
    out = tmp_path / "forecast.tif"
    code = main(["predict", "--model", "pimc-test-forecaster@champion", "--patch", pid,
                 "--root", str(tiny_data / "PASTIS"), "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    horizon = PARAMS.finetune.forecast.horizon
    with rasterio.open(out) as src:
        assert src.count == 3 * horizon and src.dtypes[0] == "float32"
        assert src.crs.to_epsg() == 2154
        assert src.descriptions[0].startswith("ndvi ")
        assert src.descriptions[horizon].startswith("evi ")
        raster = src.read()
    assert np.isfinite(raster).all()
    # band i * horizon + h at pixel (r, c) is index i, step h of the model's own forecast
    model, meta = load_deployed("pimc-test-forecaster")
    pred = predict_patch(model, meta, read_patch(pid, tiny_data / "PASTIS"), progress=False)
    r, c = 2, 9
    for i, h in [(0, 0), (1, 3), (2, horizon - 1)]:
        assert raster[i * horizon + h, r, c] == pred["forecast"][i, h, r, c]
    assert len(set(np.round(raster[:, r, c], 6))) > 1  # not one value repeated


def test_eurosat_tile_prints_probabilities(registered, data_copy, capsys):
    from pimc.data.eurosat import EuroSAT

    tile = EuroSAT(data_copy / "EuroSAT", "test").files[0]  # extracts the archive
    assert main(["predict", "--model", "pimc-test-eurosat@champion", "--image", str(tile)]) == 0
    lines = capsys.readouterr().out.splitlines()
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert len(probs) == 10 and sum(probs) == pytest.approx(1, abs=1e-3)
    assert probs == sorted(probs, reverse=True)


@pytest.mark.parametrize(
    "argv, message, code",
    [
        (["--model", "pimc-test-classifier", "--patch", "nope.txt"], "S2_<ID>.npy", 2),
        (["--model", "pimc-test-classifier", "--patch", "12"], "--root", 2),
        (["--model", "pimc-nothing@champion", "--patch", "S2_1.npy"], "pimc models", 1),
        (["--model", "pimc-test-classifier"], "exactly one of", 2),
        (["--model", "pimc-test-eurosat", "--patch", "{s2}"], "use --image", 2),
        (["--model", "pimc-test-classifier", "--patch", "{s2}", "--batch-size", "0"], ">= 1", 2),
        (["--model", "pimc-test-classifier", "--patch", "{s2}", "--out", "m.png"], ".tif", 2),
        (
            ["--model", "pimc-test-classifier", "--patch", "{s2}", "--out", "{s2}/m.tif"],
            "cannot write",
            1,
        ),
    ],
)
def test_bad_input_is_one_clear_line(registered, tiny_data, argv, message, code, capsys):
    # Command-line misuse exits 2 with the usage line (as argparse does); failures exit 1.
    _, s2 = _first_patch(tiny_data)
    argv = [a.replace("{s2}", str(s2)) for a in argv]
    assert main(["predict", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert ("usage: pimc predict" in err) == (code == 2)


def test_missing_crs_asks_for_override(data_copy, registered, tmp_path):
    geojson = data_copy / "PASTIS" / "metadata.geojson"
    meta = json.loads(geojson.read_text())
    meta.pop("crs")
    geojson.write_text(json.dumps(meta))
    s2 = next((data_copy / "PASTIS" / "DATA_S2").glob("S2_*.npy"))
    with pytest.raises(DatasetCorruptError, match="--crs"):
        read_patch(s2)
    assert read_patch(s2, crs="EPSG:2154").crs.to_epsg() == 2154


def test_corrupt_footprint_is_named(data_copy, registered):
    geojson = data_copy / "PASTIS" / "metadata.geojson"
    meta = json.loads(geojson.read_text())
    meta["features"][0]["geometry"] = None
    geojson.write_text(json.dumps(meta))
    pid = meta["features"][0]["properties"]["ID_PATCH"]
    with pytest.raises(DatasetCorruptError, match="metadata.geojson.*Polygon"):
        read_patch(str(pid), data_copy / "PASTIS")


def test_several_patches_in_one_process(registered, tiny_data, tmp_path, capsys):
    """One model load for many patches; each map is the one a single-patch call writes."""
    s2 = sorted((tiny_data / "PASTIS" / "DATA_S2").glob("S2_*.npy"))[:3]
    model = ["predict", "--model", "pimc-test-classifier", "--quiet"]
    assert main([*model, "--patch", *map(str, s2), "--out", str(tmp_path / "maps")]) == 0
    assert capsys.readouterr().out.count("class map of patch") == 3
    single = tmp_path / "one.tif"
    assert main([*model, "--patch", str(s2[1]), "--out", str(single)]) == 0
    with (
        rasterio.open(single) as a,
        rasterio.open(tmp_path / "maps" / s2[1].name.replace(".npy", ".tif")) as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())
    assert main([*model, "--patch", *map(str, s2), "--out", str(tmp_path / "m.tif")]) == 2
    assert "name a folder" in capsys.readouterr().err
