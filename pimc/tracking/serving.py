"""Serving raw observations over REST: an MLflow pyfunc model around a registered task model.

The registered task models are pt2 programs that take recurrence plots, so only a caller who
rebuilt pimc's preprocessing could use them. :class:`RawObservationModel` takes what a user has,
a table with one row per pixel and acquisition date (``pixel_id``, ``date``, the 10 band
reflectances x 1e4, :data:`RAW_COLUMNS`), and answers per pixel with the class, its confidence
and every class probability, or the forecast. It builds the input with
:func:`pimc.predict.predict_patch` (the pixels become a 1 x N patch), so serving sees exactly the
preprocessing of training and of ``pimc predict``.

It is logged as a *model from code* (:mod:`pimc.tracking.serving_entry`; nothing is pickled) and
registered as ``<task model>-raw`` by the finetune flow; ``pimc serve`` runs
``mlflow models serve`` on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from pimc.core.bands import PASTIS_BANDS
from pimc.core.errors import InputError

#: The input table, one row per (pixel, date); a pixel's rows need not share dates.
RAW_COLUMNS: dict[str, str] = {
    "pixel_id": "any integer naming the pixel; its rows form one time series",
    "date": "acquisition date, YYYY-MM-DD",
    **{b: f"Sentinel-2 L2A reflectance x 10000 of band {b} (NaN: not observed)"
       for b in PASTIS_BANDS},
}  # fmt: skip
RAW_SUFFIX = "-raw"  # registered name of the raw-observation model: <task model>-raw
ENTRY = Path(__file__).with_name("serving_entry.py")


def raw_signature():
    """The input schema (:data:`RAW_COLUMNS`, typed) of the raw-observation model."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    cols = [ColSpec("long", "pixel_id"), ColSpec("string", "date")]
    cols += [ColSpec("double", b) for b in PASTIS_BANDS]
    return ModelSignature(inputs=Schema(cols))


def raw_rows(image: np.ndarray, dates: Any, pixels: list[tuple[int, int]]) -> pd.DataFrame:
    """The input table of ``pixels`` ``[(row, col), ...]`` of a ``(T, 10, H, W)`` patch."""
    days = [str(d) for d in np.asarray(dates).astype("datetime64[D]")]
    frames = []
    for pid, (r, c) in enumerate(pixels):
        frame = pd.DataFrame(image[:, :, r, c].astype(np.float64), columns=list(PASTIS_BANDS))
        frame.insert(0, "date", days)
        frame.insert(0, "pixel_id", pid)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def rows_to_patch(table: pd.DataFrame) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A ``(T, 10, 1, N)`` patch (NaN where a pixel has no row for a date), the T dates and the
    N pixel ids, from an input table.

    Raises:
        InputError: missing columns, unparsable dates, a (pixel, date) given twice.
    """
    missing = [c for c in RAW_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"the input table lacks column(s) {missing}; expected {list(RAW_COLUMNS)}")
    try:
        days = pd.to_datetime(table["date"], format="%Y-%m-%d").to_numpy().astype("datetime64[D]")
    except (ValueError, TypeError) as err:
        raise InputError(f"column 'date': {err}; write dates as YYYY-MM-DD") from None
    pixel_ids, pix = np.unique(table["pixel_id"].to_numpy(), return_inverse=True)
    dates, t = np.unique(days, return_inverse=True)
    if len(set(zip(pix.tolist(), t.tolist(), strict=True))) != len(table):
        raise InputError("a (pixel_id, date) pair appears twice; give each observation once")
    image = np.full((len(dates), len(PASTIS_BANDS), 1, len(pixel_ids)), np.nan, np.float32)
    image[t, :, 0, pix] = table[list(PASTIS_BANDS)].to_numpy(np.float32)
    return torch.from_numpy(image), dates, pixel_ids


def answer(pred: dict[str, Any], meta: dict[str, Any], pixel_ids: np.ndarray) -> pd.DataFrame:
    """Per-pixel answers from :func:`pimc.predict.predict_patch`'s arrays (over a 1 x N patch).

    Classifier: one row per pixel: ``pixel_id``, ``class`` (255: no prediction), ``class_name``,
    ``confidence`` and ``p_<class id>`` per class. Forecaster: one row per pixel, index and
    step: ``pixel_id``, ``index``, ``date``, ``value`` (NaN: no prediction).
    """
    if "classes" in pred:
        names = dict(zip(meta["class_ids"], meta["class_names"], strict=True))
        classes = pred["classes"][0]
        out = pd.DataFrame({
            "pixel_id": pixel_ids,
            "class": classes.astype(int),
            "class_name": [names.get(int(c), "no prediction") for c in classes],
            "confidence": pred["confidence"][0].astype(float),
        })  # fmt: skip
        for k, cid in enumerate(meta["class_ids"]):
            out[f"p_{cid}"] = pred["probabilities"][k, 0].astype(float)
        return out
    forecast = pred["forecast"][:, :, 0]  # (I, horizon, N)
    steps = [str(d) for d in pred["dates"]] or [f"t+{h + 1}" for h in range(forecast.shape[1])]
    n_idx, horizon, n = forecast.shape
    return pd.DataFrame({
        "pixel_id": np.tile(pixel_ids, n_idx * horizon),
        "index": np.repeat(meta["indices"], horizon * n),
        "date": np.tile(np.repeat(steps, n), n_idx),
        "value": forecast.reshape(-1).astype(float),
    })  # fmt: skip


class RawObservationModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: raw observations in, per-pixel answers out (see the module docstring).

    Artifacts: ``model``, the task model's pt2 folder (loaded with pickle loading off);
    ``metadata``, its deployment metadata as JSON.
    """

    def load_context(self, context: Any) -> None:
        from pimc.tracking.registry import load_model

        self.model = load_model(context.artifacts["model"])
        self.meta = json.loads(Path(context.artifacts["metadata"]).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        from pimc.predict import Patch, predict_patch

        image, dates, pixel_ids = rows_to_patch(pd.DataFrame(model_input))
        patch = Patch(image, dates, 0, None, None)
        pred = predict_patch(self.model, self.meta, patch, progress=False)
        return answer(pred, self.meta, pixel_ids)
