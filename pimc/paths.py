"""Every pipeline output path, defined once. ``dvc.yaml`` lists the same paths."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")


def pastis_root(data_root: str | Path) -> Path:
    """Folder holding ``metadata.geojson`` (real and synthetic alike)."""
    return Path(data_root) / "PASTIS"


def eurosat_root(data_root: str | Path) -> Path:
    """Folder holding ``EuroSATallBands.zip`` and the split files."""
    return Path(data_root) / "EuroSAT"


def metrics_file(stage: str) -> Path:
    """``metrics/<stage>.json``: a DVC metrics file (not cached, tracked in git)."""
    return METRICS_DIR / f"{stage}.json"
