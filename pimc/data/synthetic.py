"""Embedded synthetic PASTIS and EuroSAT-MS, written in the real datasets' on-disk layouts.

The same readers (:class:`pimc.data.PASTIS`, :class:`pimc.data.EuroSAT`) serve real and
synthetic data, so the whole pipeline runs in minutes on a laptop without the 29 GB + 2 GB
downloads. The data are small but learnable: see :mod:`pimc.data.synthetic_pastis` and
:mod:`pimc.data.synthetic_eurosat` for the structure they carry.

Everything is seeded per patch / per tile, so a run is byte-identical to any other run with
the same :class:`SyntheticSpec` (on the same numpy, GDAL and zlib). Every file is written to a
temporary file in its folder and moved into place, so readers never see half a file.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from pimc.core.config import SyntheticConfig
from pimc.core.errors import ConfigError
from pimc.core.io import atomic_path, write_text
from pimc.core.paths import eurosat_root, pastis_root
from pimc.data import synthetic_crops, synthetic_eurosat, synthetic_pastis, synthetic_sky
from pimc.data.synthetic_files import PIXEL_M, ZIP_LEVEL, geotiff_bytes, zip_add

__all__ = ["SyntheticSpec", "write_eurosat", "write_pastis", "write_synthetic"]

FOLDS = (1, 2, 3, 4, 5)
FIRST_PATCH_ID = 10000
TILES = ("t30uxv", "t31tfj", "t31tfm", "t32ulu")
# Upper-left corner (Lambert-93, metres) of each tile's grid of patches.
_TILE_ORIGINS = {
    "t30uxv": (605_000, 6_880_000),
    "t31tfj": (650_000, 6_700_000),
    "t31tfm": (680_000, 6_800_000),
    "t32ulu": (630_000, 6_640_000),
}
_GRID_COLUMNS = 8
EUROSAT_ZIP = "EuroSATallBands.zip"
EUROSAT_BASE_DIR = "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"
SPLIT_FILES = {"train": "eurosat-train.txt", "val": "eurosat-val.txt", "test": "eurosat-test.txt"}
SPLIT_SHARES = (0.6, 0.2)  # train, val; test takes the rest
# Marks files this module wrote, so it never overwrites a real dataset put in the same place.
MARKER = "pimc_synthetic"
# Independent random streams, so e.g. adding EuroSAT tiles never changes the PASTIS patches.
_PASTIS_STREAM, _EUROSAT_STREAM, _SPLIT_STREAM = 0, 1, 2


_DEFAULTS = SyntheticConfig()


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of the synthetic datasets; defaults run the pipeline in minutes on 2 cores.

    Attributes:
        seed: master seed (>= 0).
        pastis_patches: number of PASTIS patches, spread over folds 1-5 round-robin.
        patch_size: H = W of a patch in pixels (real PASTIS: 128).
        min_dates: fewest acquisition dates of a patch.
        max_dates: most acquisition dates of a patch (at most one per day of the season).
        cloud_prob: share of a patch's dates that are cloudy or hazy (in runs, partly covered;
            see :mod:`pimc.data.synthetic_pastis`). Real Sentinel-2 series over France: ~0.5-0.7.
        eurosat_per_class: EuroSAT tiles per class (>= 5, so that every split gets some).

    Raises:
        ConfigError: a value is out of range.
    """

    seed: int = 0
    # Defaults are the data.synthetic section's, stated once in pimc.core.config.
    pastis_patches: int = _DEFAULTS.pastis_patches
    patch_size: int = _DEFAULTS.patch_size
    min_dates: int = _DEFAULTS.min_dates
    max_dates: int = _DEFAULTS.max_dates
    cloud_prob: float = _DEFAULTS.cloud_prob
    eurosat_per_class: int = _DEFAULTS.eurosat_per_class

    def __post_init__(self) -> None:
        checks = (
            (self.seed >= 0, "seed", "must be >= 0"),
            (self.pastis_patches >= 1, "pastis_patches", "must be >= 1 (>= 5 fills every fold)"),
            (self.patch_size >= 8, "patch_size", "must be >= 8"),
            (
                1 <= self.min_dates <= self.max_dates <= synthetic_crops.SEASON_DAYS,
                "min_dates/max_dates",
                f"need 1 <= min_dates <= max_dates <= {synthetic_crops.SEASON_DAYS} "
                "(one date per day of Sept 2018 - Nov 2019 at most)",
            ),
            (0.0 <= self.cloud_prob <= 1.0, "cloud_prob", "must be in [0, 1]"),
            (self.eurosat_per_class >= 5, "eurosat_per_class", "must be >= 5"),
        )
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(
                    f"SyntheticSpec.{name}={getattr(self, name.split('/')[0])!r}: {rule}"
                )


# -- PASTIS ------------------------------------------------------------------------------------


def write_pastis(root: str | Path, spec: SyntheticSpec, progress: bool = True) -> dict[str, Any]:
    """Write synthetic PASTIS into ``root`` (the folder that will hold ``metadata.geojson``).

    Layout: ``metadata.geojson``, ``NORM_S2_patch.json``, ``DATA_S2/S2_<ID>.npy`` (int16
    (T, 10, H, W)), ``ANNOTATIONS/TARGET_<ID>.npy`` (uint8 (3, H, W)) and
    ``ANNOTATIONS/ParcelIDs_<ID>.npy`` (int32 (H, W)). An earlier synthetic
    ``metadata.geojson`` is removed first and the new one written last, so an interrupted run
    leaves no dataset (readers say so) rather than old metadata over new patches.

    Args:
        root: output folder; created if missing.
        spec: sizes and seed.
        progress: show a progress bar.

    Returns:
        Counts: ``patches``, ``dates`` (sum of T), ``parcels``, ``patches_per_fold``, and the
        true sky: ``cloudy_date_share`` (share of dates that are cloudy or hazy; about
        ``spec.cloud_prob``) and ``cloudy_pixel_share`` (share of (pixel, date) observations
        under cloud, cloud shadow or haze; lower, as clouds cover parts of a patch).

    Raises:
        ConfigError: ``root`` holds a PASTIS that this module did not write.
    """
    root = Path(root)
    old_ids = _previous_pastis_ids(root)
    (root / "metadata.geojson").unlink(missing_ok=True)
    stats = _BandStats(len(synthetic_pastis.BANDS))
    features: list[dict[str, Any]] = []
    totals = dict.fromkeys(("dates", "parcels", "cloudy_dates", "cloudy_pixels", "obs"), 0)
    for i in tqdm(
        range(spec.pastis_patches), desc="synthetic PASTIS", unit="patch", disable=not progress
    ):
        pid, fold, tile = FIRST_PATCH_ID + i, FOLDS[i % len(FOLDS)], TILES[i % len(TILES)]
        patch = _write_patch(root, spec, i, pid, tile)
        stats.add(patch.s2, fold)
        features.append(_feature(pid, fold, tile, i // len(TILES), spec.patch_size, patch))
        _count_patch(totals, patch)
    write_text(root / "NORM_S2_patch.json", json.dumps(stats.norm(), indent=1) + "\n")
    metadata = {
        "type": "FeatureCollection",
        "name": "metadata",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
        MARKER: {"generator": __name__, "spec": asdict(spec)},
        "features": features,
    }
    write_text(root / "metadata.geojson", json.dumps(metadata) + "\n")
    _remove_patches(root, old_ids - {FIRST_PATCH_ID + i for i in range(spec.pastis_patches)})
    per_fold = {f: len(range(f - 1, spec.pastis_patches, len(FOLDS))) for f in FOLDS}
    return {
        "patches": spec.pastis_patches,
        "dates": totals["dates"],
        "parcels": totals["parcels"],
        "patches_per_fold": per_fold,
        "cloudy_date_share": totals["cloudy_dates"] / max(totals["dates"], 1),
        "cloudy_pixel_share": totals["cloudy_pixels"] / max(totals["obs"], 1),
    }


def _write_patch(
    root: Path, spec: SyntheticSpec, i: int, pid: int, tile: str
) -> synthetic_pastis.Patch:
    """Generate patch number ``i`` from its own random stream and save its three arrays."""
    rng = np.random.default_rng([spec.seed, _PASTIS_STREAM, i])
    n_dates = int(rng.integers(spec.min_dates, spec.max_dates + 1))
    # Parcel ids are unique over the dataset: the patch id times 1000 plus a local index.
    patch = synthetic_pastis.generate_patch(
        rng,
        spec.patch_size,
        n_dates,
        spec.cloud_prob,
        id_offset=pid * 1000,
        orbit=TILES.index(tile),
    )
    for path, array in (
        (root / "DATA_S2" / f"S2_{pid}.npy", patch.s2),
        (root / "ANNOTATIONS" / f"TARGET_{pid}.npy", patch.target),
        (root / "ANNOTATIONS" / f"ParcelIDs_{pid}.npy", patch.parcel_ids),
    ):
        with atomic_path(path) as tmp:
            np.save(tmp, array, allow_pickle=False)
    return patch


def _count_patch(totals: dict[str, int], patch: synthetic_pastis.Patch) -> None:
    """Add a patch's dates, parcels and true sky to the running totals of :func:`write_pastis`."""
    totals["dates"] += len(patch.dates)
    totals["parcels"] += patch.n_parcel
    totals["cloudy_dates"] += int(patch.cloudy.sum())
    obscured = (patch.sky == synthetic_sky.CLOUD) | (patch.sky == synthetic_sky.SHADOW)
    totals["cloudy_pixels"] += int((obscured | (patch.sky == synthetic_sky.HAZE)).sum())
    totals["obs"] += patch.sky.size


class _BandStats:
    """Per-fold running sums of band values, for ``NORM_S2_patch.json``.

    Row 0 accumulates all patches: the fallback for folds left empty by < 5 patches.
    """

    def __init__(self, n_bands: int) -> None:
        self.n_bands = n_bands
        self.sums, self.squares = np.zeros((6, n_bands)), np.zeros((6, n_bands))
        self.counts = np.zeros(6)

    def add(self, s2: np.ndarray, fold: int) -> None:
        values = s2.reshape(s2.shape[0], self.n_bands, -1).astype(np.float64)
        for row in (0, fold):
            self.sums[row] += values.sum(axis=(0, 2))
            self.squares[row] += np.einsum("tbp,tbp->b", values, values)
            self.counts[row] += values.shape[0] * values.shape[2]

    def norm(self) -> dict[str, dict[str, list[float]]]:
        norm = {}
        for fold in FOLDS:
            row = fold if self.counts[fold] else 0
            mean = self.sums[row] / self.counts[row]
            std = np.sqrt(np.maximum(self.squares[row] / self.counts[row] - mean**2, 0.0))
            norm[f"Fold_{fold}"] = {"mean": mean.tolist(), "std": std.tolist()}
        return norm


def _remove_patches(root: Path, ids: set[int]) -> None:
    """Delete the arrays of patches ``ids`` (those of an earlier, bigger run)."""
    for pid in sorted(ids):
        for path in (
            root / "DATA_S2" / f"S2_{pid}.npy",
            root / "ANNOTATIONS" / f"TARGET_{pid}.npy",
            root / "ANNOTATIONS" / f"ParcelIDs_{pid}.npy",
        ):
            path.unlink(missing_ok=True)


def _feature(
    pid: int, fold: int, tile: str, slot: int, size: int, patch: synthetic_pastis.Patch
) -> dict[str, Any]:
    """GeoJSON Feature of one patch: properties as in real PASTIS, footprint in Lambert-93."""
    step = size * PIXEL_M + 200  # patches on a grid with gaps, like PASTIS's sparse sampling
    ox, oy = _TILE_ORIGINS[tile]
    x0 = ox + (slot % _GRID_COLUMNS) * step
    y1 = oy - (slot // _GRID_COLUMNS) * step
    x1, y0 = x0 + size * PIXEL_M, y1 - size * PIXEL_M
    return {
        "type": "Feature",
        "id": str(pid),
        "properties": {
            "ID_PATCH": pid,
            "Fold": fold,
            "TILE": tile,
            "N_Parcel": patch.n_parcel,
            "Parcel_Cover": round(patch.parcel_cover, 4),
            "dates-S2": {str(k): d for k, d in enumerate(patch.dates)},
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
        },
    }


def _previous_pastis_ids(root: Path) -> set[int]:
    """Patch ids of a synthetic PASTIS already in ``root``; refuse to overwrite a real one."""
    path = root / "metadata.geojson"
    if not path.exists():
        return set()
    try:
        metadata = json.loads(path.read_text())
        ours = isinstance(metadata, dict) and MARKER in metadata
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ours = False
    if not ours:
        raise ConfigError(
            f"{path} exists and was not written by pimc.data.synthetic (it may be the real "
            f"PASTIS); refusing to overwrite it. Choose another root, or delete {root} first."
        )
    return {int(f["properties"]["ID_PATCH"]) for f in metadata.get("features", [])}


# -- EuroSAT -----------------------------------------------------------------------------------


def write_eurosat(root: str | Path, spec: SyntheticSpec, progress: bool = True) -> dict[str, Any]:
    """Write synthetic EuroSAT-MS into ``root`` (the folder that will hold the zip and splits).

    Layout: ``EuroSATallBands.zip`` with members
    ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif`` (GeoTIFF,
    13 bands B01..B12 then B8A, uint16, 64x64, UTM CRS, 10 m pixels) and
    ``eurosat-{train,val,test}.txt`` listing ``<Class>_<n>.jpg`` (60/20/20 per class).
    An earlier synthetic EuroSAT's split files and extraction (``ds/`` and the reader's
    ``.extracted-*`` marker) are removed first, so readers re-extract the new tiles and an
    interrupted run leaves no split files pointing at tiles of another run.

    Args:
        root: output folder; created if missing.
        spec: sizes and seed.
        progress: show a progress bar.

    Returns:
        Counts: ``tiles``, ``classes``, and tiles per split (``train``, ``val``, ``test``).

    Raises:
        ConfigError: ``root`` holds a EuroSAT that this module did not write.
    """
    root = Path(root)
    _clear_previous_eurosat(root)
    classes = synthetic_eurosat.CLASSES
    n = spec.eurosat_per_class
    bar = tqdm(total=len(classes) * n, desc="synthetic EuroSAT", unit="tile", disable=not progress)

    def write_zip(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as archive:
            parts = EUROSAT_BASE_DIR.split("/")
            for depth in range(1, len(parts) + 1):
                zip_add(archive, "/".join(parts[:depth]) + "/", b"")
            for c, cls in enumerate(classes):
                zip_add(archive, f"{EUROSAT_BASE_DIR}/{cls}/", b"")
                for k in range(1, n + 1):
                    rng = np.random.default_rng([spec.seed, _EUROSAT_STREAM, c, k])
                    data = geotiff_bytes(rng, synthetic_eurosat.generate_tile(rng, cls))
                    zip_add(archive, f"{EUROSAT_BASE_DIR}/{cls}/{cls}_{k}.tif", data)
                    bar.update()
            archive.comment = f"{MARKER} seed={spec.seed} per_class={n}".encode()

    with bar:
        with atomic_path(root / EUROSAT_ZIP) as tmp, open(tmp, "wb") as fh:
            write_zip(fh)

    names = _split_names(spec, classes)
    for split, filename in SPLIT_FILES.items():
        write_text(root / filename, "".join(f"{name}\n" for name in names[split]))
    return {
        "tiles": len(classes) * n,
        "classes": len(classes),
        **{split: len(names[split]) for split in SPLIT_FILES},
    }


def _split_names(spec: SyntheticSpec, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """Tile names of each split, 60/20/20 per class from the class's own random stream."""
    n = spec.eurosat_per_class
    names: dict[str, list[str]] = {split: [] for split in SPLIT_FILES}
    n_train, n_val = (round(share * n) for share in SPLIT_SHARES)
    for c, cls in enumerate(classes):
        order = np.random.default_rng([spec.seed, _SPLIT_STREAM, c]).permutation(n) + 1
        for split, ks in zip(
            SPLIT_FILES,
            (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]),
            strict=True,
        ):
            names[split] += [f"{cls}_{k}.jpg" for k in sorted(ks)]
    return names


def _clear_previous_eurosat(root: Path) -> None:
    """Remove an earlier synthetic extraction; refuse when ``root`` holds a real EuroSAT."""
    archive = root / EUROSAT_ZIP
    ours = False
    if archive.exists():
        try:
            with zipfile.ZipFile(archive) as old:
                ours = old.comment.startswith(MARKER.encode())
        except (OSError, zipfile.BadZipFile):
            ours = False
    if (archive.exists() or (root / "ds").exists()) and not ours:
        raise ConfigError(
            f"{root} holds a EuroSAT ({EUROSAT_ZIP} or its extraction ds/) that was not written "
            f"by pimc.data.synthetic (it may be the real one); refusing to overwrite it. Choose "
            f"another root, or delete {root} first."
        )
    if ours:
        shutil.rmtree(root / "ds", ignore_errors=True)
        (root / f".extracted-{EUROSAT_ZIP}").unlink(missing_ok=True)
        for name in SPLIT_FILES.values():
            (root / name).unlink(missing_ok=True)


# -- both --------------------------------------------------------------------------------------


def write_synthetic(root: str | Path, spec: SyntheticSpec, progress: bool = True) -> dict:
    """Write both datasets: ``root/PASTIS`` and ``root/EuroSAT``.

    Args:
        root: data root (``data.root`` in ``params.yaml``).
        spec: sizes and seed.
        progress: show progress bars.

    Returns:
        ``{"pastis": counts, "eurosat": counts}`` (see :func:`write_pastis`, :func:`write_eurosat`).
    """
    return {
        "pastis": write_pastis(pastis_root(root), spec, progress=progress),
        "eurosat": write_eurosat(eurosat_root(root), spec, progress=progress),
    }
