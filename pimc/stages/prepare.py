"""The ``prepare`` stage: PASTIS patches -> per-pixel index series + image patches (pairs).

For each patch (streamed one at a time, so memory does not grow with the dataset) it samples
pixels, computes their vegetation-index series (NDVI, EVI, SAVI, ...), cleans cloudy dates,
puts them on a common time axis, and cuts the K x K image window around each pixel from a
composite of the patch. Output folder::

    shards/S2_<ID>.npz   series float32 (N, I, L), valid bool (N, L), image float16
                         (N, 10, K, K) or (N, R, 10, K, K) for random dates, rows, cols,
                         labels, parcels (ParcelIDs)
    pixels.parquet       the manifest: patch_id, row, col, fold, label, parcel, shard, index
    patches.parquet      patch_id, fold, tile, n_dates, dates (the acquisition dates)
    meta.json            index names, bands, time axis (grid dates), window size, config

Each shard is written atomically and a finished shard is skipped on re-run, so an interrupted
stage resumes; changing the stage's config (or the metadata) starts the folder afresh, and a
shard whose patch files changed since (size or modification time) is made again.

The stage is three steps, so that an orchestrator can fan the middle one out over processes or
machines (``compute.task_runner: dask`` in ``flows.prepare``) with results identical to
:func:`run_prepare`'s sequential loop:

1. :func:`plan_prepare`: check the dataset, reset or keep ``cfg.out``, list unfinished patches.
2. :func:`prepare_one`: one patch -> one shard. :func:`prepare_patches` runs it for a batch of
   patches from only a path, the config and patch ids (cheap to send to a worker).
3. :func:`finalize_prepare`: manifest, patch table and meta, read back from the shards.

Every step reads the dataset its caller opened with :func:`open_pastis` (opening parses
``metadata.geojson`` and checks every patch file, which for real PASTIS costs more than preparing
a patch), so a caller opens it once and passes it on.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pimc.core.config import PrepareConfig
from pimc.core.io import atomic_path, fingerprint, fresh_output_dir, write_json
from pimc.core.paths import MANIFEST, META, PATCHES, SHARDS, shard_name
from pimc.core.seeds import mix_seed
from pimc.data.pastis import PASTIS
from pimc.transforms.sampling import composite, extract_patches, sample_pixels
from pimc.transforms.series import date_grid, pixel_series

_log = logging.getLogger(__name__)


def prepare_patch(sample: dict[str, Any], cfg: PrepareConfig, grid: np.ndarray | None) -> dict:
    """Pairs of one PASTIS sample.

    Args:
        sample: a :class:`~pimc.data.PASTIS` sample with all 10 bands.
        cfg: the stage config.
        grid: the common date grid (``time_axis: grid``) or ``None`` (``pad``).

    Returns:
        Arrays ``series`` (N, I, L) float32, ``valid`` (N, L) bool, ``image`` float16
        (N, 10, K, K) or (N, R, 10, K, K), ``rows``/``cols``/``labels``/``parcels`` (N,).
    """
    image, mask, dates, pid = sample["image"], sample["mask"], sample["dates"], sample["id"]
    coords = sample_pixels(
        mask,
        mask.numel() if cfg.pixels_per_patch is None else cfg.pixels_per_patch,
        cfg.sampler,
        seed=mix_seed(cfg.seed, pid),
        exclude=cfg.exclude_classes,
    )
    rows, cols = torch.from_numpy(coords[:, 0]), torch.from_numpy(coords[:, 1])
    series, valid = pixel_series(image, dates, rows, cols, cfg, grid)
    comp = composite(
        image,
        cfg.patch_date,
        index=cfg.patch_date_index,
        seed=mix_seed(cfg.seed, pid),
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
        "parcels": sample["parcels"][rows, cols].numpy().astype(np.int32),
        "clipped": np.int64(sample.get("clipped", 0)),  # out-of-range reflectances (PASTIS)
    }


@dataclass(frozen=True)
class PreparePlan:
    """What :func:`plan_prepare` decided; small and picklable (sent to flow tasks).

    Attributes:
        root: the PASTIS folder (holds ``metadata.geojson``), to re-open it in another process.
        cfg: the stage config.
        patch_ids: every patch of ``cfg.folds``, in metadata order (the manifest's order).
        todo: the patches whose shard is not written yet, in the same order.
        started: wall-clock start (``time.time()``; the steps may run in different processes).
    """

    root: str
    cfg: PrepareConfig
    patch_ids: tuple[int, ...]
    todo: tuple[int, ...]
    started: float

    @property
    def resumed(self) -> int:
        return len(self.patch_ids) - len(self.todo)


def open_pastis(pastis_root: str | Path, cfg: PrepareConfig) -> PASTIS:
    """The PASTIS folds ``cfg.folds`` under ``pastis_root``, for the steps below.

    Raises:
        DatasetNotFoundError, DatasetCorruptError: the dataset is missing or unreadable.
    """
    return PASTIS(pastis_root, folds=tuple(cfg.folds))


def plan_prepare(dataset: PASTIS, cfg: PrepareConfig) -> PreparePlan:
    """Step 1: make ``cfg.out`` belong to this config and data, list unfinished patches.

    Args:
        dataset: from :func:`open_pastis`.
        cfg: the stage config.
    """
    started = time.time()
    out = Path(cfg.out)
    # A change of config or of the dataset's metadata invalidates finished shards.
    fresh_output_dir(
        out, fingerprint(asdict(cfg), (dataset.root / "metadata.geojson").read_bytes())
    )
    (out / SHARDS).mkdir(exist_ok=True)
    ids = tuple(int(pid) for pid in dataset.metadata["id"])
    todo = tuple(pid for pid in ids if not _shard_is_current(dataset, out, pid))
    return PreparePlan(str(dataset.root), cfg, ids, todo, started)


def prepare_one(dataset: PASTIS, cfg: PrepareConfig, patch_id: int) -> dict[str, Any]:
    """Step 2: prepare one patch and write ``shards/S2_<patch_id>.npz`` atomically.

    Pure apart from that file: the output depends only on the arguments (pixel sampling and
    composites are seeded by ``cfg.seed`` and the patch id), so any process may run it.

    Args:
        dataset: from :func:`open_pastis`.
        cfg: the stage config; ``cfg.out`` must exist (made by :func:`plan_prepare`).
        patch_id: ``ID_PATCH`` of a patch in ``cfg.folds``.

    Returns:
        Small stats: ``patch_id``, ``pixels``, ``seconds``, ``peak_rss_mib`` (this process).
    """
    t0 = time.perf_counter()
    source = dataset.source_signature(patch_id)  # before reading: a later change redoes it
    arrays = prepare_patch(dataset[dataset.index_of(patch_id)], cfg, date_grid(cfg))
    arrays["source"] = np.asarray(source)
    with atomic_path(Path(cfg.out) / SHARDS / shard_name(patch_id)) as tmp:
        np.savez(tmp, **arrays)
    return {
        "patch_id": int(patch_id),
        "pixels": int(len(arrays["rows"])),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mib": _peak_rss_mib(),
    }


def prepare_patches(
    pastis_root: str | Path, cfg: PrepareConfig, patch_ids: Iterable[int]
) -> list[dict[str, Any]]:
    """Step 2 for a worker: open the dataset once, then :func:`prepare_one` each patch in order.

    Returns:
        One :func:`prepare_one` result per patch id.
    """
    dataset = open_pastis(pastis_root, cfg)
    return [prepare_one(dataset, cfg, pid) for pid in patch_ids]


def finalize_prepare(
    dataset: PASTIS, plan: PreparePlan, results: Iterable[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Step 3: write the manifest, the patch table and ``meta.json``; return the stage's stats.

    Args:
        dataset: from :func:`open_pastis` (of ``plan.root``).
        plan: from :func:`plan_prepare`.
        results: the :func:`prepare_one` stats of this run's patches (any order); only their
            peak RSS is used, as every table is read back from the shards.

    Returns:
        Stats: pixels, patches, class counts, seconds, peak RSS (MiB, the largest of this
        process and the workers), resumed shards.
    """
    cfg = plan.cfg
    out = Path(cfg.out)
    peak = max([_peak_rss_mib(), *(r["peak_rss_mib"] for r in results)])
    grid = date_grid(cfg)
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
    clipped = int(patches["clipped_values"].sum())
    if clipped:  # never silent: the count is in the stage's report and patches.parquet
        n = int((patches["clipped_values"] > 0).sum())
        _log.warning(
            "prepare: %d out-of-range reflectance values in %d patch(es) clipped to %s "
            "(patches.parquet: clipped_values)",
            clipped,
            n,
            PASTIS.reflectance_range,
        )
    return {
        "patches": len(patches),
        "pixels": len(manifest),
        "clipped_values": clipped,
        "resumed_patches": plan.resumed,
        "length": meta["length"],
        "class_counts": {int(k): int(v) for k, v in counts.items()},
        "seconds": round(time.time() - plan.started, 3),
        "peak_rss_mib": peak,
    }


def run_prepare(
    pastis_root: str | Path, cfg: PrepareConfig, progress: bool = True
) -> dict[str, Any]:
    """Run the stage in this process: write ``cfg.out`` as described in the module docstring.

    Returns:
        Stats: pixels, patches, class counts, seconds, peak RSS (MiB), resumed shards.

    Raises:
        DatasetNotFoundError, DatasetCorruptError: the dataset is missing or unreadable.
    """
    dataset = open_pastis(pastis_root, cfg)
    plan = plan_prepare(dataset, cfg)
    results = [
        prepare_one(dataset, cfg, pid)
        for pid in tqdm(plan.todo, desc="prepare", unit="patch", disable=not progress)
    ]
    return finalize_prepare(dataset, plan, results)


def _shard_is_current(dataset: PASTIS, out: Path, patch_id: int) -> bool:
    """A finished shard is reused only if its patch's files are the ones it was made from
    (size and modification time, as make and rsync judge it): a replaced or corrupted
    ``S2_*.npy`` is prepared again on resume instead of keeping the old pixels."""
    path = out / SHARDS / shard_name(patch_id)
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            made_from = str(z["source"]) if "source" in z.files else None
    except (OSError, ValueError, EOFError):  # unreadable: make it again
        return False
    return made_from == dataset.source_signature(patch_id)


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _tables(dataset: PASTIS, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pixel manifest and the patch table, read back from the shards."""
    parts, clipped = [], []
    for row in dataset.metadata.itertuples():
        with np.load(out / SHARDS / shard_name(row.id)) as z:
            n = len(z["rows"])
            clipped.append(int(z["clipped"]) if "clipped" in z.files else 0)
            parts.append(
                pd.DataFrame(
                    {
                        "patch_id": np.full(n, row.id, dtype=np.int64),
                        "row": z["rows"].astype(np.int32),
                        "col": z["cols"].astype(np.int32),
                        "fold": np.full(n, row.fold, dtype=np.int8),
                        "label": z["labels"].astype(np.int16),
                        "parcel": z["parcels"].astype(np.int32),
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
            "clipped_values": np.asarray(clipped, dtype=np.int64),
        }
    )
    return manifest, patches
