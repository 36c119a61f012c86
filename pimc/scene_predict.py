"""A scene predicted window by window into a tiled Cloud-Optimized GeoTIFF; resumable.

Each window (every date's bands of a ``window`` x ``window`` block) goes through
:func:`pimc.predict.predict_patch`, the code that predicts PASTIS patches, so a scene gets
exactly the preprocessing the model was trained with; memory depends on the window, never on
the scene. A finished window is saved as ``<out folder>/.<out name>.parts/r<row>_c<col>.npz``
(atomically), so a killed run resumes from its finished windows (``resume``) and windows can
be spread over processes (:mod:`flows.predict`, Dask). :func:`assemble` then writes the map:
deflate-compressed, 256-px tiles, overviews, band descriptions, nodata, the
PASTIS class colormap and provenance tags (model name, version, run id, pimc version).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pimc import __version__
from pimc.cog import write_cog
from pimc.core.errors import InputError, PimcError, UsageError
from pimc.core.io import STAMP, atomic_path, fingerprint, fresh_output_dir
from pimc.scene import SUFFIXES, Scene

__all__ = [
    "ScenePlan",
    "assemble",
    "check_coverage",
    "plan_scene",
    "predict_scene",
    "predict_windows",
    "provenance",
]

# Training series start and end a little inside the season grid (the grid's edges are filled
# with the nearest observation), so a scene may leave up to a month uncovered at each end.
EDGE_SLACK = np.timedelta64(31, "D")
# GDAL's block cache defaults to 5 % of RAM and keeps every block it has read until full, so
# while reading windows it grew with the scene (benchmarks/scene.py: +360 MiB peak RSS from 1k^2
# to 2k^2 px). Each window is read once, so the cache only has to hold blocks that straddle
# windows: one 256-px window of 50 dates x 10 uint16 bands is 62 MiB. The COG copy needs less
# (pimc.cog builds the overviews a tile at a time). A user's GDAL_CACHEMAX wins.
GDAL_CACHE_MIB = 128


@dataclass
class ScenePlan:
    """What a scene prediction writes and what is left to do.

    Attributes:
        out: The COG to write.
        work: The folder of finished windows.
        windows: Every window, in raster order, as ``(col_off, row_off, width, height)``.
        todo: The windows not finished yet.
    """

    out: Path
    work: Path
    windows: list[tuple[int, int, int, int]]
    todo: list[tuple[int, int, int, int]]


def provenance(ref: str) -> dict[str, str]:
    """GeoTIFF tags saying which model version (and run) made a map, with which pimc."""
    from pimc import tracking

    uri = tracking.model_uri(ref)
    tags = {"PIMC_MODEL_URI": uri, "PIMC_VERSION": __version__}
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        version = tracking.get_alias(name, alias)
    else:
        name, _, version = uri.removeprefix("models:/").partition("/")
    if version is not None:
        tags.update(
            PIMC_MODEL=name, PIMC_MODEL_VERSION=version,
            PIMC_RUN_ID=tracking.version_run(name, version) or "",
        )  # fmt: skip
    return tags


def check_coverage(dates: np.ndarray, meta: dict[str, Any]) -> None:
    """The scene's dates must span the model's input window, up to :data:`EDGE_SLACK` (or one
    grid step, if longer) at each end, as PASTIS's own series do: a model never extrapolates
    a season it was not shown.

    Raises:
        InputError: naming the window and the scene's dates.
    """
    from pimc.core.config import PrepareConfig
    from pimc.core.typed_config import from_dict
    from pimc.transforms.series import date_grid

    grid = date_grid(from_dict(PrepareConfig, meta["prepare"], source="model metadata"))
    if grid is None:  # time_axis: pad: the model reads whatever dates there are
        window, step = dates[:1], np.timedelta64(0, "D")
    else:
        window = grid[: meta["input_len"]] if "input_len" in meta else grid
        step = grid[1] - grid[0] if len(grid) > 1 else np.timedelta64(0, "D")
    step = max(step, EDGE_SLACK)
    if len(dates) < 3 or dates[0] > window[0] + step or dates[-1] < window[-1] - step:
        raise InputError(
            f"the scene's {len(dates)} dates ({dates[0]} .. {dates[-1]}) do not cover the "
            f"model's input window {window[0]} .. {window[-1]}; give acquisitions spanning it"
        )


def plan_scene(
    scene: Scene,
    meta: dict[str, Any],
    out: str | Path,
    window: int,
    tags: dict[str, str],
    resume: bool = False,
) -> ScenePlan:
    """Check everything that can be checked before any work, then set up the parts folder
    (kept when ``resume`` and it belongs to this very scene, model and window; else emptied).

    Raises:
        UsageError: a bad ``out`` name or ``window``. InputError: :func:`check_coverage`.
        PimcError: ``out``'s folder is missing, or the parts folder is not pimc's.
    """
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out {out}: name a GeoTIFF (.tif)")
    if window < 16 or window % 16:
        raise UsageError(f"--window {window}: must be a multiple of 16 (GeoTIFF tile sizes)")
    check_coverage(scene.dates, meta)
    if not out.parent.is_dir():
        raise PimcError(f"cannot write {out}: folder {out.parent} does not exist")
    files = sorted(str(p) for p in scene.files)  # the dates' and the cloud masks'
    stats = [(f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files]
    layout = [(str(p), i) for p, i in scene.sources], [str(m) for m in scene.masks]
    key = fingerprint(meta, tags, window, stats, layout)
    work = out.with_name(f".{out.name}.parts")
    if not resume and (work / STAMP).is_file():
        shutil.rmtree(work)  # a previous run's parts (pimc's: stamped), no --resume: afresh
    try:
        fresh_output_dir(work, key)
    except FileExistsError as err:
        raise PimcError(f"{err}; remove it or choose another --out") from None
    windows = [(w.col_off, w.row_off, w.width, w.height) for w in scene.windows(window)]
    todo = [w for w in windows if not _part(work, w).is_file()]
    return ScenePlan(out, work, windows, todo)


@contextmanager
def _bounded_gdal_cache() -> Iterator[None]:
    """GDAL's block cache at most :data:`GDAL_CACHE_MIB` inside (unless the environment sets
    ``GDAL_CACHEMAX``), restored after: GDAL's cache size is process-wide."""
    from rasterio.env import get_gdal_config, set_gdal_config

    before = get_gdal_config("GDAL_CACHEMAX")  # bytes
    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", min(before, GDAL_CACHE_MIB * 2**20))
    try:
        yield
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def _part(work: Path, win: tuple[int, int, int, int]) -> Path:
    return work / f"r{win[1]}_c{win[0]}.npz"


def predict_windows(
    model: Callable,
    meta: dict[str, Any],
    scene: Scene,
    windows: Sequence[tuple[int, int, int, int]],
    work: Path,
    batch_size: int = 2048,
    on_window: Callable[[tuple[int, int, int, int]], Any] | None = None,
) -> list[str]:
    """Predict ``windows`` and save each as a part file (``on_window(window)`` after each,
    e.g. a progress bar); returns their paths. The date and mask files are opened once."""
    import rasterio
    from rasterio.windows import Window

    from pimc.predict import Patch, predict_patch

    done = []
    with ExitStack() as stack:
        stack.enter_context(_bounded_gdal_cache())
        files = {p: stack.enter_context(rasterio.open(p)) for p in scene.files}
        for win in windows:
            image = scene.read(Window(*win), files)
            patch = Patch(image, scene.dates, patch_id=0, crs=scene.crs, transform=None)
            pred = predict_patch(model, meta, patch, batch_size, progress=False)
            if "classes" in pred:
                array, steps = pred["classes"][None], np.array([], dtype="<U10")
            else:
                forecast = pred["forecast"]
                array = forecast.reshape(-1, *forecast.shape[2:]).astype(np.float32)
                steps = np.array([str(d) for d in pred["dates"]], dtype="<U10")
            with atomic_path(_part(work, win)) as tmp:
                np.savez(tmp, array=array, steps=steps, missing=pred["no_prediction"])
            done.append(str(_part(work, win)))
            if on_window:
                on_window(win)
    return done


def _layout(array: np.ndarray, steps: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """Bands, nodata, tags and colormap of the map, from its first part."""
    from pimc import plots
    from pimc.predict import CLASS_NODATA

    if "class_ids" in meta:
        names = dict(zip(meta["class_ids"], meta["class_names"], strict=True))
        return {
            "dtype": "uint8", "nodata": CLASS_NODATA, "descriptions": ["class"],
            "tags": {f"CLASS_{k}": v for k, v in names.items()},
            "colormap": plots.class_colors(), "resampling": "NEAREST",
        }  # fmt: skip
    horizon = array.shape[0] // len(meta["indices"])
    labels = list(steps) or [f"t+{h + 1}" for h in range(horizon)]
    return {
        "dtype": "float32", "nodata": np.nan, "tags": {}, "colormap": None,
        "descriptions": [f"{i} {d}" for i in meta["indices"] for d in labels],
        "resampling": "AVERAGE",
    }  # fmt: skip


def _load_part(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    try:
        with np.load(path, allow_pickle=False) as part:
            return part["array"], part["steps"], int(part["missing"])
    except (OSError, ValueError, KeyError) as err:
        raise PimcError(f"{path} is unreadable ({err}); delete it and rerun with --resume") from err


def assemble(
    plan: ScenePlan, scene: Scene, meta: dict[str, Any], tags: dict[str, str], window: int
) -> str:
    """Write the finished windows of ``plan`` as its COG (atomically); remove the parts.

    Returns:
        A one-paragraph summary for the console.
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    missing, layout = 0, None
    try:
        with atomic_path(plan.out) as final, ExitStack() as stack:
            draft = final.with_name(final.name + ".tiles.tif")
            stack.callback(draft.unlink, missing_ok=True)
            dst = None
            for win in plan.windows:
                array, steps, count = _load_part(_part(plan.work, win))
                missing += count
                if dst is None:
                    layout = _layout(array, steps, meta)
                    dst = stack.enter_context(rasterio.open(
                        draft, "w", driver="GTiff", width=scene.width, height=scene.height,
                        count=len(array), dtype=layout["dtype"], nodata=layout["nodata"],
                        crs=scene.crs, transform=scene.transform, tiled=True,
                        blockxsize=window, blockysize=window, compress="deflate",
                    ))  # fmt: skip
                dst.write(array, window=Window(*win))
            for band, text in enumerate(layout["descriptions"], start=1):
                dst.set_band_description(band, text)
            dst.update_tags(**layout["tags"], **tags)
            if layout["colormap"]:
                dst.write_colormap(1, layout["colormap"])
            dst.close()
            with _bounded_gdal_cache():
                write_cog(draft, final, layout["resampling"])
    except (RasterioError, OSError) as err:
        raise PimcError(f"cannot write {plan.out}: {err}; check the folder is writable") from err
    shutil.rmtree(plan.work, ignore_errors=True)
    return (
        f"{meta['pimc_task']} map of a {scene.height} x {scene.width} px scene, "
        f"{len(scene.dates)} dates ({scene.dates[0]} .. {scene.dates[-1]}), "
        f"{len(plan.windows)} windows; {missing} of {scene.height * scene.width} px without "
        f"a prediction (nodata)\nwrote {plan.out} (COG, {scene.crs})"
    )


def predict_scene(
    model: Callable,
    meta: dict[str, Any],
    scene: Scene,
    out: str | Path,
    *,
    window: int = 256,
    batch_size: int = 2048,
    progress: bool = True,
    tags: dict[str, str] | None = None,
    resume: bool = False,
) -> str:
    """Predict every pixel of ``scene`` into the COG ``out``, in this process (see
    :mod:`flows.predict` to spread the windows over a Dask cluster).

    Args:
        model: The deployed task model (:func:`pimc.predict.load_deployed`).
        meta: Its deployment metadata.
        scene: :func:`pimc.scene.open_scene`'s result.
        out: The ``.tif`` to write.
        window: Window (and COG tile) side in pixels, a multiple of 16.
        batch_size: Pixels per forward pass.
        progress: A progress bar over windows, with pixels per second.
        tags: Provenance tags for the file (:func:`provenance`).
        resume: Keep the finished windows of an interrupted run of the same scene and model.

    Returns:
        A one-paragraph summary for the console.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be >= 1 (pixels per forward pass)")
    tags = tags or {"PIMC_VERSION": __version__}
    plan = plan_scene(scene, meta, out, window, tags, resume)
    pixels = sum(w[2] * w[3] for w in plan.todo)
    with tqdm(total=pixels, desc="scene", unit="px", unit_scale=True, disable=not progress) as bar:
        step = lambda win: bar.update(win[2] * win[3])  # noqa: E731
        predict_windows(model, meta, scene, plan.todo, plan.work, batch_size, on_window=step)
    return assemble(plan, scene, meta, tags, window)
