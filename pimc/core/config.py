"""One typed view of ``params.yaml``.

Every stage section is a frozen dataclass; :func:`load_params` builds them recursively from the
YAML, coercing and checking types from the annotations, and rejects unknown keys with an error
that names the key, the file and the valid alternatives. Stage code takes these dataclasses,
never raw dicts, so a typo in ``params.yaml`` fails before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pimc.core.bands import (
    PASTIS_CLASS_COUNT,
)
from pimc.core.param_rules import _check_across, _check_out, _day
from pimc.core.task_config import TASK_CONFIGS, TASK_NAMES, FinetuneConfig, check_device
from pimc.core.typed_config import check as _check
from pimc.core.typed_config import flatten, from_dict, load_yaml, to_dict

__all__ = ["Params", "flatten", "from_dict", "load_params", "to_dict"]

# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the embedded synthetic dataset (see :mod:`pimc.data.synthetic`)."""

    pastis_patches: int = 150
    patch_size: int = 32
    min_dates: int = 38
    max_dates: int = 61
    cloud_prob: float = 0.6
    eurosat_per_class: int = 100

    def __post_init__(self) -> None:
        _check(
            self.pastis_patches >= 5, "data.synthetic.pastis_patches", "must be >= 5 (one per fold)"
        )
        _check(self.patch_size >= 8, "data.synthetic.patch_size", "must be >= 8")
        _check(
            2 <= self.min_dates <= self.max_dates,
            "data.synthetic.min_dates/max_dates",
            "need 2 <= min_dates <= max_dates",
        )
        _check(0.0 <= self.cloud_prob <= 1.0, "data.synthetic.cloud_prob", "must be in [0, 1]")
        _check(self.eurosat_per_class >= 5, "data.synthetic.eurosat_per_class", "must be >= 5")


@dataclass(frozen=True)
class MirrorConfig:
    """Where a real dataset is downloaded from. ``None`` keeps the dataset class's pinned value."""

    url: str | None = None
    md5: str | None = None
    max_extract_gb: float = 8.0  # most GiB its archive may extract to (a decompression bomb)

    def __post_init__(self) -> None:
        _check(self.max_extract_gb > 0, "data.<dataset>.max_extract_gb", "must be > 0")


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` stage: which raw datasets to produce and where."""

    source: Literal["synthetic", "real"] = "synthetic"
    root: str = "data/raw"
    seed: int = 0
    keep_archives: bool = False  # real: delete each zip once its extraction is complete
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    eurosat: MirrorConfig = field(default_factory=MirrorConfig)
    # Real PASTIS.zip (29 GB) extracts to ~30-40 GB.
    pastis: MirrorConfig = field(default_factory=lambda: MirrorConfig(max_extract_gb=64.0))


@dataclass(frozen=True)
class PrepareConfig:
    """The ``prepare`` stage: per-pixel index series and image patches of sampled pixels."""

    seed: int = 0
    folds: tuple[int, ...] = (1, 2, 3, 4, 5)
    indices: tuple[str, ...] = ("ndvi", "evi", "savi")
    time_axis: Literal["grid", "pad"] = "grid"
    grid_start: str = "2018-09-01"
    grid_end: str = "2019-11-30"
    grid_step_days: int = 10
    max_length: int = 61
    despike: Literal["none", "median", "blue"] = "median"
    despike_window: int = 3
    blue_threshold: float = 0.2
    sampler: Literal["random", "stratified", "hilbert"] = "random"
    pixels_per_patch: int | None = None  # None: every eligible pixel
    exclude_classes: tuple[int, ...] = (19,)
    patch_size: int = 9
    patch_date: Literal["fixed", "random", "median"] = "median"
    patch_date_index: int = 0
    random_dates: int = 4
    out: str = "data/prepared"

    def __post_init__(self) -> None:
        _check(
            self.pixels_per_patch is None or self.pixels_per_patch >= 1,
            "prepare.pixels_per_patch",
            "must be >= 1, or null for every pixel",
        )
        _check(
            self.patch_size >= 1 and self.patch_size % 2 == 1,
            "prepare.patch_size",
            "must be odd and >= 1 (a window centred on the pixel)",
        )
        _check(self.grid_step_days >= 1, "prepare.grid_step_days", "must be >= 1")
        _check(len(self.indices) >= 1, "prepare.indices", "must name at least one index")
        _check(
            len(set(self.indices)) == len(self.indices), "prepare.indices", "lists an index twice"
        )
        _check(
            self.despike_window >= 3 and self.despike_window % 2 == 1,
            "prepare.despike_window",
            "must be odd and >= 3 (a running median centred on each date)",
        )
        _check(self.blue_threshold > 0, "prepare.blue_threshold", "must be > 0 (reflectance)")
        _check(self.max_length >= 2, "prepare.max_length", "must be >= 2")
        _check(self.patch_date_index >= 0, "prepare.patch_date_index", "must be >= 0")
        _check(self.random_dates >= 1, "prepare.random_dates", "must be >= 1")
        _check(
            bool(self.folds) and set(self.folds) <= {1, 2, 3, 4, 5},
            "prepare.folds",
            "must name folds among 1..5",
        )
        bad = [c for c in self.exclude_classes if not 0 <= c < PASTIS_CLASS_COUNT]
        _check(not bad, "prepare.exclude_classes", f"has {bad}: PASTIS classes are 0..19")
        _check(
            len(set(self.exclude_classes)) < PASTIS_CLASS_COUNT,
            "prepare.exclude_classes",
            "excludes every class: no pixel would be sampled",
        )
        _check_out("prepare.out", self.out)
        start, end = (
            _day("prepare.grid_start", self.grid_start),
            _day("prepare.grid_end", self.grid_end),
        )
        _check(start < end, "prepare.grid_start/grid_end", f"{start} is not before {end}")

    @property
    def length(self) -> int:
        """Series length L on the stage's time axis (grid dates, or ``max_length`` padded)."""
        if self.time_axis == "pad":
            return self.max_length
        days = (_day("", self.grid_end) - _day("", self.grid_start)).days
        return days // self.grid_step_days + 1


@dataclass(frozen=True)
class RecurrenceConfig:
    """The ``recurrence`` stage: recurrence plots (pyts semantics) of the prepared series."""

    dimension: int | float = 1
    time_delay: int | float = 1
    threshold: float | Literal["point", "distance"] | None = None
    percentage: float = 10.0
    normalize: bool = False
    size: int | None = 32
    materialize: bool = False
    out: str = "data/recurrence"

    def __post_init__(self) -> None:
        _check(0.0 <= self.percentage <= 100.0, "recurrence.percentage", "must be in [0, 100]")
        for key in ("dimension", "time_delay"):
            value = getattr(self, key)
            _check(
                value >= 1 if isinstance(value, int) else 0 < value <= 1,
                f"recurrence.{key}",
                "must be an int >= 1 or a fraction of the series length in (0, 1]",
            )
        _check(
            not isinstance(self.threshold, float) or self.threshold >= 0,
            "recurrence.threshold",
            "must be >= 0 (a distance), 'point', 'distance' or null",
        )
        _check_out("recurrence.out", self.out)
        _check(self.size is None or self.size >= 4, "recurrence.size", "must be >= 4 or null")


@dataclass(frozen=True)
class ModelConfig:
    """The two-tower :class:`pimc.models.PIMC` architecture (constructor arguments).

    The input channels are not configured: they come from the data (one RP channel per
    ``prepare.indices`` entry, 10 bands). ``small_cnn`` has a fixed width of 32 because PIMC
    does not pass backbone keywords through.
    """

    rp_backbone: Literal["small_cnn", "resnet18", "resnet34", "resnet50"] = "small_cnn"
    image_backbone: Literal["small_cnn", "resnet18", "resnet34", "resnet50"] = "small_cnn"
    embed_dim: int = 128
    hidden_dim: int = 256
    init_logit_scale: float = 2.659260036932778  # log(1 / 0.07), CLIP's initial temperature
    max_logit_scale: float = 4.605170185988092  # log(100), CLIP's clamp
    small_input: bool = True

    def __post_init__(self) -> None:
        _check(self.embed_dim >= 1, "model.embed_dim", "must be >= 1")
        _check(self.hidden_dim >= 1, "model.hidden_dim", "must be >= 1")
        _check(
            0.0 <= self.init_logit_scale <= self.max_logit_scale,
            "model.init_logit_scale",
            "must lie in [0, model.max_logit_scale]",
        )


@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain`` stage: CLIP-style contrastive pretraining of PIMC on (RP, patch) pairs."""

    seed: int = 0
    train_folds: tuple[int, ...] = (1, 2, 3)
    val_folds: tuple[int, ...] = (4,)
    epochs: int = 6
    batch_size: int = 128  # per process; the global batch is world_size x batch_size
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    checkpoint_every: int = 50  # steps
    image_norm: bool = True  # per-band standardisation with train-set mean/std
    flip_rotate: bool = True  # random 90-degree rotations + flips of the image patch
    temporal_crop: float = 0.25  # fraction of the series cut away (random window) before the RP
    channel_dropout: float = 0.2  # probability of zeroing an RP channel (never all of them)
    negatives: Literal["all", "other_parcels"] = "all"  # other_parcels: no same-parcel negatives
    # rp_image: PIMC (RP <-> image patch); rp_views: RP-only SSL, two augmented views of a
    # pixel's RP through the RP tower (the ablation of what the image tower adds).
    objective: Literal["rp_image", "rp_views"] = "rp_image"
    batches: Literal["random", "by_patch"] = "by_patch"  # by_patch: each batch from one patch
    num_workers: int = 0  # 0: batches are gathered from in-memory tensors, no workers needed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    source: Literal["auto", "materialized", "on_the_fly"] = "auto"
    out: str = "data/models/pretrain"

    def __post_init__(self) -> None:
        _check(len(self.train_folds) >= 1, "pretrain.train_folds", "must name at least one fold")
        _check(len(self.val_folds) >= 1, "pretrain.val_folds", "must name at least one fold")
        _check(
            not set(self.train_folds) & set(self.val_folds),
            "pretrain.train_folds/val_folds",
            "must not overlap (validation would see training pixels)",
        )
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(self.batch_size >= 2, "pretrain.batch_size", "must be >= 2 (in-batch negatives)")
        _check(self.lr > 0, "pretrain.lr", "must be > 0")
        _check(self.weight_decay >= 0, "pretrain.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, "pretrain.warmup_steps", "must be >= 0")
        _check(self.checkpoint_every >= 1, "pretrain.checkpoint_every", "must be >= 1")
        _check(0.0 <= self.temporal_crop < 1.0, "pretrain.temporal_crop", "must be in [0, 1)")
        _check(0.0 <= self.channel_dropout < 1.0, "pretrain.channel_dropout", "must be in [0, 1)")
        _check(self.num_workers >= 0, "pretrain.num_workers", "must be >= 0")
        check_device("pretrain.device", self.device)
        _check_out("pretrain.out", self.out)
        _check(
            self.objective != "rp_views" or self.temporal_crop > 0 or self.channel_dropout > 0,
            "pretrain.objective",
            "rp_views needs temporal_crop > 0 or channel_dropout > 0 (else both views are "
            "the same plot)",
        )


@dataclass(frozen=True)
class RetrainConfig:
    """``retrain``: champion/challenger promotion by ``flows.retrain`` (no DVC stage reads it).

    A new version of a task model replaces the ``champion`` alias only if its test headline
    metric beats the champion's by more than ``margin`` (in the metric's own units, in the
    better direction); otherwise it is tagged ``challenger`` with the reason.
    """

    margin: float = 0.002
    tasks: tuple[str, ...] = TASK_NAMES

    def __post_init__(self) -> None:
        _check(self.margin >= 0, "retrain.margin", "must be >= 0 (0: any improvement wins)")
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        _check(
            not unknown,
            "retrain.tasks",
            f"has unknown {unknown}; valid: {', '.join(TASK_NAMES)}",
        )


@dataclass(frozen=True)
class BenchmarkConfig:
    """``benchmark``: the multi-seed comparison behind ``reports/benchmark.md`` (``make
    benchmark``, its own DVC pipeline in ``benchmarks/dvc.yaml``).

    For every seed the whole pipeline runs again (a new synthetic dataset, pixel sample and
    pretraining; the other sections as in ``params.yaml``), then every task at every label
    fraction, with the methods listed per task (PIMC's ``finetune.<task>.mode`` variant
    always runs). Results are paired by seed (see :mod:`pimc.stats`).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    forecast: tuple[str, ...] = (
        "pimc_linear", "random_init", "random_init_linear", "cnn1d", "rp_ssl_linear",
        "rp_ssl_finetune",
    )  # fmt: skip
    pixel_cls: tuple[str, ...] = (
        "pimc_linear", "random_init", "random_init_linear", "cnn1d", "cnn1d_nolevel",
        "single_index", "random_init_normalized", "rp_ssl_linear", "rp_ssl_finetune",
    )  # fmt: skip
    eurosat: tuple[str, ...] = ("pimc_linear", "random_init_linear", "random_init_finetune")
    out: str = "data/benchmark"

    def __post_init__(self) -> None:
        _check(len(set(self.seeds)) >= 3, "benchmark.seeds", "needs >= 3 distinct seeds")
        _check(
            bool(self.label_fractions) and all(0 < f <= 1 for f in self.label_fractions),
            "benchmark.label_fractions",
            "must be a non-empty list of values in (0, 1]",
        )
        _check_out("benchmark.out", self.out)
        for task in TASK_NAMES:
            valid = TASK_CONFIGS[task].METHODS
            unknown = [m for m in getattr(self, task) if m not in valid]
            _check(not unknown, f"benchmark.{task}", f"has unknown {unknown}; valid: {valid}")


@dataclass(frozen=True)
class ComputeConfig:
    """``compute``: where per-patch preprocessing runs. Never changes results, so no DVC stage
    depends on it (a different cluster does not invalidate the cache).

    ``task_runner: sequential`` runs patches in the stage's process; ``dask`` fans them out with
    prefect-dask, on a ``LocalCluster`` of ``dask_workers`` processes or, when
    ``dask_address`` is set (``tcp://scheduler:8786``), on that existing cluster.
    """

    task_runner: Literal["sequential", "dask"] = "sequential"
    dask_address: str | None = None
    dask_workers: int = 2
    patches_per_task: int = 8  # one Prefect task per this many patches: amortises task overhead
    # torch intra-op threads of a stage; null: the cores free at its start (cores - load). On
    # a busy machine fewer threads are faster (1 thread at load ~4 trained 12.5x faster than 2).
    # The last digits of results can differ with it; it is logged as the run tag torch.threads.
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        _check(self.dask_workers >= 1, "compute.dask_workers", "must be >= 1")
        _check(
            self.dask_address is None or "://" in self.dask_address,
            "compute.dask_address",
            "must be a scheduler address like tcp://host:8786, or null for a LocalCluster",
        )
        _check(self.patches_per_task >= 1, "compute.patches_per_task", "must be >= 1")
        _check(
            self.torch_threads is None or self.torch_threads >= 1,
            "compute.torch_threads",
            "must be >= 1, or null for the free cores",
        )


@dataclass(frozen=True)
class Params:
    """All of ``params.yaml``. Later stages add their sections here."""

    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    recurrence: RecurrenceConfig = field(default_factory=RecurrenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self) -> None:
        _check_across(self)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_params(
    path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None
) -> Params:
    """Read ``params.yaml`` into :class:`Params`.

    Args:
        path: the YAML file. Missing sections and keys take the dataclass defaults.
        overrides: dotted keys applied on top, e.g. ``{"data.source": "real"}`` (what
            ``dvc exp run -S`` would change), validated like the file itself.

    Raises:
        ConfigError: unknown key, wrong type, invalid value, or unreadable file.
    """
    return load_yaml(Params, path, overrides)
