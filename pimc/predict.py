"""Prediction with registered task models: a PASTIS patch -> GeoTIFF, a EuroSAT tile -> class.

Registered models are pt2 graphs (``torch.export``): they take the tensor the task trained on,
not raw imagery. What turns a patch into that tensor (the ``prepare`` and ``recurrence``
configs, the class ids, the forecast window) is logged with each model as MLflow model
metadata (each task's ``deploy_metadata``, see :mod:`pimc.tasks.registry`), and
:func:`predict_patch` rebuilds the input with the very functions the pipeline used
(:func:`pimc.transforms.series.pixel_series`, then the task's ``predict_input``, which calls
:func:`pimc.transforms.recurrence.build_rps`), so a model never sees different preprocessing
than in training.

Outputs are georeferenced with the patch footprint of ``metadata.geojson`` (its ``crs``
member; Lambert-93 for the real PASTIS): the raster's transform maps its H x W pixels onto
the footprint's bounds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pimc.core.config import PrepareConfig, RecurrenceConfig
from pimc.core.errors import (
    DatasetCorruptError,
    DatasetNotFoundError,
    InputError,
    PimcError,
    UsageError,
)
from pimc.core.io import atomic_path
from pimc.core.typed_config import from_dict
from pimc.data.pastis import PASTIS, read_metadata
from pimc.transforms.series import date_grid, pixel_series

__all__ = [
    "CLASS_NODATA",
    "Patch",
    "classify_tile",
    "load_deployed",
    "predict_patch",
    "read_patch",
    "write_geotiff",
]

CLASS_NODATA = 255  # class-map pixels with no prediction (PASTIS ids are 0..19)
_S2_NAME = re.compile(r"S2_(\d+)\.npy$")


def load_deployed(ref: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """The model behind ``ref`` (``name@alias``, ``name/3``, ``models:/...``) and its metadata.

    Raises:
        InputError: a model logged without pimc's deployment metadata.
    """
    from pimc import tracking

    uri = tracking.model_uri(ref)
    meta = tracking.model_metadata(uri)
    if "pimc_task" not in meta:
        raise InputError(
            f"{uri} carries no pimc deployment metadata (it is an encoder, or was logged by an "
            "older pimc); predict with a task model such as pimc-pastis-classifier@champion, "
            "or re-run its finetune stage."
        )
    return tracking.load_model(uri), meta


# ------------------------------------------------------------------------------------------
# PASTIS patches
# ------------------------------------------------------------------------------------------


@dataclass
class Patch:
    """One PASTIS patch ready for prediction.

    Attributes:
        image: ``(T, 10, H, W)`` float32 reflectance, bands in PASTIS order.
        dates: ``(T,)`` acquisition dates (datetime64[D]).
        patch_id: ``ID_PATCH``.
        crs: The footprint's CRS (a ``rasterio.crs.CRS``).
        transform: Affine pixel -> CRS transform of the H x W grid.
    """

    image: torch.Tensor
    dates: np.ndarray
    patch_id: int
    crs: Any
    transform: Any


def read_patch(patch: str | Path, root: str | Path | None = None, crs: str | None = None) -> Patch:
    """Read a patch and its footprint.

    Args:
        patch: A ``DATA_S2/S2_<ID>.npy`` file (its PASTIS root is two folders up unless
            ``root`` is given), or an ``ID_PATCH`` with ``root``.
        root: The PASTIS folder holding ``metadata.geojson``.
        crs: Overrides the CRS of ``metadata.geojson`` (e.g. ``EPSG:2154``).
    """
    from rasterio.transform import from_bounds

    path, patch_id, geojson = _locate(patch, root)
    dates, ring, file_crs = _footprint(geojson, patch_id)
    crs_obj = _crs(crs, file_crs, geojson)
    image = PASTIS._load_npy(path)
    if image.ndim != 4 or image.shape[1] != len(PASTIS.band_names) or image.shape[0] != len(dates):
        raise DatasetCorruptError(
            f"{path} has shape {image.shape}; expected (T={len(dates)}, 10, H, W) as listed for "
            f"patch {patch_id} in {geojson}"
        )
    (west, south), (east, north) = ring.min(0), ring.max(0)
    height, width = image.shape[-2:]
    return Patch(
        image=torch.from_numpy(image.astype(np.float32)),
        dates=dates,
        patch_id=patch_id,
        crs=crs_obj,
        transform=from_bounds(west, south, east, north, width, height),
    )


def _locate(patch: str | Path, root: str | Path | None) -> tuple[Path, int, Path]:
    """The patch's ``.npy`` file, its ``ID_PATCH`` and its ``metadata.geojson``."""
    path = Path(patch)
    match = _S2_NAME.search(path.name)
    if match:
        patch_id, root = int(match.group(1)), Path(root) if root else path.parent.parent
    elif str(patch).isdigit():
        if root is None:
            raise UsageError(f"patch {patch}: give the PASTIS folder too (--root data/raw/PASTIS)")
        patch_id, root = int(patch), Path(root)
        path = Path(root) / "DATA_S2" / f"S2_{patch_id}.npy"
    else:
        raise UsageError(
            f"--patch {patch}: expected a PASTIS file DATA_S2/S2_<ID>.npy or a numeric ID_PATCH"
        )
    geojson = root / "metadata.geojson"
    if not geojson.is_file():
        raise DatasetNotFoundError(
            f"{geojson} is missing: the patch footprint and dates come from it. Pass --root "
            "with the PASTIS folder holding metadata.geojson and DATA_S2/."
        )
    return path, patch_id, geojson


def _footprint(geojson: Path, patch_id: int) -> tuple[Any, np.ndarray, str | None]:
    """The patch's dates, footprint ring ``(P, 2)`` and the file's CRS name."""
    table, file_crs = read_metadata(geojson)
    rows = table[table["id"] == patch_id]
    if rows.empty:
        raise InputError(f"patch {patch_id} is not listed in {geojson}")
    dates, geometry = rows.iloc[0]["dates"], rows.iloc[0]["geometry"]
    try:
        if (geometry or {}).get("type") != "Polygon":
            raise ValueError(f"patch {patch_id}'s geometry is {geometry and geometry.get('type')}")
        ring = np.asarray(geometry["coordinates"][0], dtype=np.float64)[:, :2]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DatasetCorruptError(
            f"{geojson}: patch {patch_id} needs a Polygon footprint ({type(err).__name__}: "
            f"{err}); re-extract PASTIS.zip."
        ) from err
    return dates, ring, file_crs


def _crs(crs: str | None, file_crs: str | None, geojson: Path) -> Any:
    """``--crs`` if given, else the CRS of ``metadata.geojson``, as a rasterio CRS."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    crs_name = crs or file_crs
    if crs_name is None:
        raise DatasetCorruptError(
            f"{geojson} has no 'crs' member, so the footprint's projection is unknown; pass "
            "--crs (real PASTIS footprints are Lambert-93: --crs EPSG:2154)."
        )
    try:
        return CRS.from_user_input(crs_name)
    except CRSError as err:
        source = "--crs" if crs else geojson
        raise UsageError(f"CRS '{crs_name}' (from {source}): {err}") from err


def _run(model: Callable, x: torch.Tensor) -> torch.Tensor:
    # torch.export specialises batch sizes 0 and 1; a lone sample is sent twice.
    if len(x) == 1:
        return model(x.expand(2, *x.shape[1:]))[:1]
    return model(x)


def _observed_series(
    patch: Patch, prepare: PrepareConfig, grid: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pixel_series` of every pixel, ``(H*W, I, L)`` and ``(H*W, L)``; a pixel with no
    observation at all (a scene's nodata margin) is NaN / not valid without being computed,
    so an empty window costs its read only. Series are per pixel, so the rest are unchanged."""
    height, width = patch.image.shape[-2:]
    seen = torch.isfinite(patch.image).any(0).any(0).flatten()  # (H*W,)
    pick = torch.nonzero(seen).flatten()
    if len(pick) == 0:  # one (unobserved) pixel gives the output shapes
        pick = torch.zeros(1, dtype=torch.long)
    rows, cols = pick // width, pick % width
    some, some_valid = pixel_series(patch.image, patch.dates, rows, cols, prepare, grid)
    series = some.new_full((height * width, *some.shape[1:]), float("nan"))
    valid = some_valid.new_zeros((height * width, *some_valid.shape[1:]))
    series[pick], valid[pick] = some, some_valid
    return series, valid


def predict_patch(
    model: Callable[[torch.Tensor], torch.Tensor],
    meta: dict[str, Any],
    patch: Patch,
    batch_size: int = 2048,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Predict every pixel of ``patch``.

    Returns:
        Classifier: ``classes`` ``(H, W)`` uint8 PASTIS class ids and ``confidence``
        ``(H, W)`` float32 (softmax of the predicted class). Forecaster: ``forecast``
        ``(I, horizon, H, W)`` float32 index values of the ``horizon`` grid steps after the
        first ``input_len`` (NaN for pixels whose input window is not fully observed, which
        training never saw: ``time_axis: pad``), and ``dates`` of those steps. Both:
        ``no_prediction``, the count of pixels left without one (class
        :data:`CLASS_NODATA` / NaN) because nodata observations (NaN in ``patch.image``)
        left their series incomplete.
    """
    spec = _task_of(meta)
    if spec.predict_input is None:
        raise UsageError(f"a {spec.name} model predicts tiles, not PASTIS patches: use --image")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be >= 1 (pixels per forward pass)")
    prepare = from_dict(PrepareConfig, meta["prepare"], source="model metadata")
    rec_cfg = from_dict(RecurrenceConfig, meta["recurrence"], source="model metadata")
    grid = date_grid(prepare)
    height, width = patch.image.shape[-2:]
    series, valid = _observed_series(patch, prepare, grid)
    # Nodata observations (NaN) the despiking could not fill: those pixels get no prediction.
    ok = torch.isfinite(series).flatten(1).all(1)
    kept, outputs = torch.nonzero(ok).flatten(), []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(kept), batch_size), desc="predict", unit="batch", disable=not progress
        ):
            take = kept[start : start + batch_size]
            x = spec.predict_input(series[take], valid[take], rec_cfg, meta)
            outputs.append(_run(model, x))
        if not outputs:  # nothing observed well enough: one dummy row gives the output shape
            x = spec.predict_input(torch.zeros_like(series[:1]), valid[:1], rec_cfg, meta)
            outputs.append(_run(model, x)[:0])
    out = torch.cat(outputs)
    full = out.new_zeros(len(series), *out.shape[1:])
    full[kept] = out
    pred = spec.decode(full, valid, meta, grid, (height, width))
    missing = ~ok.reshape(height, width).numpy()
    for value in pred.values():
        if isinstance(value, np.ndarray) and value.shape[-2:] == (height, width):
            value[..., missing] = CLASS_NODATA if value.dtype == np.uint8 else np.nan
    pred["no_prediction"] = int(missing.sum())
    return pred


def _task_of(meta: dict[str, Any]):
    """The :class:`~pimc.tasks.registry.TaskSpec` a deployed model was trained for."""
    from pimc.tasks.registry import TASKS  # task modules pull in training code: only when used

    if meta.get("pimc_task") not in TASKS:
        raise InputError(
            f"model metadata names task {meta.get('pimc_task')!r}; this pimc knows "
            f"{', '.join(TASKS)}: upgrade pimc or re-run the model's finetune stage"
        )
    return TASKS[meta["pimc_task"]]


def write_geotiff(
    path: str | Path,
    data: np.ndarray,
    patch: Patch,
    descriptions: Sequence[str] = (),
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write ``data`` ``(B, H, W)`` or ``(H, W)`` as a deflate-compressed GeoTIFF, atomically.

    Raises:
        PimcError: the file cannot be written (folder missing or read-only, disk full).
    """
    import rasterio
    from rasterio.errors import RasterioError

    data = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": patch.crs,
        "transform": patch.transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    try:
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for band, text in enumerate(descriptions, start=1):
                dst.set_band_description(band, text)
            if tags:
                dst.update_tags(**tags)
            if colormap:
                dst.write_colormap(1, colormap)
    except (RasterioError, OSError) as err:
        raise PimcError(
            f"cannot write {path}: {err}; check the folder exists and is writable"
        ) from err
    return Path(path)


def save_prediction(
    pred: dict[str, np.ndarray], meta: dict[str, Any], patch: Patch, out: str | Path
) -> str:
    """Write :func:`predict_patch`'s result as ``out`` (GeoTIFF) + ``out.png`` (preview).

    Classifier: one uint8 band of PASTIS class ids with a colormap and ``CLASS_<id>`` tags.
    Forecaster: ``I * horizon`` float32 bands, described ``<index> <date>``.

    Returns:
        A one-paragraph summary for the console.
    """
    from pimc import plots

    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise UsageError(f"--out {out}: name a GeoTIFF (.tif); the PNG preview goes beside it")
    preview = out.with_suffix(".png")
    if "classes" in pred:
        names = dict(zip(meta["class_ids"], meta["class_names"], strict=True))
        write_geotiff(
            out,
            pred["classes"],
            patch,
            descriptions=["class"],
            nodata=CLASS_NODATA,
            tags={f"CLASS_{k}": v for k, v in names.items()},
            colormap=plots.class_colors(),
        )
        plots.class_map(pred["classes"], names, preview, f"patch {patch.patch_id}: classes")
        ids, counts = np.unique(pred["classes"], return_counts=True)
        share = ", ".join(
            f"{names.get(int(i), 'no prediction')} {c / pred['classes'].size:.0%}"
            for i, c in sorted(zip(ids, counts, strict=True), key=lambda x: -x[1])[:5]
        )
        summary = f"class map of patch {patch.patch_id}: {share}"
    else:
        forecast, steps = pred["forecast"], [str(d) for d in pred["dates"]]
        labels = steps or [f"t+{h + 1}" for h in range(forecast.shape[1])]
        bands = [f"{i} {d}" for i in meta["indices"] for d in labels]
        write_geotiff(
            out,
            forecast.reshape(-1, *forecast.shape[2:]),
            patch,
            descriptions=bands,
            nodata=float("nan"),
        )
        plots.forecast_maps(forecast, meta["indices"], labels, preview)
        summary = (
            f"forecast of patch {patch.patch_id}: {len(meta['indices'])} indices x "
            f"{forecast.shape[1]} steps ({labels[0]} .. {labels[-1]})"
        )
    return f"{summary}\nwrote {out} ({patch.crs}) and {preview}"


# ------------------------------------------------------------------------------------------
# EuroSAT tiles
# ------------------------------------------------------------------------------------------


def classify_tile(
    model: Callable[[torch.Tensor], torch.Tensor], meta: dict[str, Any], path: str | Path
) -> dict[str, float]:
    """Class probabilities of one EuroSAT-MS GeoTIFF tile, most likely first."""
    from pimc.data.eurosat import read_tile

    if _task_of(meta).predict_input is not None:
        raise UsageError(f"a {meta['pimc_task']} model predicts PASTIS patches: use --patch")
    image = torch.from_numpy(read_tile(path, meta["bands"]))[None]
    size = meta.get("resize")
    if size is not None and size != image.shape[-1]:
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = F.softmax(_run(model, image), dim=1)[0]
    ranked = sorted(zip(meta["class_names"], probs.tolist(), strict=True), key=lambda p: -p[1])
    return dict(ranked)
