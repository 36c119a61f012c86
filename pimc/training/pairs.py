"""(Recurrence plot, image patch) training pairs read from the ``prepare``/``recurrence`` outputs.

:class:`PairDataset` loads the shards of the selected folds into memory once (the embedded data
are a few MB) and serves whole batches by tensor indexing (:meth:`PairDataset.get_batch`), so
the input pipeline costs one gather per batch instead of one Python call per sample.

Two RP sources:

* materialized: items carry ``rp`` (I, S, S), read from ``<recurrence.out>/shards``;
* on the fly: items carry ``series`` (I, L) and ``valid`` (L,), and :func:`batch_rps` turns a
  batch into plots on the training device (after an optional random temporal crop).

All randomness (date choice, crops, augmentations) comes from explicit ``torch.Generator``\\ s
(:func:`pimc.training.utils.make_generator`), so a batch is a pure function of its step number: a
resumed run, or a worker process, reproduces it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pimc.core.config import PretrainConfig, RecurrenceConfig
from pimc.core.errors import ConfigError, DatasetNotFoundError
from pimc.core.io import fingerprint, is_stamped
from pimc.core.paths import MANIFEST, META, SHARDS, rp_shard_name
from pimc.training.utils import BATCH, make_generator
from pimc.transforms.recurrence import build_rps

__all__ = [
    "PairDataset",
    "augment_images",
    "batch_rps",
    "channel_dropout",
    "contrast_inputs",
    "image_stats",
    "resolve_source",
    "rp_view",
]


class PairDataset(Dataset):
    """Pairs of the selected folds of a ``prepare`` output folder.

    Args:
        prepared_dir: The ``prepare`` stage folder (``pixels.parquet``, ``shards/*.npz``).
        folds: Folds to keep.
        rp_dir: The ``recurrence`` stage folder with materialized ``shards/*.npy``; ``None``
            serves series for on-the-fly plots instead.
        recurrence_cfg: The config the plots were (or will be) built with. With ``rp_dir`` it
            is checked against the folder's fingerprint, so stale plots are never used.
        seed: Seeds the generator that :meth:`__getitem__` uses to pick random dates.
        images: Load the image patches; fine-tuning on plots or series does not need them
            (1.6 KB per pixel of RAM at K = 9, more than the series).

    Attributes:
        image: float16 ``(N, 10, K, K)``, or ``(N, R, 10, K, K)`` for ``patch_date: random``;
            ``None`` without ``images``.
        rp: float16 ``(N, I, S, S)`` (materialized) or ``None``.
        series: float32 ``(N, I, L)``; valid: bool ``(N, L)``.
        labels, parcels, patch_ids, indices: int64 ``(N,)``: class, parcel id (0: none),
            PASTIS patch, row in its shard.
        groups: int64 ``(N,)``: the parcel id, or ``-1 - row`` for a pixel outside parcels
            (a group of its own): which pixels are views of the same object.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        folds: Sequence[int],
        rp_dir: str | Path | None = None,
        recurrence_cfg: RecurrenceConfig | None = None,
        seed: int = 0,
        images: bool = True,
    ) -> None:
        prepared = Path(prepared_dir)
        if not (prepared / MANIFEST).is_file():
            raise DatasetNotFoundError(
                f"{prepared / MANIFEST} not found; run the prepare stage first"
            )
        self.meta: dict[str, Any] = json.loads((prepared / META).read_text())
        manifest = pd.read_parquet(prepared / MANIFEST)
        rows = manifest[manifest["fold"].isin(list(folds))]
        if rows.empty:
            raise ConfigError(
                f"no pairs in folds {list(folds)} of {prepared}; available folds: "
                f"{sorted(manifest['fold'].unique().tolist())}"
            )
        self.folds = tuple(folds)
        self.recurrence_cfg = recurrence_cfg
        self.materialized = rp_dir is not None
        self.generator = make_generator(seed, BATCH)
        shards = list(dict.fromkeys(rows["shard"]))
        keys = ("series", "valid", "image") if images else ("series", "valid")
        parts: dict[str, list[np.ndarray]] = {key: [] for key in keys}
        for name in shards:
            local = rows.loc[rows["shard"] == name, "index"].to_numpy()
            with np.load(prepared / SHARDS / name) as z:
                for key in parts:
                    parts[key].append(z[key][local])
            if name == shards[0]:  # a row's size is known now: check before loading the rest
                _check_memory(prepared, [p[0] for p in parts.values()], len(rows), folds)
        self.series = torch.from_numpy(np.concatenate(parts["series"]))
        self.valid = torch.from_numpy(np.concatenate(parts["valid"]))
        self.image = torch.from_numpy(np.concatenate(parts["image"])) if images else None
        # Rows are regrouped by shard above; reorder the manifest columns the same way.
        order = np.concatenate([np.flatnonzero(rows["shard"].to_numpy() == s) for s in shards])
        rows = rows.iloc[order]
        self.labels = torch.from_numpy(rows["label"].to_numpy().astype(np.int64))
        self.parcels = torch.from_numpy(rows["parcel"].to_numpy().astype(np.int64))
        self.patch_ids = torch.from_numpy(rows["patch_id"].to_numpy().astype(np.int64))
        self.indices = torch.from_numpy(rows["index"].to_numpy().astype(np.int64))
        own = -1 - torch.arange(len(self.parcels))
        self.groups = torch.where(self.parcels > 0, self.parcels, own)
        self.rp: Tensor | None = None
        if rp_dir is not None:
            self.rp = self._load_rps(Path(rp_dir), shards, rows, recurrence_cfg)

    def _load_rps(
        self,
        rp_dir: Path,
        shards: list[str],
        rows: pd.DataFrame,
        cfg: RecurrenceConfig | None,
    ) -> Tensor:
        """The materialized plots of ``rows`` (in their order), float16 ``(N, I, S, S)``."""
        if cfg is not None:
            if not is_stamped(rp_dir, fingerprint(asdict(cfg), self.meta)):
                raise ConfigError(
                    f"{rp_dir} was not built from these prepared pairs with this recurrence "
                    "config; rerun the recurrence stage (or use pretrain.source: on_the_fly)"
                )
        files = [rp_dir / SHARDS / rp_shard_name(s) for s in shards]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"RP shards missing: {missing[:3]}...; run the recurrence stage with "
                "materialize: true, or set pretrain.source: on_the_fly"
            )
        shard_of = torch.from_numpy(pd.Index(shards).get_indexer(rows["shard"]).astype(np.int64))
        locals_ = [self.indices[shard_of == i].numpy() for i in range(len(shards))]
        maps = [np.load(f, mmap_mode="r") for f in files]  # mapped: read only the kept rows
        return torch.from_numpy(
            np.concatenate([m[ix] for m, ix in zip(maps, locals_, strict=True)])
        )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def rp_channels(self) -> int:
        """I, the number of index channels."""
        return int(self.series.shape[1])

    @property
    def image_channels(self) -> int:
        """The number of spectral bands of the patches."""
        return int(self.image.shape[-3])

    def get_batch(self, idx: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A batch by tensor indexing.

        Args:
            idx: int64 ``(B,)`` row numbers.
            generator: Picks one of the R dates per row for random-date patches; default is the
                dataset's own generator.

        Returns:
            ``image`` float32 ``(B, 10, K, K)`` (loaded with ``images``),
            ``label``/``parcel`` (the row's :attr:`groups`)/``patch_id``/``index`` int64 ``(B,)``
            and either ``rp`` float32 ``(B, I, S, S)`` or ``series`` float32 ``(B, I, L)`` +
            ``valid`` bool ``(B, L)``.
        """
        idx = torch.as_tensor(idx, dtype=torch.long)
        batch = {
            "label": self.labels[idx],
            "parcel": self.groups[idx],
            "patch_id": self.patch_ids[idx],
            "index": self.indices[idx],
        }
        if self.image is not None and self.image.ndim == 5:
            gen = self.generator if generator is None else generator
            dates = torch.randint(self.image.shape[1], (len(idx),), generator=gen)
            batch["image"] = self.image[idx, dates].float()
        elif self.image is not None:
            batch["image"] = self.image[idx].float()
        if self.materialized:
            batch["rp"] = self.rp[idx].float()
        else:
            batch["series"], batch["valid"] = self.series[idx], self.valid[idx]
        return batch

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One pair (``default_collate`` stacks these into a :meth:`get_batch`-like dict)."""
        batch = self.get_batch(torch.tensor([i]))
        return {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in batch.items()}

    def image_stats(self) -> tuple[Tensor, Tensor]:
        """Per-band mean and std of every patch (all R dates) of this dataset.

        Returns:
            float32 ``(10,)`` mean and std (std floored at 1e-6).
        """
        return image_stats(self.image)


def image_stats(image: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-band mean/std of patches ``(N, [R,] C, K, K)``, accumulated in float64 chunks."""
    bands = image.shape[-3]
    total = torch.zeros(bands, dtype=torch.float64)
    squares = torch.zeros(bands, dtype=torch.float64)
    for start in range(0, len(image), chunk):
        x = image[start : start + chunk].double().transpose(0, -3).reshape(bands, -1)
        total += x.sum(1)
        squares += x.square().sum(1)
    count = image.numel() // bands
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def batch_rps(
    batch: dict[str, Tensor],
    cfg: RecurrenceConfig,
    device: torch.device | str,
    crop: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The batch's recurrence plots on ``device``, float32 ``(B, I, S, S)``.

    Materialized plots are moved as they are (``crop`` cannot apply to them). Otherwise the
    series are moved and, when ``crop > 0``, each keeps a random window of
    ``L - floor(crop * L)`` dates inside its observed part before :func:`build_rps`.
    """
    if "rp" in batch:
        return batch["rp"].to(device, non_blocking=True)
    series = batch["series"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True)
    length = series.shape[-1]
    keep = length - int(crop * length)
    if crop > 0 and keep < length:
        # Offsets drawn on the CPU generator so they are identical on every device.
        room = (batch["valid"].sum(-1) - keep).clamp_min(0) + 1
        offset = (torch.rand(len(room), generator=generator) * room).long().to(device)
        window = offset[:, None] + torch.arange(keep, device=device)  # (B, keep)
        series = series.gather(-1, window[:, None, :].expand(-1, series.shape[1], -1))
        valid = valid.gather(-1, window)
    return build_rps(series, valid, cfg, dtype=torch.float32)


def augment_images(image: Tensor, generator: torch.Generator) -> Tensor:
    """Random dihedral transform per patch (rotation by k·90° and a horizontal flip).

    Ground patches have no preferred orientation, so the 8 symmetries are label-preserving.

    Args:
        image: ``(B, C, K, K)`` on any device.
        generator: CPU generator drawing the transforms.
    """
    turns = torch.randint(4, (len(image),), generator=generator).to(image.device)
    flips = torch.randint(2, (len(image),), generator=generator).bool().to(image.device)
    out = image.clone()
    for k in (1, 2, 3):
        sel = turns == k
        out[sel] = torch.rot90(image[sel], k, dims=(-2, -1))
    out[flips] = out[flips].flip(-1)
    return out


def channel_dropout(rp: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Zero each RP channel with probability ``p``, keeping at least one channel per sample.

    Args:
        rp: ``(B, I, S, S)``.
        p: Drop probability in [0, 1).
        generator: CPU generator.
    """
    if p <= 0 or rp.shape[1] < 2:
        return rp
    u = torch.rand(rp.shape[:2], generator=generator)
    keep = u >= p
    # A sample that lost every channel keeps the one with the largest draw.
    none = ~keep.any(1)
    keep[none, u[none].argmax(1)] = True
    return rp * keep.to(rp.device, rp.dtype)[:, :, None, None]


def rp_view(
    batch: dict[str, Tensor],
    cfg: PretrainConfig,
    rcfg: RecurrenceConfig,
    device: torch.device | str,
    generator: torch.Generator,
) -> Tensor:
    """An augmented view ``(B, I, S, S)`` of the batch's RPs: the plots of a random temporal
    crop (``cfg.temporal_crop``), then :func:`channel_dropout` (``cfg.channel_dropout``)."""
    rp = batch_rps(batch, rcfg, device, crop=cfg.temporal_crop, generator=generator)
    return channel_dropout(rp, cfg.channel_dropout, generator)


def contrast_inputs(
    batch: dict[str, Tensor],
    cfg: PretrainConfig,
    rcfg: RecurrenceConfig,
    device: torch.device | str,
    norm: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    train: bool,
) -> dict[str, Tensor]:
    """What each RP is contrasted with (``cfg.objective``), as :class:`~pimc.models.PIMC`'s
    keyword argument.

    ``rp_image``: ``image``, the patches standardised by ``norm`` (and, when training with
    ``flip_rotate``, flipped and rotated); ``rp_views``: ``rp_view``, a second
    :func:`rp_view` of the same RPs, also in validation (two identical views would make the
    val loss meaningless).
    """
    if cfg.objective == "rp_views":
        return {"rp_view": rp_view(batch, cfg, rcfg, device, generator)}
    image = norm(batch["image"])
    if train and cfg.flip_rotate:
        image = augment_images(image, generator)
    return {"image": image}


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            line = next(x for x in f if x.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _check_memory(
    prepared: Path, first: Sequence[np.ndarray], rows: int, folds: Sequence[int]
) -> None:
    """Refuse to load more pairs than RAM holds (a clear error instead of the OOM killer);
    ``first``: the first shard's loaded arrays (rows first)."""
    per_row = sum(a.itemsize * int(np.prod(a.shape[1:])) for a in first) + 5 * 8
    need, free = 2 * rows * per_row, available_memory()  # 2x: the parts, then their concat
    if free is not None and need > free:
        raise ConfigError(
            f"{prepared}: the {rows:,} pairs of folds {list(folds)} need ~{need / 1e9:.1f} GB of "
            f"RAM to load ({per_row / 1e3:.1f} KB each) but {free / 1e9:.1f} GB is available; "
            "sample fewer pixels per patch (prepare.pixels_per_patch) or use more memory"
        )


def resolve_source(cfg: PretrainConfig, materialize: bool) -> str:
    """``materialized`` or ``on_the_fly``: where training reads its recurrence plots.

    ``auto`` uses the recurrence stage's shards when it wrote them (``materialize``), except
    that a temporal crop must cut the series before the plot is built: that needs on the fly.
    """
    if cfg.source == "materialized" and cfg.temporal_crop > 0:
        raise ConfigError(
            "'pretrain.temporal_crop' > 0 crops the series before the plot is built, which "
            "materialized plots cannot do; set pretrain.source to on_the_fly or auto"
        )
    if cfg.source != "auto":
        return cfg.source
    if cfg.temporal_crop > 0 or not materialize:
        return "on_the_fly"
    return "materialized"
