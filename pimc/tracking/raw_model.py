"""The raw-observation pyfunc model (see :mod:`pimc.tracking.serving`): rows in, answers out."""

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
from pimc.tracking.serving import RAW_COLUMNS


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
