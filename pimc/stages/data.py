"""The ``data`` stage's work: produce the raw datasets (synthetic or real) and describe them.

Plain functions, called by ``flows/data.py``; usable from a notebook without Prefect or DVC.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pimc.core.config import DataConfig
from pimc.core.paths import eurosat_root, pastis_root
from pimc.data.download import md5sum
from pimc.data.eurosat import EuroSAT
from pimc.data.pastis import PASTIS


def synthesize(cfg: DataConfig, progress: bool = True) -> dict[str, Any]:
    """Write the embedded synthetic PASTIS and EuroSAT under ``cfg.root`` (replacing old ones)."""
    from pimc.data.synthetic import SyntheticSpec, write_synthetic

    root = Path(cfg.root)
    # Start clean: a smaller dataset must not inherit patches from a bigger earlier run.
    for folder in (pastis_root(root), eurosat_root(root)):
        shutil.rmtree(folder, ignore_errors=True)
    spec = SyntheticSpec(seed=cfg.seed, **vars(cfg.synthetic))
    return write_synthetic(root, spec, progress=progress)


def download_eurosat(cfg: DataConfig) -> Path:
    """Download (resuming) and extract real EuroSAT-MS; returns its root. The zip is deleted
    once its extraction is complete unless ``data.keep_archives``."""
    root = eurosat_root(cfg.root)
    EuroSAT(
        root,
        download=True,
        url=cfg.eurosat.url,
        md5=cfg.eurosat.md5 or EuroSAT.md5,
        max_extract_gb=cfg.eurosat.max_extract_gb,
    )
    _drop_archive(cfg, root / EuroSAT.filename, root)
    return root


def download_pastis(cfg: DataConfig) -> Path:
    """Download (resuming) and extract real PASTIS; returns its root. The 29 GB zip is deleted
    once its extraction is complete unless ``data.keep_archives``."""
    root = pastis_root(cfg.root)
    PASTIS(
        root,
        folds=PASTIS.all_folds,
        download=True,
        url=cfg.pastis.url,
        md5=cfg.pastis.md5 or PASTIS.md5,
        max_extract_gb=cfg.pastis.max_extract_gb,
    )
    _drop_archive(cfg, root.parent / PASTIS.filename, root.parent)
    return root


def _drop_archive(cfg: DataConfig, archive: Path, extracted_into: Path) -> None:
    """The archive sits inside the DVC output ``data.root``: kept, DVC would cache it too."""
    marker = extracted_into / f".extracted-{archive.name}"
    if not cfg.keep_archives and archive.is_file() and marker.is_file():
        archive.unlink()
        print(f"data: deleted {archive} (extracted, marker {marker.name}; keep_archives: false)")


#: GB on disk of each real dataset: (archive, extracted). The DVC cache holds a copy of the
#: extraction unless cache.type allows links (`dvc config cache.type hardlink,symlink`).
DISK_GB = {"EuroSAT": (2.1, 2.9), "PASTIS": (29.0, 40.0)}


def dvc_links_cache(data_root: str | Path, dvc_dir: str | Path = ".dvc") -> bool:
    """Whether DVC caches outputs under ``data_root`` by hard or symbolic links (no second
    copy): its ``cache.type`` allows one, and the cache is on the same filesystem."""
    from dvc.config import Config

    dvc_dir = Path(dvc_dir)
    if not dvc_dir.is_dir():
        return False
    cache = Config(dvc_dir=str(dvc_dir), validate=False)["cache"]
    types = cache.get("type", ["reflink", "copy"])  # a list, or "a,b" in an unvalidated file
    types = {t.strip() for t in (types.split(",") if isinstance(types, str) else types)}
    if not types & {"hardlink", "symlink"}:
        return False  # reflink is a copy on ext4 (no reflinks): count it as one
    cache_dir = Path(cache.get("dir", dvc_dir / "cache"))

    def device(path: Path) -> int:
        return next(p for p in (path, *path.resolve().parents) if p.exists()).stat().st_dev

    return "symlink" in types or device(cache_dir) == device(Path(data_root))


def disk_plan(cfg: DataConfig, dvc_dir: str | Path = ".dvc") -> dict[str, float]:
    """GB the real download needs at its peak for the datasets not extracted yet, and GB free
    there: archive + extraction while extracting; then, unless DVC links its cache
    (:func:`dvc_links_cache`), the extraction + DVC's cache copy of it."""
    root = Path(cfg.root)
    todo = [
        name for name, done in (("EuroSAT", eurosat_root(root) / EuroSAT.base_dir),
                                ("PASTIS", pastis_root(root) / "metadata.geojson"))
        if not done.exists()
    ]  # fmt: skip
    archives = sum(DISK_GB[n][0] for n in todo)
    extracted = sum(DISK_GB[n][1] for n in todo)
    copy = 0.0 if dvc_links_cache(root, dvc_dir) else extracted
    # Deleting the archive after extraction frees it before DVC caches the extraction.
    after = copy + (archives if cfg.keep_archives else 0.0)
    peak = extracted + max(archives, after)
    where = next(p for p in (root, *root.resolve().parents) if p.exists())
    return {
        "needed_gb": round(peak, 1),
        "free_gb": round(shutil.disk_usage(where).free / 1e9, 1),
        "dvc_links": copy == 0.0,
    }


def check_disk(cfg: DataConfig, dvc_dir: str | Path = ".dvc") -> dict[str, float]:
    """Print :func:`disk_plan`; refuse to start a download that cannot fit.

    Raises:
        InputError: less free space than the plan needs.
    """
    from pimc.core.errors import InputError

    plan = disk_plan(cfg, dvc_dir)
    cache = "DVC links its cache" if plan["dvc_links"] else "then DVC's cache copy"
    print(
        f"data: the real datasets need ~{plan['needed_gb']} GB at the peak in {cfg.root} "
        f"(archives + extraction; {cache}); {plan['free_gb']} GB free"
    )
    if plan["needed_gb"] > plan["free_gb"]:
        raise InputError(
            f"{cfg.root}: {plan['free_gb']} GB free but the download needs ~{plan['needed_gb']} "
            "GB (PASTIS.zip 29 GB + ~40 GB extracted, plus DVC's cache copy of the extraction "
            "when its cache cannot link). Free space, put data.root on a larger disk, or keep "
            "DVC's cache on the same filesystem so it hard-links (.dvc/config cache.type)."
        )
    return plan


def summarize(cfg: DataConfig) -> dict[str, Any]:
    """Counts and checksums of both datasets, read back through the public readers.

    Reading through :class:`PASTIS` and :class:`EuroSAT` is the check that what the stage
    produced is what every later stage will see.
    """
    proot, eroot = pastis_root(cfg.root), eurosat_root(cfg.root)
    pastis = PASTIS(proot, folds=PASTIS.all_folds)
    lengths = np.array([len(d) for d in pastis.metadata["dates"]])
    stats: dict[str, Any] = {
        "pastis": {
            "patches": len(pastis),
            "patches_per_fold": {
                int(k): int(v) for k, v in Counter(pastis.metadata["fold"]).items()
            },
            "dates_min": int(lengths.min()),
            "dates_max": int(lengths.max()),
            "md5": {
                name: md5sum(proot / name) for name in ("metadata.geojson", "NORM_S2_patch.json")
            },
        },
        "eurosat": {"md5": {}},
    }
    for split in EuroSAT.split_filenames:
        ds = EuroSAT(eroot, split=split)
        stats["eurosat"][f"{split}_tiles"] = len(ds)
        stats["eurosat"]["md5"][EuroSAT.split_filenames[split]] = md5sum(
            eroot / EuroSAT.split_filenames[split]
        )
    archive = eroot / EuroSAT.filename  # deleted after extraction unless keep_archives:
    stats["eurosat"]["md5"][EuroSAT.filename] = (  # then the md5 it was verified against
        md5sum(archive) if archive.is_file() else (cfg.eurosat.md5 or EuroSAT.md5)
    )
    return stats


def count_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """The numeric part of :func:`summarize`, flattened for MLflow and ``dvc metrics``."""
    return {
        "pastis_patches": stats["pastis"]["patches"],
        "pastis_dates_min": stats["pastis"]["dates_min"],
        "pastis_dates_max": stats["pastis"]["dates_max"],
        **{f"eurosat_{s}_tiles": stats["eurosat"][f"{s}_tiles"] for s in EuroSAT.split_filenames},
    }


#: Card entries that go to ``dvc metrics`` (the full card goes to MLflow as difficulty.json).
CARD_METRICS = (
    "nn1_macro_f1",
    "nn1_accuracy",
    "centroid_macro_f1",
    "centroid_accuracy",
    "chance_macro_f1",
    "cloud_share",
    "eurosat_nn1_accuracy",
    "eurosat_centroid_accuracy",
)


def difficulty(cfg: DataConfig) -> dict[str, float]:
    """The difficulty card of the data just produced: PASTIS's
    (:func:`pimc.data.difficulty.difficulty_card`: learning-free 1-NN / nearest-centroid
    scores on raw NDVI, cloud share, per-class counts, independent parcels per fold) and
    EuroSAT's ``eurosat_*`` keys (:func:`pimc.data.difficulty_eurosat.eurosat_card`: the same
    on tile spectral statistics)."""
    from pimc.data.difficulty import difficulty_card
    from pimc.data.difficulty_eurosat import eurosat_card

    card = difficulty_card(pastis_root(cfg.root), seed=cfg.seed)
    return {**card, **eurosat_card(eurosat_root(cfg.root), seed=cfg.seed)}


def card_metrics(card: dict[str, float]) -> dict[str, float]:
    """The headline entries of a difficulty card, prefixed ``difficulty_``."""
    keep = [k for k in card if k in CARD_METRICS or k.startswith("parcels_fold")]
    return {f"difficulty_{k}": float(card[k]) for k in keep}
