"""The ``finetune.<task>`` sections of ``params.yaml``: one typed config per downstream task.

:mod:`pimc.core.config` assembles them into :class:`~pimc.core.config.Params`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from pimc.core.bands import PASTIS_BANDS
from pimc.core.typed_config import check as _check

__all__ = [
    "BENCHMARK_ONLY",
    "RP_SSL",
    "TASK_CONFIGS",
    "TASK_NAMES",
    "EurosatConfig",
    "FinetuneConfig",
    "ForecastConfig",
    "PixelClsConfig",
    "TaskConfig",
]

#: Methods on the RP-only self-supervised checkpoint, which only ``make benchmark`` trains:
#: listed in a task's METHODS, never in its default baselines.
RP_SSL = ("rp_ssl_linear", "rp_ssl_finetune")
#: Ablations that only ``make benchmark`` runs by default (RP_SSL and the normalisation switch).
BENCHMARK_ONLY = (*RP_SSL, "random_init_normalized")


@dataclass(frozen=True)
class TaskConfig:
    """Fields every downstream task shares (``finetune.<task>``).

    ``mode`` picks the PIMC method whose model is returned as ``best_model``: ``linear`` (frozen
    pretrained encoder, BN statistics included, + linear head) or ``finetune`` (all trainable,
    the pretrained encoder at ``lr * encoder_lr_scale`` so the head's first noisy steps do not
    wipe out what pretraining learnt; randomly initialised encoders always get the full ``lr``).
    ``baselines`` lists the other methods to run too (the other PIMC variant included).
    """

    SECTION: ClassVar[str] = "finetune"
    METHODS: ClassVar[tuple[str, ...]] = ()

    seed: int = 0
    mode: Literal["linear", "finetune"] = "finetune"
    epochs: int = 30
    epoch_steps: int | None = 10  # optimiser steps per epoch; null: one pass over the labels
    label_fraction: float = 0.1  # share of training rows with labels (pimc.tasks.budget)
    val_pixels: int | None = 2048  # val rows scored each epoch (fixed random subset); null: all
    batch_size: int = 128
    lr: float = 1e-2  # head LR: linear probes on standardised features need a large one
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    patience: int = 10  # epochs without a better validation metric before stopping
    freeze_epochs: int = 0  # finetune of a pretrained encoder: head-only epochs first (LP-FT)
    pretrained: Literal["stage", "registry", "none"] = "stage"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    baselines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        key = self.SECTION
        _check(self.epochs >= 1, f"{key}.epochs", "must be >= 1")
        _check(
            self.epoch_steps is None or self.epoch_steps >= 1, f"{key}.epoch_steps", "must be >= 1"
        )
        _check(0.0 < self.label_fraction <= 1.0, f"{key}.label_fraction", "must be in (0, 1]")
        _check(self.val_pixels is None or self.val_pixels >= 2, f"{key}.val_pixels", "must be >= 2")
        _check(self.batch_size >= 2, f"{key}.batch_size", "must be >= 2 (BatchNorm needs 2)")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.encoder_lr_scale >= 0, f"{key}.encoder_lr_scale", "must be >= 0")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(self.patience >= 1, f"{key}.patience", "must be >= 1")
        _check(self.freeze_epochs >= 0, f"{key}.freeze_epochs", "must be >= 0")
        check_device(f"{key}.device", self.device)
        unknown = [b for b in self.baselines if b not in self.METHODS]
        _check(not unknown, f"{key}.baselines", f"has unknown {unknown}; valid: {self.METHODS}")


def check_device(key: str, device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``: anything else fails at load, not
    after a stage has emptied its outputs."""
    _check(
        re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device) is not None,
        key,
        f"= {device!r}; choose auto, cpu, cuda, cuda:N or mps",
    )


def _check_folds(key: str, train: tuple, val: tuple, test: tuple) -> None:
    for name, folds in (("train_folds", train), ("val_folds", val), ("test_folds", test)):
        _check(bool(folds), f"{key}.{name}", "must name at least one fold")
        _check(set(folds) <= {1, 2, 3, 4, 5}, f"{key}.{name}", "folds are 1..5")
    _check(
        not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test)),
        f"{key}.train_folds/val_folds/test_folds",
        "must not overlap (evaluation would see training pixels)",
    )


@dataclass(frozen=True)
class ForecastConfig(TaskConfig):
    """``finetune.forecast``: the next ``horizon`` grid steps from the RP of the first
    ``input_len`` (plus the last observed values, which an RP cannot encode)."""

    SECTION: ClassVar[str] = "finetune.forecast"
    METHODS: ClassVar[tuple[str, ...]] = (
        "pimc_linear", "pimc_finetune", "random_init", "random_init_linear", "persistence",
        "linear_extrapolation", "climatology", "cnn1d", *RP_SSL,
    )  # fmt: skip

    input_len: int = 32
    horizon: int = 10
    context_steps: int = 1  # most recent values per index given to the head beside the RP
    train_folds: tuple[int, ...] = (1, 2, 3)
    val_folds: tuple[int, ...] = (4,)
    test_folds: tuple[int, ...] = (5,)
    baselines: tuple[str, ...] = tuple(m for m in METHODS if m not in BENCHMARK_ONLY)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.input_len >= 2, f"{self.SECTION}.input_len", "must be >= 2")
        _check(self.horizon >= 1, f"{self.SECTION}.horizon", "must be >= 1")
        _check(
            1 <= self.context_steps <= self.input_len,
            f"{self.SECTION}.context_steps",
            "must be in [1, input_len]",
        )
        _check_folds(self.SECTION, self.train_folds, self.val_folds, self.test_folds)


@dataclass(frozen=True)
class PixelClsConfig(TaskConfig):
    """``finetune.pixel_cls``: crop type of a pixel from its full-season RP.

    ``single_index`` in ``baselines`` runs ``single_index_<name>`` for every prepared index.
    """

    SECTION: ClassVar[str] = "finetune.pixel_cls"
    METHODS: ClassVar[tuple[str, ...]] = (
        "pimc_linear", "pimc_finetune", "random_init", "random_init_linear", "cnn1d",
        "cnn1d_nolevel", "single_index", "random_init_normalized", *RP_SSL,
    )  # fmt: skip

    train_folds: tuple[int, ...] = (1, 2, 3)
    val_folds: tuple[int, ...] = (4,)
    test_folds: tuple[int, ...] = (5,)
    rotation: int | None = None  # 0..4 picks PASTIS.rotations[rotation], overriding the folds
    keep_background: bool = True
    ignore_index: int = 19
    baselines: tuple[str, ...] = tuple(m for m in METHODS if m not in BENCHMARK_ONLY)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.rotation is None or 0 <= self.rotation <= 4,
            f"{self.SECTION}.rotation",
            "must be 0..4 (an official PASTIS rotation) or null (use the *_folds)",
        )
        _check_folds(self.SECTION, self.train_folds, self.val_folds, self.test_folds)


@dataclass(frozen=True)
class EurosatConfig(TaskConfig):
    """``finetune.eurosat``: EuroSAT scene classification with the image tower."""

    SECTION: ClassVar[str] = "finetune.eurosat"
    METHODS: ClassVar[tuple[str, ...]] = (
        "pimc_linear", "pimc_finetune", "random_init_linear", "random_init_finetune",
    )  # fmt: skip

    encoder_lr_scale: float = 0.1  # the image tower sees new data (TOA, 64 px): change it less
    resize: int | None = None  # side the 64 x 64 tiles are resized to; null keeps 64
    bands: tuple[str, ...] = PASTIS_BANDS
    baselines: tuple[str, ...] = tuple(m for m in METHODS if m not in BENCHMARK_ONLY)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.resize is None or self.resize >= 8, f"{self.SECTION}.resize", "must be >= 8")
        _check(len(self.bands) >= 1, f"{self.SECTION}.bands", "must name at least one band")


@dataclass(frozen=True)
class FinetuneConfig:
    """The downstream tasks (``pimc.tasks``), one section each."""

    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    pixel_cls: PixelClsConfig = field(default_factory=PixelClsConfig)
    eurosat: EurosatConfig = field(default_factory=EurosatConfig)


#: The downstream task names: the fields of FinetuneConfig, in pipeline order.
TASK_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FinetuneConfig))
#: Each task's config class, by task name.
TASK_CONFIGS: dict[str, type[TaskConfig]] = {
    f.name: f.default_factory for f in fields(FinetuneConfig)
}
