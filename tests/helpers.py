"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from pimc.core.config import PrepareConfig, RecurrenceConfig
from pimc.stages.prepare import run_prepare
from pimc.stages.recurrence import run_recurrence

REPO = Path(__file__).resolve().parents[1]

PIXELS = 32  # per patch; the tiny data set has one patch per fold


def make_pairs_data(
    raw: Path, root: Path, **prepare: object
) -> tuple[Path, Path, RecurrenceConfig]:
    """Prepared pairs and materialized RPs of the tiny synthetic data under ``root``."""
    prepared = root / "prep"
    cfg = PrepareConfig(out=str(prepared), pixels_per_patch=PIXELS, **prepare)
    run_prepare(raw / "PASTIS", cfg, progress=False)
    rcfg = RecurrenceConfig(out=str(root / "rp"), materialize=True)
    run_recurrence(prepared, rcfg, root / "gallery.png", progress=False)
    return prepared, root / "rp", rcfg
