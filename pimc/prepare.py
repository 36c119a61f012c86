"""The ``prepare`` stage: PASTIS patches -> per-pixel index series + image patches (pairs).

For each patch (streamed one at a time, so memory does not grow with the dataset) it samples
pixels, computes their vegetation-index series (NDVI, EVI, SAVI, ...), cleans cloudy dates,
puts them on a common time axis, and cuts the K x K image window around each pixel from a
composite of the patch. Output folder::

    shards/S2_<ID>.npz   series float32 (N, I, L), valid bool (N, L), image float16
                         (N, 10, K, K) or (N, R, 10, K, K) for random dates, rows, cols, labels
    pixels.parquet       the manifest: patch_id, row, col, fold, label, shard, index
    patches.parquet      patch_id, fold, tile, n_dates, dates (the acquisition dates)
    meta.json            index names, bands, time axis (grid dates), window size, config

Each shard is written atomically and a finished shard is skipped on re-run, so an interrupted
stage resumes; changing the stage's config (or the input data) starts the folder afresh.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pimc.config import PrepareConfig
from pimc.data.pastis import PASTIS
from pimc.indices import compute_indices
from pimc.io import atomic_path, fingerprint, fresh_output_dir, write_json
from pimc.sampling import composite, extract_patches, sample_pixels
from pimc.timegrid import despike, make_grid, pad_to_length, resample_to_grid

META = "meta.json"
MANIFEST = "pixels.parquet"
PATCHES = "patches.parquet"


def shard_name(patch_id: int) -> str:
    return f"S2_{patch_id}.npz"


def date_grid(cfg: PrepareConfig) -> np.ndarray | None:
    """The common date grid of ``time_axis: grid``; ``None`` for ``pad``."""
    if cfg.time_axis != "grid":
        return None
    return make_grid(cfg.grid_start, cfg.grid_end, cfg.grid_step_days)


def pixel_series(
    image: torch.Tensor,
    dates: Any,
    rows: torch.Tensor,
    cols: torch.Tensor,
    cfg: PrepareConfig,
    grid: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cleaned index series of chosen pixels, on the stage's time axis.

    The one place series are made: ``prepare`` and ``pimc predict`` (every pixel of a patch)
    both call it, so a deployed model sees exactly the preprocessing it was trained on.

    Args:
        image: ``(T, 10, H, W)`` reflectance of one patch, bands in PASTIS order.
        dates: The T acquisition dates.
        rows: ``(N,)`` pixel rows.
        cols: ``(N,)`` pixel columns.
        cfg: The ``prepare`` config (indices, despike, time axis).
        grid: The common date grid (``time_axis: grid``) or ``None`` (``pad``).

    Returns:
        ``series`` ``(N, I, L)`` float32 and ``valid`` ``(N, L)`` bool.
    """
    pixels = image[:, :, rows, cols]  # (T, 10, N)
    series = compute_indices(pixels, PASTIS.band_names, cfg.indices, band_dim=-2)  # (T, I, N)
    series = series.permute(2, 1, 0).contiguous()  # (N, I, T): time last
    blue = pixels[:, PASTIS.band_names.index("B02")].T[:, None, :]  # (N, 1, T)
    series = despike(
        series, cfg.despike, cfg.despike_window, blue=blue, blue_threshold=cfg.blue_threshold
    )
    if grid is not None:
        series = resample_to_grid(series, dates, grid)
        valid = torch.ones(series.shape[0], series.shape[-1], dtype=torch.bool)
    else:
        series, observed = pad_to_length(series, cfg.max_length)
        valid = observed[:, 0]
    return series.float(), valid


def prepare_patch(sample: dict[str, Any], cfg: PrepareConfig, grid: np.ndarray | None) -> dict:
    """Pairs of one PASTIS sample.

    Args:
        sample: a :class:`~pimc.data.PASTIS` sample with all 10 bands.
        cfg: the stage config.
        grid: the common date grid (``time_axis: grid``) or ``None`` (``pad``).

    Returns:
        Arrays ``series`` (N, I, L) float32, ``valid`` (N, L) bool, ``image`` float16
        (N, 10, K, K) or (N, R, 10, K, K), ``rows``/``cols``/``labels`` (N,).
    """
    image, mask, dates, pid = sample["image"], sample["mask"], sample["dates"], sample["id"]
    coords = sample_pixels(
        mask,
        cfg.pixels_per_patch,
        cfg.sampler,
        seed=cfg.seed * 1_000_003 + pid,
        exclude=cfg.exclude_classes,
    )
    rows, cols = torch.from_numpy(coords[:, 0]), torch.from_numpy(coords[:, 1])
    series, valid = pixel_series(image, dates, rows, cols, cfg, grid)
    comp = composite(
        image,
        cfg.patch_date,
        index=cfg.patch_date_index,
        seed=cfg.seed * 1_000_003 + pid,
        n=cfg.random_dates,
    )
    windows = extract_patches(comp, rows, cols, cfg.patch_size)
    labels = mask[rows, cols]
    return {
        "series": series.numpy().astype(np.float32),
        "valid": valid.numpy(),
        "image": windows.numpy().astype(np.float16),  # reflectance x1e4 fits float16's range
        "rows": coords[:, 0].astype(np.int16),
        "cols": coords[:, 1].astype(np.int16),
        "labels": labels.numpy().astype(np.int16),
    }


def run_prepare(
    pastis_root: str | Path, cfg: PrepareConfig, progress: bool = True
) -> dict[str, Any]:
    """Run the stage: write ``cfg.out`` as described in the module docstring.

    Returns:
        Stats: pixels, patches, class counts, seconds, peak RSS (MiB), resumed shards.
    """
    start = time.perf_counter()
    dataset = PASTIS(pastis_root, folds=cfg.folds)
    out = Path(cfg.out)
    # A change of config or of the dataset's metadata invalidates finished shards.
    fresh_output_dir(
        out, fingerprint(asdict(cfg), (dataset.root / "metadata.geojson").read_bytes())
    )
    (out / "shards").mkdir(exist_ok=True)
    grid = date_grid(cfg)

    resumed = 0
    for i in tqdm(range(len(dataset)), desc="prepare", unit="patch", disable=not progress):
        pid = int(dataset.metadata["id"][i])
        shard = out / "shards" / shard_name(pid)
        if shard.is_file():
            resumed += 1
            continue
        arrays = prepare_patch(dataset[i], cfg, grid)
        with atomic_path(shard) as tmp:
            np.savez(tmp, **arrays)

    manifest, patches = _tables(dataset, out)
    with atomic_path(out / MANIFEST) as tmp:
        manifest.to_parquet(tmp, index=False)
    with atomic_path(out / PATCHES) as tmp:
        patches.to_parquet(tmp, index=False)
    meta = {
        "indices": list(cfg.indices),
        "bands": list(PASTIS.band_names),
        "time_axis": cfg.time_axis,
        "grid": [str(d) for d in grid] if grid is not None else None,
        "length": int(len(grid)) if grid is not None else cfg.max_length,
        "patch_size": cfg.patch_size,
        "patch_date": cfg.patch_date,
        "classes": list(PASTIS.classes),
        "config": asdict(cfg),
    }
    write_json(out / META, meta)
    counts = manifest["label"].value_counts().sort_index()
    return {
        "patches": len(patches),
        "pixels": len(manifest),
        "resumed_patches": resumed,
        "length": meta["length"],
        "class_counts": {int(k): int(v) for k, v in counts.items()},
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _tables(dataset: PASTIS, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pixel manifest and the patch table, read back from the shards."""
    parts = []
    for row in dataset.metadata.itertuples():
        with np.load(out / "shards" / shard_name(row.id)) as z:
            n = len(z["rows"])
            parts.append(
                pd.DataFrame(
                    {
                        "patch_id": np.full(n, row.id, dtype=np.int64),
                        "row": z["rows"].astype(np.int32),
                        "col": z["cols"].astype(np.int32),
                        "fold": np.full(n, row.fold, dtype=np.int8),
                        "label": z["labels"].astype(np.int16),
                        "shard": shard_name(row.id),
                        "index": np.arange(n, dtype=np.int32),
                    }
                )
            )
    manifest = pd.concat(parts, ignore_index=True)
    patches = pd.DataFrame(
        {
            "patch_id": dataset.metadata["id"].astype(np.int64),
            "fold": dataset.metadata["fold"].astype(np.int8),
            "tile": dataset.metadata["tile"].astype(str),
            "n_dates": [len(d) for d in dataset.metadata["dates"]],
            "dates": [list(pd.to_datetime(d).date) for d in dataset.metadata["dates"]],
        }
    )
    return manifest, patches
