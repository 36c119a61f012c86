"""Difficulty card of a PASTIS-format dataset: how hard is pixel classification, learning-free?

:func:`difficulty_card` reads only the files on disk, through :class:`pimc.data.PASTIS` (its
metadata, fold filter and file checks) and memory-mapped ``.npy`` reads of the sampled pixels,
so it works on real PASTIS (2,433 patches) as well as on the embedded synthetic one. It tells
whether a benchmark is as hard as real data: a learning-free 1-nearest-neighbour on raw NDVI
that scores near 1 means the data prove nothing, while a nearest-centroid near chance would
mean the classes are no longer separable at all.

Procedure:

1. From every patch of ``train_folds`` and ``test_folds``, sample up to ``pixels_per_patch``
   labelled pixels uniformly at random (classes 1-18: background 0 and void 19 are left out),
   with one random stream per patch (``seed``, patch id), so a card does not depend on the
   order patches are read in.
2. Raw NDVI, (B08 - B04) / (B08 + B04) (0 where both are 0), on the patch's own dates,
   linearly interpolated onto a 10-day grid from 2018-09-01 to 2019-11-30 (46 dates,
   nearest value repeated outside the patch's first/last date). No cloud removal and no
   smoothing: that is what "raw" means.
3. Train-fold pixels predict test-fold pixels by 1-NN (Euclidean distance on the 46 grid
   values) and by nearest centroid (per-class mean series). Macro-F1 and overall accuracy
   follow :mod:`pimc.metrics` (classes that appear neither as truth nor as prediction are left
   out; a test class absent from training scores 0).

Keys of the returned dict (all numbers, suitable as DVC/MLflow metrics):

* ``nn1_macro_f1``, ``nn1_accuracy``, ``centroid_macro_f1``, ``centroid_accuracy``;
  ``majority_accuracy`` (predicting the most frequent training class);
  ``chance_macro_f1``: expected macro-F1 of guessing labels at random with the training class
  frequencies (class k: F1 = 2 q p / (q + p), q its test share, p its training share).
* ``pixels_train``, ``pixels_test``; ``n_classes_train``, ``n_classes_test``,
  ``n_classes_shared``; ``count_train_<class>`` and ``count_test_<class>`` for the 18 crop
  classes, ``<class>`` being the PASTIS name in snake case (e.g. ``count_train_soft_winter_wheat``,
  ``count_test_fruits_vegetables_flowers``).
* ``cloud_share``: share of the sampled (pixel, date) observations, all folds used, that a
  simple on-disk test flags as cloudy; split into ``cloud_share_bright`` (B02 > 0.15: cloud or
  thick haze; clear vegetation has B02 ~0.02-0.05 and even bright soil stays below ~0.13) and
  ``cloud_share_dark`` (B08 < 0.12 and B11 < 0.10, not bright: cloud shadow; clear fields are
  brighter in NIR or SWIR). Thin haze, cloud edges and faint shadows escape both tests, so this
  is a lower bound of the true share.
* ``parcels_fold<k>`` for each fold used, ``parcels_train``, ``parcels_test``: distinct ids of
  ``ParcelIDs_<ID>.npy`` among the labelled pixels of the patches (all of them, not only the
  sampled ones): how many independent fields there are to learn from and to test on.
* ``patches_train``, ``patches_test``, ``dates_mean`` (mean T per patch).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pimc.core.config import PrepareConfig
from pimc.core.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError, InputError
from pimc.data.pastis import PASTIS
from pimc.metrics import confusion_matrix, macro_f1, overall_accuracy
from pimc.transforms.series import date_grid
from pimc.transforms.timegrid import resample_to_grid

__all__ = [
    "chance_macro_f1",
    "cloud_flags",
    "difficulty_card",
    "nearest_centroid",
    "nearest_neighbour",
    "ndvi",
    "scores",
]

#: The 10-day grid raw NDVI is interpolated onto (46 dates over the PASTIS season).


@functools.cache
def _grid() -> np.ndarray:
    # The card's fixed grid: the pipeline's default 10-day grid, whatever prepare.* says, so
    # cards stay comparable across experiments.
    return date_grid(PrepareConfig())
BLUE_CLOUD = 0.15  # B02 reflectance above this: cloud or thick haze
DARK_NIR, DARK_SWIR = 0.12, 0.10  # B08 and B11 both below these: cloud shadow
_B02, _B04, _B08, _B11 = (PASTIS.band_names.index(b) for b in ("B02", "B04", "B08", "B11"))
_SCALE = 1e4  # stored reflectance x1e4
N_CLASSES = len(PASTIS.classes)  # 20 labels, 0..19
CROP_CLASSES = tuple(range(1, 19))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


CLASS_SLUGS = {k: _slug(PASTIS.classes[k]) for k in CROP_CLASSES}


def ndvi(s2: np.ndarray) -> np.ndarray:
    """Raw NDVI of PASTIS-ordered reflectance ``(..., 10, ...)`` with bands on axis 1.

    Args:
        s2: (T, 10, N) (or (T, 10, H, W)) reflectance x1e4, any numeric dtype.

    Returns:
        float32 array without the band axis; 0 where NIR + red is 0.
    """
    nir = s2[:, _B08].astype(np.float32)
    red = s2[:, _B04].astype(np.float32)
    den = nir + red
    return np.where(den == 0, 0.0, (nir - red) / np.where(den == 0, 1.0, den)).astype(np.float32)


def cloud_flags(s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The card's on-disk cloud test: (bright, dark) boolean masks without the band axis.

    bright: B02 > 0.15 (cloud, thick haze); dark: B08 < 0.12 and B11 < 0.10 and not bright
    (cloud shadow). See the module docstring for why these thresholds.
    """
    bright = s2[:, _B02] > BLUE_CLOUD * _SCALE
    dark = (s2[:, _B08] < DARK_NIR * _SCALE) & (s2[:, _B11] < DARK_SWIR * _SCALE) & ~bright
    return bright, dark


def nearest_neighbour(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, chunk: int = 2048
) -> np.ndarray:
    """1-NN labels of ``test_x`` (Euclidean; ties go to the first training sample).

    Distances are computed in chunks of test rows, so memory stays ``chunk x len(train_x)``.
    """
    if len(train_x) == 0:
        raise InputError("nearest_neighbour: no training samples")
    train = train_x.astype(np.float64)
    norms = (train**2).sum(axis=1)
    out = np.empty(len(test_x), dtype=train_y.dtype)
    for lo in range(0, len(test_x), chunk):
        block = test_x[lo : lo + chunk].astype(np.float64)
        # |a - b|^2 without the |a|^2 term, which does not change the argmin over b.
        dist = norms[None, :] - 2.0 * block @ train.T
        out[lo : lo + chunk] = train_y[dist.argmin(axis=1)]
    return out


def nearest_centroid(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Label of the closest per-class mean of ``train_x`` (Euclidean) for each row of test_x."""
    classes = np.unique(train_y)
    if not len(classes):
        raise InputError("nearest_centroid: no training samples")
    centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in classes])
    return classes[nearest_neighbour(centroids, np.arange(len(classes)), test_x)]


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(macro-F1, overall accuracy) as :mod:`pimc.metrics` computes them."""
    cm = confusion_matrix(torch.as_tensor(pred), torch.as_tensor(truth), N_CLASSES)
    return macro_f1(cm), overall_accuracy(cm)


def chance_macro_f1(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Expected macro-F1 of random labels drawn with the training class frequencies.

    Per class, with test share q and guessing rate p: TP = q p, FP = (1 - q) p, FN = q (1 - p)
    (per sample), so F1 = 2 q p / (q + p); averaged over the classes of either set, as
    :func:`pimc.metrics.macro_f1` would.
    """
    p = np.bincount(train_y, minlength=N_CLASSES) / max(len(train_y), 1)
    q = np.bincount(test_y, minlength=N_CLASSES) / max(len(test_y), 1)
    present = (p + q) > 0
    return float(np.mean(2 * p[present] * q[present] / (p[present] + q[present])))


def _patch_pixels(
    ds: PASTIS, pid: int, dates: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int, int, set[int]]:
    """Grid NDVI (n, G) and labels of the sampled pixels, their (bright, dark) cloud counts and
    the parcel ids of all labelled pixels of one patch."""
    semantic = np.load(ds.target_path(pid), mmap_mode="r")[0]
    labelled = (semantic != PASTIS.background_index) & (semantic != PASTIS.void_index)
    parcel_path = ds.root / "ANNOTATIONS" / f"ParcelIDs_{pid}.npy"
    if not parcel_path.is_file():
        raise DatasetNotFoundError(
            f"{parcel_path} is missing; the difficulty card counts parcels from ParcelIDs files"
        )
    parcels = np.load(parcel_path, mmap_mode="r")
    ids = set(np.unique(np.asarray(parcels)[labelled]).tolist()) - {0}
    rows, cols = np.nonzero(labelled)
    rng = np.random.default_rng([seed, pid])
    pick = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
    rows, cols = rows[pick], cols[pick]
    s2 = np.load(ds.s2_path(pid), mmap_mode="r")
    if s2.ndim != 4 or s2.shape[0] != len(dates):
        raise DatasetCorruptError(
            f"{ds.s2_path(pid)}: shape {s2.shape} does not match its {len(dates)} dates"
        )
    # Gather pixel by pixel along the last two axes: reads only the sampled pixels of a memmap.
    pixels = np.asarray(s2[:, :, rows, cols])  # (T, 10, n)
    bright, dark = cloud_flags(pixels)
    series = torch.from_numpy(np.ascontiguousarray(ndvi(pixels).T))  # (n, T)
    grid = _grid()
    grid = resample_to_grid(series, dates, grid).numpy() if len(rows) else np.empty((0, len(grid)))
    labels = np.asarray(semantic)[rows, cols].astype(np.int64)
    return grid.astype(np.float32), labels, int(bright.sum()), int(dark.sum()), ids


def difficulty_card(
    root: str | Path,
    train_folds: Sequence[int] = (1, 2, 3),
    test_folds: Sequence[int] = (5,),
    pixels_per_patch: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Learning-free difficulty numbers of a PASTIS-format dataset (see the module docstring).

    Args:
        root: folder holding ``metadata.geojson`` (real or synthetic PASTIS).
        train_folds: folds whose pixels are the 1-NN / centroid references.
        test_folds: folds whose pixels are classified; must not overlap ``train_folds``.
        pixels_per_patch: labelled pixels sampled per patch (fewer if a patch has fewer).
        seed: sampling seed.

    Returns:
        A flat dict of numbers; keys listed in the module docstring.

    Raises:
        ConfigError: overlapping or empty folds, or ``pixels_per_patch`` < 1.
        InputError: no labelled pixel in train or test.
        DatasetCorruptError: an ``S2_*.npy`` does not match its dates.
        DatasetNotFoundError: a file is missing (from :class:`PASTIS` or ParcelIDs).
    """
    train_folds, test_folds = tuple(train_folds), tuple(test_folds)
    if not train_folds or not test_folds or set(train_folds) & set(test_folds):
        raise ConfigError(
            f"difficulty_card: train_folds {train_folds} and test_folds {test_folds} must be "
            "non-empty and disjoint"
        )
    if pixels_per_patch < 1:
        raise ConfigError(f"difficulty_card: pixels_per_patch={pixels_per_patch} must be >= 1")
    folds = tuple(sorted(set(train_folds) | set(test_folds)))
    ds = PASTIS(root, folds=folds)
    xs, ys, parcels, card = _sample_folds(ds, train_folds, pixels_per_patch, seed)
    x_train, y_train = np.concatenate(xs["train"]), np.concatenate(ys["train"])
    x_test, y_test = np.concatenate(xs["test"]), np.concatenate(ys["test"])
    if not len(y_train) or not len(y_test):
        raise InputError(
            f"difficulty_card: no labelled pixel in the train folds {train_folds} "
            f"({len(y_train)}) or the test folds {test_folds} ({len(y_test)})"
        )
    card = {**_baseline_scores(x_train, y_train, x_test, y_test), **card}
    card["dates_mean"] = float(np.mean([len(d) for d in ds.metadata["dates"]]))
    for fold in folds:
        card[f"parcels_fold{fold}"] = len(parcels[fold])
    card["parcels_train"] = sum(len(parcels[f]) for f in train_folds)
    card["parcels_test"] = sum(len(parcels[f]) for f in test_folds)
    for split, y in (("train", y_train), ("test", y_test)):
        counts = np.bincount(y, minlength=N_CLASSES)
        for k in CROP_CLASSES:
            card[f"count_{split}_{CLASS_SLUGS[k]}"] = int(counts[k])
    return card


def _sample_folds(
    ds: PASTIS, train_folds: tuple[int, ...], pixels_per_patch: int, seed: int
) -> tuple[dict, dict, dict[int, set[int]], dict[str, float]]:
    """Sample every patch of ``ds``; returns (xs, ys, parcel ids per fold, sky and patch counts).

    ``xs`` and ``ys`` map ``"train"`` / ``"test"`` to per-patch arrays of :func:`_patch_pixels`.
    """
    xs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ys: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    parcels: dict[int, set[int]] = {f: set() for f in ds.folds}
    bright = dark = observations = 0
    patches = {"train": 0, "test": 0}
    for row in ds.metadata.itertuples():
        split = "train" if row.fold in train_folds else "test"
        x, y, n_bright, n_dark, ids = _patch_pixels(
            ds, int(row.id), row.dates, pixels_per_patch, seed
        )
        xs[split].append(x)
        ys[split].append(y)
        parcels[int(row.fold)] |= ids
        bright, dark = bright + n_bright, dark + n_dark
        observations += len(y) * len(row.dates)
        patches[split] += 1
    counts: dict[str, float] = {
        "cloud_share": (bright + dark) / max(observations, 1),
        "cloud_share_bright": bright / max(observations, 1),
        "cloud_share_dark": dark / max(observations, 1),
        "patches_train": patches["train"],
        "patches_test": patches["test"],
    }
    return xs, ys, parcels, counts


def _baseline_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    """1-NN, nearest-centroid, majority and chance scores, and pixel and class counts."""
    nn1_f1, nn1_acc = scores(nearest_neighbour(x_train, y_train, x_test), y_test)
    cen_f1, cen_acc = scores(nearest_centroid(x_train, y_train, x_test), y_test)
    majority = np.bincount(y_train, minlength=N_CLASSES).argmax()
    return {
        "nn1_macro_f1": nn1_f1,
        "nn1_accuracy": nn1_acc,
        "centroid_macro_f1": cen_f1,
        "centroid_accuracy": cen_acc,
        "majority_accuracy": float((y_test == majority).mean()),
        "chance_macro_f1": chance_macro_f1(y_train, y_test),
        "pixels_train": len(y_train),
        "pixels_test": len(y_test),
        "n_classes_train": len(np.unique(y_train)),
        "n_classes_test": len(np.unique(y_test)),
        "n_classes_shared": len(np.intersect1d(y_train, y_test)),
    }
