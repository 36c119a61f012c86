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
``mlflow models serve`` on it. This module holds what logging it needs (the input columns, the
signature, example rows); :mod:`pimc.tracking.raw_model` the model itself, which imports the
prediction code (kept apart so that editing it does not re-run training stages).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pimc.core.bands import PASTIS_BANDS
from pimc.tracking.registry import RAW_SUFFIX

__all__ = ["ENTRY", "RAW_COLUMNS", "RAW_SUFFIX", "raw_rows", "raw_signature", "register_raw_model"]

#: The input table, one row per (pixel, date); a pixel's rows need not share dates.
RAW_COLUMNS: dict[str, str] = {
    "pixel_id": "any integer naming the pixel; its rows form one time series",
    "date": "acquisition date, YYYY-MM-DD",
    **{b: f"Sentinel-2 L2A reflectance x 10000 of band {b} (NaN: not observed)"
       for b in PASTIS_BANDS},
}  # fmt: skip
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


def register_raw_model(
    run: Any,
    task_uri: str,
    metadata: dict[str, Any],
    example: pd.DataFrame | None,
    registered_model_name: str,
    name: str = "raw",
) -> str:
    """Log into ``run`` (a :class:`~pimc.tracking.TrackedRun`) and register the raw-observation
    model around the task model ``task_uri`` (``models:/<name>/<version>``), once per run: a
    retried call returns the version this run registered before.

    Args:
        run: the open stage run.
        task_uri: the registered task model it wraps (copied in as artifact ``model``).
        metadata: that model's deployment metadata (artifact ``metadata``, JSON).
        example: an input table (:func:`raw_rows`), logged as the model's input example.
        registered_model_name: usually ``<task model>-raw``.
        name: the artifact folder in the run.

    Returns:
        The registered version.
    """
    import mlflow.pyfunc
    import torch

    import pimc
    from pimc.tracking import _pickle_off, _use_in_module_api
    from pimc.tracking.registry import version_of_run

    done = version_of_run(registered_model_name, run.run_id)
    if done is not None:
        return done
    _use_in_module_api(run.tracking_uri)
    client = run.client
    with tempfile.TemporaryDirectory() as tmp:
        meta_file = Path(tmp) / "metadata.json"
        meta_file.write_text(json.dumps(dict(metadata)))
        with _pickle_off():  # the artifacts are read back to check the example
            mlflow.pyfunc.save_model(
                Path(tmp) / name,
                python_model=str(ENTRY),  # a model from code: nothing pickled
                artifacts={"model": task_uri, "metadata": str(meta_file)},
                signature=raw_signature(),
                input_example=example,
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"pimc=={pimc.__version__}",
                ],
                metadata=dict(metadata),
            )
        client.log_artifacts(run.run_id, str(Path(tmp) / name), name)
    if not client.search_registered_models(f"name = '{registered_model_name}'"):
        client.create_registered_model(registered_model_name)
    source = f"{client.get_run(run.run_id).info.artifact_uri}/{name}"
    version = client.create_model_version(registered_model_name, source, run.run_id)
    return str(version.version)
