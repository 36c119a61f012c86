"""The ``recurrence`` stage: recurrence plots of the prepared index series, and their gallery.

With ``materialize: true`` it writes one float16 file per prepared shard::

    shards/S2_<ID>.npy   float16 (N, I, S, S): one plot per index channel, S = recurrence.size

With ``materialize: false`` training builds the plots on its own device from the ``prepare``
series (:func:`build_rps` is the one function both paths use), and this stage writes only the
gallery and stats. PASTIS-scale data makes materialising every plot costly (16,384 pixels x
61^2 x 3 per patch), so sampled pixels only are ever turned into plots.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pimc.config import RecurrenceConfig
from pimc.io import atomic_path, fingerprint, fresh_output_dir
from pimc.prepare import MANIFEST, META
from pimc.recurrence import recurrence_plot


def build_rps(
    series: torch.Tensor,
    valid: torch.Tensor | None,
    cfg: RecurrenceConfig,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Recurrence plots of prepared series, honouring padding.

    Args:
        series: (B, I, L) index series (time last), finite.
        valid: (B, L) bool, True where observed (``time_axis: pad``), or None if all are.
        cfg: the ``recurrence`` config (pyts semantics, normalisation, resize).
        dtype: output dtype.

    Returns:
        (B, I, S', S') plots; entries involving padded dates are 0.
    """
    opts = dict(
        dimension=cfg.dimension,
        time_delay=cfg.time_delay,
        threshold=cfg.threshold,
        percentage=cfg.percentage,
    )
    if valid is None or bool(valid.all()):
        return recurrence_plot(series, **opts, normalize=cfg.normalize, size=cfg.size, dtype=dtype)
    rp = recurrence_plot(series, **opts)
    side = rp.shape[-1]
    # A delay vector is observed when its last element is (padding only ever sits at the end).
    v = valid[:, series.shape[-1] - side :]
    rp = rp * (v[:, None, :, None] & v[:, None, None, :])
    if cfg.normalize:
        rp = rp / rp.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(rp.dtype).tiny)
    if cfg.size is not None and cfg.size != side:
        rp = F.interpolate(
            rp,
            size=(cfg.size, cfg.size),
            mode="bilinear",
            align_corners=False,
            antialias=cfg.size < side,
        )
    return rp.to(dtype)


def run_recurrence(
    prepared: str | Path, cfg: RecurrenceConfig, gallery: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Run the stage: RP shards (if ``materialize``), a per-class mean-RP gallery PNG, stats."""
    from pimc.plots import rp_gallery

    prepared = Path(prepared)
    meta = json.loads((prepared / META).read_text())
    manifest = pd.read_parquet(prepared / MANIFEST, columns=["shard"])
    shards = list(dict.fromkeys(manifest["shard"]))
    out = fresh_output_dir(cfg.out, fingerprint(asdict(cfg), meta))
    if cfg.materialize:
        (out / "shards").mkdir(exist_ok=True)

    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    n_rps, seconds, written = 0, 0.0, 0
    for name in tqdm(shards, desc="recurrence", unit="shard", disable=not progress):
        with np.load(prepared / "shards" / name) as z:
            series, valid, labels = (torch.from_numpy(z[k]) for k in ("series", "valid", "labels"))
        target = out / "shards" / name.replace(".npz", ".npy")
        if cfg.materialize and target.is_file():
            rps = torch.from_numpy(np.load(target)).float()  # resumed: reuse for the gallery
        else:
            t0 = time.perf_counter()
            rps = build_rps(series, valid, cfg, dtype=torch.float16)
            seconds += time.perf_counter() - t0
            n_rps += rps.shape[0] * rps.shape[1]
            if cfg.materialize:
                with atomic_path(target) as tmp:
                    np.save(tmp, rps.numpy())
                written += rps.numel() * rps.element_size()
            rps = rps.float()
        for label in labels.unique().tolist():
            sel = rps[labels == label]
            sums[label] = sums.get(label, 0) + sel.sum(0)
            counts[label] = counts.get(label, 0) + len(sel)

    means = {k: (sums[k] / counts[k]).numpy() for k in sorted(sums)}
    rp_gallery(means, meta["indices"], meta["classes"], gallery)
    side = next(iter(means.values())).shape[-1]
    return {
        "shards": len(shards),
        "plots_built": n_rps,
        "plot_size": int(side),
        "materialized": cfg.materialize,
        "bytes_written": int(written),
        "rps_per_second": round(n_rps / seconds, 1) if seconds > 0 else None,
        "classes_in_gallery": len(means),
    }
