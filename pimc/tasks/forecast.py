"""Forecasting: a pixel's next ``horizon`` index values from the first ``input_len`` grid steps.

PIMC forecaster: the RP of the input window -> RP encoder backbone -> features, concatenated
with the last observed value(s) of each index (``context_steps``) -> linear head -> the change
from the last value, per index and step. Design decision: an RP holds only distances
``|x_i - x_j|`` (max-normalised by default), so it is blind to the series' absolute level and
to the direction of change (x and -x have the same plot); without the last value no head could
tell a pixel at NDVI 0.2 from one at 0.8. ``random_init`` and ``cnn1d`` get the same extra
input, so only the encoder differs between methods.

Targets are standardised per index with the training folds' mean/std (of all their values);
the reported metrics are RMSE/MAE per index in standardised units (``*_std``) and in index units,
and their means over indices. Headline: ``rmse_mean_std`` (lower is better). The closed-form
baselines: ``persistence`` (last value repeated), ``linear_extrapolation`` (least-squares line
through the last 4 inputs, extended) and ``climatology`` (mean training target curve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pimc.core.config import Params, RecurrenceConfig
from pimc.core.errors import ConfigError
from pimc.core.task_config import ForecastConfig
from pimc.metrics import mae, rmse
from pimc.plots import forecast_examples, task_curves
from pimc.tasks.baselines import CNN1d, climatology, linear_extrapolation, persistence
from pimc.tasks.budget import label_subset, row_subset
from pimc.tasks.cache import Cached, MethodCache
from pimc.tasks.common import (
    Pretrained,
    TaskModel,
    finish,
    pastis_metadata,
    resolve_sources,
    series_stats,
    tower_backbone,
)
from pimc.tasks.fit import FitResult, Log, Objective, Schedule, Setup, fit, transfer
from pimc.tasks.lazy import PlotRows
from pimc.tasks.methods import Method, method_plan
from pimc.training.pairs import PairDataset
from pimc.training.utils import resolve_device, seed_everything
from pimc.transforms.recurrence import build_rps

__all__ = ["Forecaster", "forecast_metrics", "load_forecast_data", "run_forecast"]

HEADLINE = "rmse_mean_std"
HIGHER_IS_BETTER = False  # direction of HEADLINE
MODEL_CARD = (  # the registered model's description in MLflow
    "PASTIS pixel forecaster. Input: float32 (B, I, S, S + K): the recurrence plots of the "
    "first input_len steps of I index series (metadata 'indices'), S x S, with the last K raw "
    "index values (metadata 'context') repeated in the K extra columns (Forecaster.pack). "
    "Output: float32 (B, I, horizon), the next 'horizon' values of each index in index units."
)


class Forecaster(TaskModel):
    """Backbone + linear head predicting the standardised change from the last value.

    Args:
        backbone: An RP backbone (``rp_input``) or a 1-D series backbone.
        indices: I.
        horizon: H.
        mean: ``(I,)`` training mean of each index (targets are standardised with it).
        std: ``(I,)`` training std of each index.
        rp_input: The backbone reads RPs; else it reads the standardised input series.
        frozen: Linear probing (see :class:`TaskModel`).
        context: K, the most recent values of each index fed to the head beside the features.

    ``forward`` is the deployable model (one tensor in, index values out): with ``rp_input`` it
    takes :meth:`pack` ``(rp, recent)`` ``(B, I, S, S + K)`` (the RP builder is not exportable
    with ``torch.export``, so plots are built outside), else the raw series ``(B, I, T)``; it
    returns ``(B, I, H)`` in index units.
    """

    def __init__(
        self,
        backbone: nn.Module,
        indices: int,
        horizon: int,
        mean: Tensor,
        std: Tensor,
        rp_input: bool,
        frozen: bool = False,
        context: int = 1,
    ) -> None:
        stats = {} if rp_input else {"in_mean": mean.clone(), "in_std": std.clone()}
        extra = indices * context
        super().__init__(backbone, indices * horizon, extra_dim=extra, frozen=frozen, **stats)
        self.indices, self.horizon, self.rp_input = indices, horizon, rp_input
        self.context = context
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    @staticmethod
    def pack(rp: Tensor, recent: Tensor) -> Tensor:
        """``rp`` ``(B, I, S, S)`` + raw recent values ``(B, I, K)`` -> ``(B, I, S, S + K)``
        (every row of the K extra columns holds the K values)."""
        columns = recent[:, :, None, :].expand(-1, -1, rp.shape[-2], -1)
        return torch.cat([rp, columns.to(rp.dtype)], dim=-1)

    def predict_std(self, x: Tensor, recent_std: Tensor, precomputed: bool = False) -> Tensor:
        """Standardised forecast ``(B, I, H)`` from the backbone input ``x`` (RPs or raw
        series; features with ``precomputed``) and the standardised recent values
        ``(B, I, K)``; the head predicts the change from the last of them."""
        z = self.head_input(x, recent_std.flatten(1), precomputed)
        delta = self.head(z).view(-1, self.indices, self.horizon)
        return recent_std[..., -1:] + delta

    def forward(self, x: Tensor) -> Tensor:
        """Deployable forecast in index units; see the class docstring for ``x``."""
        if self.rp_input:
            side = x.shape[-2]
            x, recent = x[..., :side], x[:, :, 0, side:]
        else:
            recent = x[..., -self.context :]
        recent_std = (recent - self.mean[:, None]) / self.std[:, None]
        return self.predict_std(x, recent_std) * self.std[:, None] + self.mean[:, None]


def load_forecast_data(params: Params, cfg: ForecastConfig) -> dict[str, Any]:
    """Input windows, their RPs and targets: the labelled share of the training pixels
    (``label_fraction``; the input statistics use all of them, as they need no label),
    ``val_pixels`` of the val folds and every test pixel.

    Returns:
        ``names`` (index names), ``mean``/``std`` ``(I,)`` (training folds, all valid values),
        and per split ``{"x": (N, I, input_len), "y": (N, I, H), "rp": (N, I, S, S)}`` (``rp`` a
        :class:`~pimc.tasks.lazy.PlotRows`: built per batch).
    """
    need = cfg.input_len + cfg.horizon
    splits: dict[str, Any] = {}
    for split, folds in (
        ("train", cfg.train_folds),
        ("val", cfg.val_folds),
        ("test", cfg.test_folds),
    ):
        pairs = PairDataset(params.prepare.out, folds, images=False)
        length = pairs.series.shape[-1]
        if need > length:
            raise ConfigError(
                f"'finetune.forecast.input_len' + 'horizon' = {need} exceeds the {length} "
                "prepared time steps; shorten them"
            )
        if split == "train":
            splits["mean"], splits["std"] = series_stats(pairs.series, pairs.valid)
            splits["names"] = list(pairs.meta["indices"])
        keep = pairs.valid[:, :need].all(1)  # pad mode: only pixels observed over the window
        series = pairs.series[keep]
        if split == "train":
            series = series[label_subset(len(series), cfg.label_fraction, cfg.seed)]
        elif split == "val":
            series = series[row_subset(len(series), cfg.val_pixels, cfg.seed)]
        x, y = series[..., : cfg.input_len], series[..., cfg.input_len : need]
        x = x.contiguous()  # plots of the input windows are built per batch (PlotRows)
        splits[split] = {"x": x, "y": y.contiguous(), "rp": PlotRows(x, None, params.recurrence)}
    return splits


def forecast_metrics(pred_std: Tensor, target_std: Tensor, std: Tensor, names: list[str]) -> dict:
    """RMSE/MAE per index (standardised and in index units) and their means over indices.

    Args:
        pred_std: ``(N, I, H)`` standardised forecasts.
        target_std: ``(N, I, H)`` standardised truth.
        std: ``(I,)`` the standardisation's std (de-standardised errors are ``std`` times larger).
        names: The I index names.
    """
    out: dict[str, float] = {}
    r, a = rmse(pred_std, target_std, dim=(0, 2)), mae(pred_std, target_std, dim=(0, 2))
    for kind, values in (("rmse", r), ("mae", a)):
        for i, name in enumerate(names):
            out[f"{kind}_{name}_std"] = float(values[i])
            out[f"{kind}_{name}"] = float(values[i] * std[i])
        out[f"{kind}_mean_std"] = float(values.mean())
        out[f"{kind}_mean"] = float((values * std.double()).mean())
    return out


def _train(
    model: Forecaster,
    *,
    method: str,
    data: Windows,
    setup: Setup,
    schedule: Schedule,
) -> tuple[FitResult, Tensor]:
    """Fit one forecaster (MSE on standardised targets, early stopping on validation
    ``rmse_mean_std``); returns the fit and its standardised test forecasts."""
    device, inputs, target, recent = setup.device, data.inputs, data.target, data.recent
    pre = model.frozen
    if pre:  # a linear probe: the frozen backbone's features are encoded once
        inputs = {s: model.encode(x, device) for s, x in inputs.items()}
    std = model.std.cpu()

    def step_loss(m: nn.Module, idx: Tensor, gen: torch.Generator) -> Tensor:
        pred = m.predict_std(inputs["train"][idx].to(device), recent["train"][idx].to(device), pre)
        return F.mse_loss(pred, target["train"][idx].to(device))

    def validate(m: nn.Module) -> dict[str, float]:
        pred = _predict(m, inputs["val"], recent["val"], device, pre)
        score = forecast_metrics(pred, target["val"], std, data.names)[HEADLINE]
        return {"val/loss": float(F.mse_loss(pred, target["val"])), f"val/{HEADLINE}": score}

    objective = Objective(
        step_loss, len(target["train"]), validate, f"val/{HEADLINE}", HIGHER_IS_BETTER
    )
    extra = {"index_names": data.names, "mean": model.mean.cpu(), "std": std}
    result = fit(
        model, name=method, objective=objective, setup=setup, schedule=schedule, extra=extra
    )
    model.eval()
    with torch.no_grad():
        return result, _predict(model, inputs["test"], recent["test"], device, pre)


@dataclass(frozen=True)
class Windows:
    """Per split (``train``/``val``/``test``): backbone ``inputs`` (RPs ``(N, I, S, S)`` or raw
    series ``(N, I, T)``), standardised ``target`` ``(N, I, H)`` and ``recent`` values
    ``(N, I, K)``; and the I index ``names``."""

    inputs: dict[str, Tensor | PlotRows]
    target: dict[str, Tensor]
    recent: dict[str, Tensor]
    names: list[str]


def _predict(
    model: Forecaster, inputs: Tensor, recent_std: Tensor, device: torch.device, pre: bool
) -> Tensor:
    out = [
        model.predict_std(x.to(device), s.to(device), pre).cpu()
        for x, s in zip(inputs.split(1024), recent_std.split(1024), strict=True)
    ]
    return torch.cat(out)


def run_forecast(
    params: Params,
    *,
    pretrained: nn.Module | str | Path | None = None,
    out_dir: Path,
    progress: bool = True,
    log: Log | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Train and compare every forecasting method; see :func:`pimc.tasks.common.finish`
    (plus ``cached``: the methods whose result came from ``cache``).

    Args:
        params: Uses ``prepare.out``, ``recurrence``, ``model`` and ``finetune.forecast``.
        pretrained: A PIMC / RP encoder / checkpoint path (``pretrained: registry`` needs one).
        out_dir: Checkpoints ``<method>.pt``, figures and ``results.json`` go here.
        progress: Show progress bars.
        log: ``log(metrics, epoch)`` with ``<method>/train/loss``, ``<method>/val/...``.
        cache: A :class:`~pimc.tasks.cache.MethodCache` folder for the pretraining-free
            methods, or None.
    """
    start, cfg = time.perf_counter(), params.finetune.forecast
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = Setup(cfg, resolve_device(cfg.device), out_dir, progress, log)
    plan = method_plan(cfg)
    sources = resolve_sources(pretrained, cfg, params, plan)
    source = sources["pimc"]
    data = load_forecast_data(params, cfg)
    std, names = data["std"], data["names"]
    target, recent, closed = _standardised(data, cfg)
    store = MethodCache(cache, "forecast", params, [Path(params.prepare.out)], setup.device)

    def fit_one(spec: Method) -> tuple[Cached, Forecaster]:
        windows = Windows({}, target, recent, names)
        model, fit, pred = _fit_method(spec, sources[spec.weights], params, data, windows, setup)
        metrics = forecast_metrics(pred, target["test"], std, names)
        metrics.update(best_epoch=fit.best_epoch, train_seconds=fit.seconds)
        return Cached(metrics, fit.curves, {"pred": pred.numpy()}), model

    methods: dict[str, dict[str, float]] = {}
    preds: dict[str, Tensor] = {}
    curves, models = {}, {}
    for spec in plan:
        method = spec.name
        if spec.input == "none":
            preds[method] = closed[method]()
            methods[method] = forecast_metrics(preds[method], target["test"], std, names)
            continue
        done, models[method] = store.result(spec, fit_one)
        methods[method], curves[method] = done.metrics, done.curves
        preds[method] = torch.from_numpy(done.arrays["pred"])

    best, te = f"pimc_{cfg.mode}", data["test"]
    examples = out_dir / "forecast_examples.png"
    plots = [
        task_curves(curves, f"val/{HEADLINE}", out_dir / "forecast_curves.png", "Forecasting"),
        forecast_examples(te["x"], te["y"], preds, std, data["mean"], names, best, examples),
    ]
    example = Forecaster.pack(te["rp"][:4], te["x"][:4, :, -cfg.context_steps :]).numpy()
    return finish(
        out_dir,
        "forecast",
        methods=methods,
        headline=HEADLINE,
        higher_is_better=HIGHER_IS_BETTER,
        curves=curves,
        plots=plots,
        best_model=models[best],
        example_input=example,
        source=source,
        seconds=time.perf_counter() - start,
        cached=store.hits,
    )


def _standardised(data: dict[str, Any], cfg: ForecastConfig) -> tuple[dict, dict, dict]:
    """Standardised targets ``(N, I, H)`` and recent values ``(N, I, K)`` per split, and the
    closed-form baselines' test forecasts (as thunks, computed in method order)."""
    mean, std = data["mean"], data["std"]

    def standardise(x: Tensor) -> Tensor:
        return (x - mean[:, None]) / std[:, None]

    splits = ("train", "val", "test")
    target = {s: standardise(data[s]["y"]) for s in splits}
    recent = {s: standardise(data[s]["x"])[..., -cfg.context_steps :] for s in splits}
    test_x = standardise(data["test"]["x"])
    closed = {
        "persistence": lambda: persistence(test_x, cfg.horizon),
        "linear_extrapolation": lambda: linear_extrapolation(test_x, cfg.horizon),
        "climatology": lambda: climatology(target["train"]).expand(len(test_x), -1, -1),
    }
    return target, recent, closed


def _fit_method(
    spec: Method,
    source: Pretrained,
    params: Params,
    data: dict[str, Any],
    windows: Windows,
    setup: Setup,
) -> tuple[Forecaster, FitResult, Tensor]:
    """Build one learnt method's forecaster, fit it and forecast the test split."""
    cfg, names = setup.cfg, windows.names
    seed_everything(cfg.seed)
    rp_input = spec.input == "encoder"
    use_pretrained = spec.pretrained and source.model is not None
    if rp_input:
        weights = source.model if use_pretrained else None
        backbone = tower_backbone(weights, "rp_encoder", len(names), params.model)
    else:
        backbone = CNN1d(len(names))
    model = Forecaster(
        backbone,
        len(names),
        cfg.horizon,
        data["mean"],
        data["std"],
        rp_input,
        spec.frozen,
        cfg.context_steps,
    )
    inputs = {s: data[s]["rp" if rp_input else "x"] for s in ("train", "val", "test")}
    result, pred = _train(
        model.to(setup.device),
        method=spec.name,
        data=replace(windows, inputs=inputs),
        setup=setup,
        schedule=transfer(cfg, use_pretrained),
    )
    return model, result, pred


def deploy_metadata(params: Params, result: dict[str, Any]) -> dict[str, Any]:
    """Preprocessing + the forecast window (first ``input_len`` grid steps in, ``horizon``
    out, ``context`` recent values beside the RP)."""
    cfg = params.finetune.forecast
    return {
        **pastis_metadata(params),
        "input_len": cfg.input_len,
        "horizon": cfg.horizon,
        "context": cfg.context_steps,
    }


def predict_input(
    series: Tensor, valid: Tensor, rec_cfg: RecurrenceConfig, meta: dict[str, Any]
) -> Tensor:
    """The forecaster's input :meth:`Forecaster.pack` ``(B, I, S, S + K)`` from the first
    ``input_len`` steps of series ``(B, I, L)``."""
    x = series[..., : meta["input_len"]]
    recent = x[..., -meta["context"] :]
    return Forecaster.pack(build_rps(x, None, rec_cfg), recent)


def decode(
    out: Tensor, valid: Tensor, meta: dict[str, Any], grid: Any, shape: tuple[int, int]
) -> dict[str, Any]:
    """Forecasts ``(H*W, I, horizon)`` -> ``forecast`` ``(I, horizon, H, W)`` float32 (NaN
    where the input window was not fully observed, which training never saw) and the
    ``dates`` of the forecast steps (empty without a date grid)."""
    start, stop = meta["input_len"], meta["input_len"] + meta["horizon"]
    dates = [str(d) for d in grid[start:stop]] if grid is not None else []
    out[~valid[:, :start].all(1)] = float("nan")
    forecast = out.reshape(*shape, *out.shape[1:]).permute(2, 3, 0, 1)
    return {"forecast": forecast.numpy().astype(np.float32), "dates": np.asarray(dates)}
