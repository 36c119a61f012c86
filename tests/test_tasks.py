"""Downstream tasks on a tiny prepared dataset with a 1-epoch pretrain: mechanics, not quality."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pimc.core.errors import ConfigError, DatasetNotFoundError, TrainingDivergedError
from pimc.core.task_config import ForecastConfig, PixelClsConfig
from pimc.metrics import rmse
from pimc.models import PIMC, SmallCNN
from pimc.tasks.baselines import CNN1d, climatology, linear_extrapolation, persistence
from pimc.tasks.common import TaskModel, resolve_pretrained, tower_backbone
from pimc.tasks.fit import Objective, Schedule, Setup, fit, index_batches
from pimc.training.pairs import PairDataset


@pytest.fixture(scope="module")
def params(task_params):
    return task_params


def _check_outputs(result: dict, out: Path, methods: list[str]) -> None:
    assert list(result["methods"]) == methods
    for metrics in result["methods"].values():
        assert np.isfinite(metrics[result["headline"]])
    for path in result["plots"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    for method, metrics in result["methods"].items():
        assert saved["methods"][method] == pytest.approx(metrics)
    for method, rows in result["curves"].items():
        assert [r["epoch"] for r in rows] == [1, 2]
        assert {"train/loss", "val/loss", f"val/{result['headline']}"} <= set(rows[0]), method
        ckpt = torch.load(out / f"{method}.pt", weights_only=True)  # tensors and plain data only
        assert ckpt["epoch"] == result["methods"][method]["best_epoch"]
    best = result["best_model"]
    example = torch.from_numpy(result["example_input"])
    ckpt = torch.load(out / f"{methods[0]}.pt", weights_only=True)  # the mode's PIMC method
    fresh_out = best(example)
    best.load_state_dict(ckpt["model"])  # the checkpoint holds exactly the returned weights
    assert torch.equal(best(example), fresh_out)
    assert torch.isfinite(fresh_out).all()


@pytest.fixture(scope="module")
def forecast(params, tmp_path_factory):
    from pimc.tasks.forecast import run_forecast

    out = tmp_path_factory.mktemp("forecast")
    return run_forecast(params, out_dir=out, progress=False), out


def test_forecast_outputs(forecast, params):
    result, out = forecast
    cfg = params.finetune.forecast
    _check_outputs(
        result, out, ["pimc_finetune", *[m for m in cfg.baselines if m != "pimc_finetune"]]
    )
    assert result["headline"] == "rmse_mean_std" and result["higher_is_better"] is False
    m = result["methods"]["pimc_linear"]
    assert {"rmse_ndvi_std", "mae_savi", "rmse_mean", "mae_mean_std"} <= set(m)
    example = torch.from_numpy(result["example_input"])
    size = params.recurrence.size
    assert example.shape == (4, 3, size, size + 1)  # RP + a column holding the last value
    assert result["best_model"](example).shape == (4, 3, cfg.horizon)
    assert {"forecast_curves.png", "forecast_examples.png"} <= {
        Path(p).name for p in result["plots"]
    }
    # pt2 logging (MLflow) exports the model with a dynamic batch
    batch = torch.export.Dim("batch")
    program = torch.export.export(result["best_model"], (example,), dynamic_shapes=({0: batch},))
    assert torch.allclose(program.module()(example), result["best_model"](example), atol=1e-5)


def test_forecast_persistence_matches_hand_computation(forecast, params):
    result, _ = forecast
    cfg = params.finetune.forecast
    test = PairDataset(params.prepare.out, cfg.test_folds).series
    x, y = test[..., : cfg.input_len], test[..., cfg.input_len : cfg.input_len + cfg.horizon]
    per_index = rmse(x[..., -1:].expand_as(y), y, dim=(0, 2))  # index units
    for i, name in enumerate(("ndvi", "evi", "savi")):
        assert result["methods"]["persistence"][f"rmse_{name}"] == pytest.approx(
            float(per_index[i]), rel=1e-4
        )


def test_linear_probe_leaves_the_encoder_untouched(forecast, params):
    from pimc.models.build import load_pretrained_model

    _, out = forecast
    pretrained, _ = load_pretrained_model(Path(params.pretrain.out) / "last.pt")
    probe = torch.load(out / "pimc_linear.pt", weights_only=True)["model"]
    for key, value in pretrained.rp_encoder.backbone.state_dict().items():
        assert torch.equal(probe[f"backbone.{key}"], value), key  # BN statistics included


def test_baseline_formulas():
    t = torch.arange(8, dtype=torch.float64)
    series = torch.stack([2.0 + 0.5 * t, -1.0 - 0.25 * t])[None]  # (1, 2, 8), exactly linear
    future = torch.arange(8, 13, dtype=torch.float64)
    expected = torch.stack([2.0 + 0.5 * future, -1.0 - 0.25 * future])[None]
    assert torch.allclose(linear_extrapolation(series, 5), expected)
    noisy = series + torch.tensor([0.3, -0.2, 0.1, 0.4, -0.3, 0.2, 0.0, -0.1])
    slope, intercept = np.polyfit(np.arange(4), noisy[0, 0, -4:].numpy(), 1)
    assert linear_extrapolation(noisy, 2)[0, 0].tolist() == pytest.approx(
        [intercept + slope * 4, intercept + slope * 5]
    )
    assert persistence(noisy, 3).tolist() == [
        [[noisy[0, 0, -1].item()] * 3, [noisy[0, 1, -1].item()] * 3]
    ]
    targets = torch.randn(10, 3, 4)
    assert torch.allclose(climatology(targets), targets.mean(0))
    assert CNN1d(3)(torch.randn(2, 3, 46)).shape == (2, CNN1d(3).num_features)


@pytest.fixture(scope="module")
def pixel_cls(params, tmp_path_factory):
    from dataclasses import replace

    from pimc.tasks.pixel_cls import run_pixel_cls

    cfg = replace(params.finetune.pixel_cls, keep_background=False)
    p = replace(params, finetune=replace(params.finetune, pixel_cls=cfg))
    out = tmp_path_factory.mktemp("pixel_cls")
    return run_pixel_cls(p, out_dir=out, progress=False), out


def test_pixel_cls_outputs(pixel_cls, params):
    from pimc.data.pastis import PASTIS

    result, out = pixel_cls
    singles = [f"single_index_{n}" for n in params.prepare.indices]
    methods = ["pimc_finetune", "pimc_linear", "random_init", "random_init_linear", "cnn1d"]
    _check_outputs(result, out, [*methods, "cnn1d_nolevel", *singles])
    assert 0 not in result["class_ids"] and 19 not in result["class_ids"]  # background dropped
    assert result["class_names"] == [PASTIS.classes[i] for i in result["class_ids"]]
    metrics = result["methods"]["pimc_finetune"]
    slugs = {"iou_" + n.lower().replace(", ", "_").replace(" ", "_") for n in result["class_names"]}
    ious = {k for k in metrics if k.startswith("iou_")}
    assert ious and ious <= slugs  # classes absent from test targets and predictions: no IoU
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert (out / "confusion_pimc_finetune.png").is_file()
    ckpt = torch.load(out / "pimc_finetune.pt", weights_only=True)
    assert ckpt["class_ids"] == result["class_ids"]


def test_nolevel_cnn_ignores_the_level_of_a_series(pixel_cls):
    from pimc.tasks.baselines import CNN1d

    _, out = pixel_cls
    state = torch.load(out / "cnn1d_nolevel.pt", weights_only=True)["model"]
    assert torch.equal(state["in_mean"], torch.zeros(3))  # only the spread is standardised
    n_classes = state["head.1.weight"].shape[0]
    model = TaskModel(CNN1d(3), n_classes, in_mean=state["in_mean"], in_std=state["in_std"],
                      center=True)  # fmt: skip
    model.load_state_dict(state)
    model.eval()
    x = torch.rand(4, 3, 46)
    shifted = x + torch.tensor([0.3, -0.2, 0.1])[None, :, None]  # a per-index level change
    assert torch.allclose(model(x), model(shifted), atol=1e-5)
    with_level = TaskModel(CNN1d(3), n_classes, in_mean=state["in_mean"], in_std=state["in_std"])
    with_level.load_state_dict(state)
    assert not torch.allclose(with_level.eval()(x), with_level(shifted), atol=1e-5)


def test_single_index_model_ignores_other_channels(pixel_cls):
    _, out = pixel_cls
    state = torch.load(out / "single_index_evi.pt", weights_only=True)["model"]
    assert state["channel_mask"].tolist() == [0.0, 1.0, 0.0]
    model = TaskModel(SmallCNN(3), state["head.1.weight"].shape[0], channel_mask=torch.ones(3))
    model.load_state_dict(state)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    y = x.clone()
    y[:, [0, 2]] = torch.rand(4, 2, 32, 32)
    assert torch.equal(model(x), model(y))


def test_eurosat_outputs(params, tmp_path):
    from pimc.tasks.eurosat import run_eurosat

    result = run_eurosat(params, out_dir=tmp_path, progress=False)
    methods = ["pimc_finetune", "pimc_linear", "random_init_linear", "random_init_finetune"]
    _check_outputs(result, tmp_path, methods)
    assert result["headline"] == "accuracy" and result["normalisation"] == "pretrain"
    assert result["example_input"].shape == (4, 10, 64, 64)
    assert result["best_model"](torch.from_numpy(result["example_input"])).shape == (4, 10)


@pytest.mark.parametrize(("n", "sizes"), [(240, [240]), (300, [128, 172]), (256, [128, 128])])
def test_index_batches_cover_every_row_without_tiny_batches(n, sizes):
    batches = index_batches(n, 128, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == sizes
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


def test_rotation_picks_the_official_pastis_folds(params):
    from dataclasses import replace

    from pimc.tasks.pixel_cls import load_pixel_data

    cfg = replace(params.finetune.pixel_cls, rotation=1, label_fraction=1.0, val_pixels=None)
    data = load_pixel_data(params, cfg)
    for split, folds in zip(("train", "val", "test"), ((2, 3, 4), (5,), (1,)), strict=True):
        labels = PairDataset(params.prepare.out, folds).labels
        assert len(data[split]["y"]) == int((labels != 19).sum())
    unseen = sum(int((data[s]["y"] == -1).sum()) for s in ("val", "test"))
    assert unseen == data["unseen_pixels"] and (data["train"]["y"] >= 0).all()


def test_eurosat_without_pretraining_uses_its_own_band_stats(params, tmp_path):
    from dataclasses import replace

    from pimc.tasks.eurosat import run_eurosat

    cfg = replace(params.finetune.eurosat, pretrained="none", mode="linear", baselines=(), epochs=1)
    p = replace(params, finetune=replace(params.finetune, eurosat=cfg))
    result = run_eurosat(p, out_dir=tmp_path, progress=False)
    assert result["pretrained"] == "none" and result["normalisation"] == "eurosat_train"
    assert list(result["methods"]) == ["pimc_linear"]


def _toy_regressor() -> tuple[TaskModel, torch.Tensor, torch.Tensor]:
    """A seeded Linear-ReLU regressor and its 16 training rows ``x`` (16, 2), ``y`` (16, 1)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
    backbone.num_features = 4
    return TaskModel(backbone, 1), torch.randn(16, 2), torch.randn(16, 1)


def _mse(x: torch.Tensor, y: torch.Tensor, validate) -> Objective:
    """MSE on rows of ``x``/``y``; ``validate`` scores ``val/score`` (higher wins)."""
    return Objective(
        lambda m, idx, g: (m(x[idx]) - y[idx]).square().mean(), len(x), validate, "val/score", True
    )


def test_fit_keeps_the_best_epoch_and_stops_early(tmp_path):
    model, x, y = _toy_regressor()
    scripted = iter([0.5, 0.9, 0.7, 0.6, 0.95])  # best at epoch 2; 0.95 is never reached
    seen = []

    def validate(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"val/score": next(scripted)}

    cfg = PixelClsConfig(epochs=5, patience=2, batch_size=4, lr=0.05)
    result = fit(
        model,
        name="toy",
        objective=_mse(x, y, validate),
        setup=Setup(cfg, torch.device("cpu"), tmp_path, progress=False),
        schedule=Schedule(encoder_lr=0.05),
    )
    assert (result.best_epoch, result.best, len(result.curves)) == (2, 0.9, 4)
    assert not torch.equal(seen[1]["head.1.weight"], seen[3]["head.1.weight"])  # it did train
    for key, value in model.state_dict().items():
        assert torch.equal(value, seen[1][key])
    ckpt = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and all(torch.equal(ckpt["model"][k], seen[1][k]) for k in seen[1])


def test_fit_freeze_epochs_train_only_the_head(tmp_path):
    torch.manual_seed(0)
    model = TaskModel(SmallCNN(3, width=4, depth=1), 2)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.head[1].weight.clone()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))
    fit(
        model,
        name="lpft",
        objective=Objective(
            lambda m, idx, g: nn.functional.cross_entropy(m(x[idx]), y[idx]),
            8,
            lambda m: {"val/loss": 0.0},
            "val/loss",
            False,
        ),
        setup=Setup(
            ForecastConfig(epochs=1, batch_size=4, weight_decay=0.1),
            torch.device("cpu"),
            tmp_path,
            progress=False,
        ),
        schedule=Schedule(encoder_lr=1.0, freeze_epochs=1),
    )
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights, and BN statistics, unchanged
    assert not torch.equal(model.head[1].weight, head)


def test_pretrained_sources(params, tmp_path):
    from dataclasses import replace

    cfg = params.finetune.pixel_cls
    with pytest.raises(ConfigError, match="registry"):
        resolve_pretrained(None, replace(cfg, pretrained="registry"), params)
    missing = replace(params, pretrain=replace(params.pretrain, out=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match="pretrain"):
        resolve_pretrained(None, cfg, missing)
    assert resolve_pretrained(PIMC(), replace(cfg, pretrained="none"), params).model is None

    # rp_ssl_* read the RP-only pretraining beside pretrain.out, never PIMC's checkpoint.
    from pimc.core.paths import rp_views_out
    from pimc.tasks.common import resolve_sources
    from pimc.tasks.methods import method_plan

    plan = method_plan(replace(cfg, baselines=("rp_ssl_linear",)), ["ndvi", "evi", "savi"])
    assert set(resolve_sources(None, cfg, params, method_plan(cfg, ["ndvi"]))) == {"pimc"}
    with pytest.raises(DatasetNotFoundError, match="objective: rp_views"):
        resolve_sources(None, cfg, params, plan)
    views = rp_views_out(params.pretrain.out)
    views.mkdir()
    shutil.copy(Path(params.pretrain.out, "best.pt"), views / "best.pt")
    got = resolve_sources(None, cfg, params, plan)
    assert got["rp_views"].source == f"stage:{views / 'best.pt'}" != got["pimc"].source
    none = resolve_sources(None, replace(cfg, pretrained="none"), params, plan)
    assert none["rp_views"].model is None
    shutil.rmtree(views)

    source = PIMC()
    want = source.rp_encoder.backbone.state_dict()
    wrapped = nn.Sequential(OrderedDict(backbone=source.rp_encoder.backbone))  # registry-like
    for given in (source, source.rp_encoder, wrapped, source.rp_encoder.backbone):
        got = tower_backbone(given, "rp_encoder", 3, params.model)
        assert all(torch.equal(got.state_dict()[k], v) for k, v in want.items())
        assert got.features[0].weight.data_ptr() != want["features.0.weight"].data_ptr()
    with pytest.raises(ConfigError, match="channels"):
        tower_backbone(source, "rp_encoder", 4, params.model)


def test_config_rejects_bad_task_settings():
    with pytest.raises(ConfigError, match="finetune.forecast.baselines"):
        ForecastConfig(baselines=("persistence", "prophet"))
    with pytest.raises(ConfigError, match="overlap"):
        PixelClsConfig(train_folds=(1, 2), val_folds=(2,))
    with pytest.raises(ConfigError, match="rotation"):
        PixelClsConfig(rotation=5)


def test_fit_stops_on_a_nan_loss_naming_the_epoch_and_step(tmp_path):
    """Issue 13: a NaN input used to train on to NaN weights and a 10 %-accuracy 'success'."""
    model, x, y = _toy_regressor()
    x[5, 1] = float("nan")  # one bad input row
    cfg = PixelClsConfig(epochs=3, patience=2, batch_size=4, lr=0.05)
    with pytest.raises(TrainingDivergedError, match=r"toy: training loss is nan at epoch 1, step"):
        fit(
            model,
            name="toy",
            objective=_mse(x, y, lambda m: {"val/score": 0.0}),
            setup=Setup(cfg, torch.device("cpu"), tmp_path, progress=False),
            schedule=Schedule(encoder_lr=0.05),
        )
    assert not (tmp_path / "toy.pt").exists()
