"""Difficulty card of a EuroSAT-MS dataset: how far do tile statistics go, learning-free?

The PASTIS card (:mod:`pimc.data.difficulty`) asks whether raw NDVI series name a crop; this
one asks whether a tile's spectral statistics name its land cover. Features per tile: for each
of the 13 bands, the mean and the standard deviation of log(1 + value) over the 64 x 64 pixels
(26 numbers: the mean spectrum and a crude texture), standardised with the training tiles'
mean and sd. Training tiles then predict test tiles by 1-NN and by nearest centroid (the
official train/test split files, read through :class:`pimc.data.EuroSAT`).

A 1-NN near 1 means the spectra alone solve the benchmark and a CNN has nothing to learn; the
embedded generator's earlier version scored 0.98 here.

Keys (numbers, prefixed ``eurosat_``): ``nn1_accuracy``, ``nn1_macro_f1``,
``centroid_accuracy``, ``centroid_macro_f1``, ``majority_accuracy``, ``tiles_train`` and
``tiles_test`` (the tiles used: at most ``tiles_per_split`` per split, a seeded random sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pimc.core.errors import ConfigError
from pimc.data.difficulty import nearest_centroid, nearest_neighbour, scores
from pimc.data.eurosat import EuroSAT

__all__ = ["eurosat_card", "tile_features"]


def tile_features(tile: np.ndarray) -> np.ndarray:
    """Per-band mean and sd of log(1 + value): float64 (2 C,) from a (C, H, W) tile."""
    logged = np.log1p(np.maximum(tile.astype(np.float64), 0.0)).reshape(len(tile), -1)
    return np.concatenate([logged.mean(axis=1), logged.std(axis=1)])


def _split(root: Path, split: str, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ds = EuroSAT(root, split=split)
    rng = np.random.default_rng([seed, list(EuroSAT.split_filenames).index(split)])
    keep = np.sort(rng.permutation(len(ds))[:limit])
    x = np.stack([tile_features(ds.read_tile(ds.files[i])) for i in keep])
    return x, np.asarray(ds.labels)[keep]


def eurosat_card(root: str | Path, tiles_per_split: int = 5000, seed: int = 0) -> dict[str, float]:
    """Learning-free difficulty numbers of the EuroSAT-MS at ``root`` (module docstring).

    Args:
        root: folder holding the (extracted) zip and the split files.
        tiles_per_split: most tiles read per split (real EuroSAT: 16,200 train, 5,400 test).
        seed: sampling seed.

    Raises:
        ConfigError: ``tiles_per_split`` < 1.
        DatasetNotFoundError, DatasetCorruptError: from :class:`pimc.data.EuroSAT`.
    """
    if tiles_per_split < 1:
        raise ConfigError(f"eurosat_card: tiles_per_split={tiles_per_split} must be >= 1")
    x_train, y_train = _split(Path(root), "train", tiles_per_split, seed)
    x_test, y_test = _split(Path(root), "test", tiles_per_split, seed)
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    card = {"tiles_train": float(len(y_train)), "tiles_test": float(len(y_test))}
    for name, pred in (
        ("nn1", nearest_neighbour(x_train, y_train, x_test)),
        ("centroid", nearest_centroid(x_train, y_train, x_test)),
    ):
        card[f"{name}_macro_f1"], card[f"{name}_accuracy"] = scores(pred, y_test)
    card["majority_accuracy"] = float(np.mean(y_test == np.bincount(y_train).argmax()))
    return {f"eurosat_{k}": float(v) for k, v in card.items()}
