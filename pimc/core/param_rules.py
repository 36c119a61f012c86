"""Rules of ``params.yaml`` that span fields or sections (see :mod:`pimc.core.config`), checked
at load so that a bad value fails before any stage deletes or overwrites its outputs."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pimc.core.bands import (
    EUROSAT_BANDS,
    PASTIS_CLASS_COUNT,
    PASTIS_MAX_DATES,
    PASTIS_MIN_DATES,
    PASTIS_SIDE,
)
from pimc.core.errors import ConfigError
from pimc.core.typed_config import check as _check

if TYPE_CHECKING:
    from pimc.core.config import Params


def _day(key: str, text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(text))
    except ValueError:
        raise ConfigError(f"'{key}' = {text!r} is not a date; write YYYY-MM-DD") from None


def _check_out(key: str, path: str) -> None:
    """Stages empty their output folder when the config changes: never the working directory,
    one of its parents, or the file-system root."""
    resolved = Path(path or ".").resolve()
    _check(
        bool(path.strip()) and resolved not in (Path.cwd(), *Path.cwd().parents),
        key,
        f"= {path!r} would make the stage empty {resolved}; name a folder of its own "
        "(e.g. data/<stage>)",
    )


def _check_across(p: Params) -> None:
    prep, syn, fc = p.prepare, p.data.synthetic, p.finetune.forecast
    side = syn.patch_size if p.data.source == "synthetic" else PASTIS_SIDE
    _check(
        prep.patch_size // 2 < side,
        "prepare.patch_size",
        f"= {prep.patch_size} does not fit the {side} x {side} px patches (at most {2 * side - 1})",
    )
    _check(
        prep.pixels_per_patch is None or prep.pixels_per_patch <= side * side,
        "prepare.pixels_per_patch",
        f"= {prep.pixels_per_patch} exceeds the {side * side} pixels of a {side} x {side} patch; "
        "use null for every pixel",
    )
    min_dates = syn.min_dates if p.data.source == "synthetic" else PASTIS_MIN_DATES
    max_dates = syn.max_dates if p.data.source == "synthetic" else PASTIS_MAX_DATES
    _check(
        prep.patch_date_index < min_dates,
        "prepare.patch_date_index",
        f"= {prep.patch_date_index} but the shortest patches have {min_dates} dates",
    )
    _check(
        prep.time_axis != "pad" or prep.max_length >= max_dates,
        "prepare.max_length",
        f"= {prep.max_length} would cut patches of up to {max_dates} dates (time_axis: pad)",
    )
    length = prep.length
    _check(
        fc.input_len + fc.horizon <= length,
        "finetune.forecast.input_len/horizon",
        f"= {fc.input_len} + {fc.horizon} needs that many dates but the series have {length} "
        "(prepare.grid_start/grid_end/grid_step_days)",
    )
    rec = p.recurrence
    shortest = min(fc.input_len, length - int(p.pretrain.temporal_crop * length))
    # As pimc.transforms.recurrence resolves them: a float is ceil(fraction * T).
    span = [v if isinstance(v, int) else math.ceil(v * shortest) for v in (rec.dimension,
            rec.time_delay)]  # fmt: skip
    _check(
        (span[0] - 1) * span[1] + 2 <= shortest,
        "recurrence.dimension/time_delay",
        f"embed {span[0]} values {span[1]} apart, longer than the shortest series a plot is "
        f"built from ({shortest} dates)",
    )
    used = set(p.pretrain.train_folds) | set(p.pretrain.val_folds)
    for task in ("forecast", "pixel_cls"):
        cfg = getattr(p.finetune, task)
        used |= set(cfg.train_folds) | set(cfg.val_folds) | set(cfg.test_folds)
    _check(
        used <= set(prep.folds),
        "prepare.folds",
        f"= {list(prep.folds)} leaves out fold(s) {sorted(used - set(prep.folds))} that "
        "pretrain/finetune use",
    )
    pc = p.finetune.pixel_cls
    _check(
        0 <= pc.ignore_index < PASTIS_CLASS_COUNT,
        "finetune.pixel_cls.ignore_index",
        f"= {pc.ignore_index}: must be a PASTIS class id 0..19 (19 is void)",
    )
    from pimc.transforms.indices import INDICES  # imports torch: only when params are loaded

    unknown = [i for i in prep.indices if i not in INDICES]
    _check(not unknown, "prepare.indices", f"has {unknown}; known: {', '.join(INDICES)}")
    bad = [b for b in p.finetune.eurosat.bands if b not in EUROSAT_BANDS]
    _check(not bad, "finetune.eurosat.bands", f"has {bad}; EuroSAT bands: {EUROSAT_BANDS}")
    _check(bool(p.data.root.strip()), "data.root", "must name the raw-data folder")
