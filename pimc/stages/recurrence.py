"""The ``recurrence`` stage: recurrence plots of the prepared index series, and their gallery.

With ``materialize: true`` it writes one float16 file per prepared shard::

    shards/S2_<ID>.npy   float16 (N, I, S, S): one plot per index channel, S = recurrence.size

With ``materialize: false`` training builds the plots on its own device from the ``prepare``
series (:func:`build_rps` is the one function both paths use), and this stage writes only the
gallery and stats. PASTIS-scale data makes materialising every plot costly (16,384 pixels x
61^2 x 3 per patch), so sampled pixels only are ever turned into plots.

Like ``prepare``, the stage is plan -> one function per patch -> finalize, so that
``flows.recurrence`` can fan the patches out (``compute.task_runner: dask``) with results
identical to :func:`run_recurrence`:

1. :func:`plan_recurrence`: read ``meta.json`` and the manifest, reset or keep ``cfg.out``.
2. :func:`recurrence_one`: one prepared shard -> one RP shard, plus the per-class sums of its
   plots for the gallery. A plot file already written (resumed run) is read instead of rebuilt,
   so every patch is a work item: its plots still count in the gallery.
3. :func:`finalize_recurrence`: add the sums up in manifest order, draw the gallery, stats.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pimc.core.config import RecurrenceConfig
from pimc.core.errors import InputError
from pimc.core.io import atomic_path, fingerprint, fresh_output_dir
from pimc.core.paths import MANIFEST, META, SHARDS, rp_shard_name, shard_name
from pimc.transforms.recurrence import build_rps


@dataclass(frozen=True)
class RecurrencePlan:
    """What :func:`plan_recurrence` decided; small and picklable.

    Attributes:
        prepared: the ``prepare`` output folder.
        cfg: the stage config.
        patch_ids: every prepared patch, in manifest order (the gallery sums in this order).
        indices: index names, for the gallery's rows.
        classes: class names, for the gallery's columns.
    """

    prepared: str
    cfg: RecurrenceConfig
    patch_ids: tuple[int, ...]
    indices: tuple[str, ...]
    classes: tuple[str, ...]


def plan_recurrence(prepared: str | Path, cfg: RecurrenceConfig) -> RecurrencePlan:
    """Step 1: read what ``prepare`` wrote and make ``cfg.out`` belong to this config and data."""
    prepared = Path(prepared)
    meta = json.loads((prepared / META).read_text())
    manifest = pd.read_parquet(prepared / MANIFEST, columns=["patch_id"])
    ids = tuple(int(pid) for pid in dict.fromkeys(manifest["patch_id"]))
    out = fresh_output_dir(cfg.out, fingerprint(asdict(cfg), meta))
    if cfg.materialize:
        (out / SHARDS).mkdir(exist_ok=True)
    return RecurrencePlan(str(prepared), cfg, ids, tuple(meta["indices"]), tuple(meta["classes"]))


def recurrence_one(prepared: str, cfg: RecurrenceConfig, patch_id: int) -> dict[str, Any]:
    """Step 2: plots of one prepared shard, written atomically when ``cfg.materialize``.

    Args:
        prepared: the ``prepare`` output folder.
        cfg: the stage config; ``cfg.out`` must exist (made by :func:`plan_recurrence`).
        patch_id: the patch whose shard ``shards/S2_<patch_id>.npz`` to read.

    Returns:
        ``patch_id``; ``built`` (False when a finished plot file was reused); ``plots`` built
        (pixels x indices); ``seconds`` spent building; ``bytes`` written; ``sums``
        {label: float32 (I, S, S) sum of that class's plots} and ``counts`` {label: pixels}.
    """
    name = shard_name(patch_id)
    with np.load(Path(prepared) / SHARDS / name) as z:
        series, valid, labels = (torch.from_numpy(z[k]) for k in ("series", "valid", "labels"))
    target = Path(cfg.out) / SHARDS / rp_shard_name(name)
    built, plots, seconds, written = False, 0, 0.0, 0
    if cfg.materialize and target.is_file():
        rps = torch.from_numpy(np.load(target)).float()  # resumed: reuse for the gallery
    else:
        t0 = time.perf_counter()
        rps = build_rps(series, valid, cfg, dtype=torch.float16)
        seconds = time.perf_counter() - t0
        built, plots = True, rps.shape[0] * rps.shape[1]
        if cfg.materialize:
            with atomic_path(target) as tmp:
                np.save(tmp, rps.numpy())
            written = rps.numel() * rps.element_size()
        rps = rps.float()
    sums, counts = {}, {}
    for label in labels.unique().tolist():
        sel = rps[labels == label]
        sums[int(label)] = sel.sum(0).numpy()
        counts[int(label)] = len(sel)
    return {
        "patch_id": int(patch_id),
        "built": built,
        "plots": int(plots),
        "seconds": seconds,
        "bytes": int(written),
        "sums": sums,
        "counts": counts,
    }


def finalize_recurrence(
    plan: RecurrencePlan, results: Iterable[dict[str, Any]], gallery: str | Path
) -> dict[str, Any]:
    """Step 3: the per-class mean-RP gallery PNG and the stage's stats.

    Args:
        plan: from :func:`plan_recurrence`.
        results: one :func:`recurrence_one` result per patch of ``plan.patch_ids``, in that
            order (float32 sums are added in this order, so the gallery never depends on
            which worker finished first). May be a generator: each is folded in and dropped.
        gallery: the PNG to write.

    Raises:
        InputError: ``results`` do not cover ``plan.patch_ids`` in order.
    """
    from pimc.plots import rp_gallery

    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    n_rps, seconds, written, seen = 0, 0.0, 0, []
    for res in results:
        seen.append(res["patch_id"])
        n_rps += res["plots"]
        seconds += res["seconds"]
        written += res["bytes"]
        for label, part in res["sums"].items():
            sums[label] = sums.get(label, 0) + torch.from_numpy(part)
            counts[label] = counts.get(label, 0) + res["counts"][label]
    if tuple(seen) != plan.patch_ids:
        raise InputError(
            "finalize_recurrence: results must cover plan.patch_ids in order "
            f"({len(seen)} results for {len(plan.patch_ids)} patches)"
        )
    means = {k: (sums[k] / counts[k]).numpy() for k in sorted(sums)}
    rp_gallery(means, list(plan.indices), list(plan.classes), gallery)
    side = next(iter(means.values())).shape[-1]
    return {
        SHARDS: len(plan.patch_ids),
        "plots_built": n_rps,
        "plot_size": int(side),
        "materialized": plan.cfg.materialize,
        "bytes_written": int(written),
        "rps_per_second": round(n_rps / seconds, 1) if seconds > 0 else None,
        "classes_in_gallery": len(means),
    }


def run_recurrence(
    prepared: str | Path, cfg: RecurrenceConfig, gallery: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Run the stage in this process: RP shards (if ``materialize``), gallery PNG, stats."""
    plan = plan_recurrence(prepared, cfg)
    results = (
        recurrence_one(plan.prepared, cfg, pid)
        for pid in tqdm(plan.patch_ids, desc="recurrence", unit="shard", disable=not progress)
    )
    return finalize_recurrence(plan, results, gallery)
