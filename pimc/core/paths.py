"""Every pipeline output path, defined once. ``dvc.yaml`` lists the same paths."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
MODELS_DIR = Path("data/models")  # finetune@<task> outputs; pretrain's is pretrain.out
# Results of fine-tuning methods that do not depend on pretraining (pimc.tasks.cache); not a
# DVC output, so a stage re-run does not delete it; `make clean` does.
BASELINE_CACHE = Path("data/cache/baselines")

# Inside the prepare stage's output folder (prepare.out).
META = "meta.json"  # index names, bands, time axis, window size, config
MANIFEST = "pixels.parquet"  # one row per sampled pixel
PATCHES = "patches.parquet"  # one row per patch
SHARDS = "shards"  # prepare: S2_<ID>.npz per patch; recurrence: S2_<ID>.npy (same stem)

# Inside the pretrain stage's output folder (pretrain.out).
CHECKPOINT = "last.pt"  # the latest step: what a re-run resumes from
BEST_CHECKPOINT = "best.pt"  # the epoch of lowest val loss: what downstream tasks start from


def rp_views_out(pretrain_out: str | Path) -> Path:
    """Where the RP-only self-supervised pretraining (``pretrain.objective: rp_views``) that
    the ``rp_ssl_*`` methods start from is written: beside ``pretrain.out``."""
    out = Path(pretrain_out)
    return out.with_name(f"{out.name}_rp_views")


def pastis_root(data_root: str | Path) -> Path:
    """Folder holding ``metadata.geojson`` (real and synthetic alike)."""
    return Path(data_root) / "PASTIS"


def eurosat_root(data_root: str | Path) -> Path:
    """Folder holding ``EuroSATallBands.zip`` and the split files."""
    return Path(data_root) / "EuroSAT"


def metrics_file(stage: str) -> Path:
    """``metrics/<stage>.json``: a DVC metrics file (not cached, tracked in git) holding the
    stage's few headline results, so ``dvc metrics show`` fits a terminal."""
    return METRICS_DIR / f"{stage}.json"


def results_file(stage: str) -> Path:
    """``reports/<stage>.json``: a stage's full results (every method and metric; not cached,
    tracked in git, a plain DVC output). Run statistics (timings, memory) go to MLflow only."""
    return REPORTS_DIR / f"{stage}.json"


def shard_name(patch_id: int) -> str:
    """File name of one patch's prepared shard (``prepare.out/shards/``)."""
    return f"S2_{patch_id}.npz"


def rp_shard_name(shard: str) -> str:
    """File name of the recurrence-plot shard made from prepared shard ``shard``."""
    return str(Path(shard).with_suffix(".npy"))


def task_dir(task: str) -> Path:
    """Checkpoints and results of ``finetune@<task>`` (a DVC output)."""
    return MODELS_DIR / task


# MLflow registered model names of the pretrained towers (models:/<name>@champion).
ENCODER_MODELS = {"rp_encoder": "pimc-rp-encoder", "image_encoder": "pimc-image-encoder"}
