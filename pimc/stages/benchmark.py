"""The ``benchmark`` stage: every claim of PIMC tested over seeds and label budgets.

For each seed of ``benchmark.seeds`` the pipeline runs again from scratch under
``<benchmark.out>/seed<s>/`` (a new synthetic dataset, pixel sample, pretraining: every
``seed`` of ``params.yaml`` set to ``s``, everything else as in ``params.yaml``), then every
task at every ``benchmark.label_fractions`` with the methods listed under ``benchmark.<task>``
(plus the PIMC variant of ``finetune.<task>.mode``). The same functions as the pipeline's
stages do the work, so the benchmark measures exactly what ``dvc repro`` ships.

Each (seed, label fraction, task) cell writes its ``results.json`` and the config it ran
with; a re-run reuses a cell whose config is unchanged, so an interrupted benchmark resumes.
The folder is keyed on the ``pimc`` source code too (:func:`code_hash`): after a code change
the benchmark starts afresh, so its report always comes from one version of the code.

Outputs (see :func:`write_outputs`): ``reports/benchmark.csv`` (one row per seed, fraction,
task and method), ``reports/benchmark.md`` (mean ± sd per method and the paired comparisons of
:data:`COMPARISONS`), ``plots/label_efficiency.png`` and ``reports/benchmark.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pimc.core.config import Params
from pimc.core.io import STAMP, fingerprint, fresh_output_dir, is_stamped, write_text
from pimc.core.paths import pastis_root, rp_views_out
from pimc.core.task_config import RP_SSL, TASK_NAMES
from pimc.stages.data import synthesize
from pimc.stages.prepare import run_prepare
from pimc.stages.pretrain import pretrain
from pimc.stages.recurrence import run_recurrence
from pimc.tasks.registry import get_task

__all__ = ["COMPARISONS", "cell_params", "rp_views_params", "run_benchmark", "seed_params"]

Log = Callable[[str], None]

#: (task, method A, method B, the claim "A beats B" tests). First the paper's claims, then
#: the ablations that say where a difference comes from.
COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("forecast", "pimc_finetune", "random_init", "pretraining helps (fine-tuned RP encoder)"),
    ("forecast", "pimc_linear", "random_init_linear", "pretrained RP features beat random ones"),
    ("forecast", "pimc_finetune", "cnn1d", "RP + PIMC beats the raw 1-D series"),
    ("forecast", "rp_ssl_finetune", "random_init", "RP-only self-supervision helps"),
    ("forecast", "pimc_finetune", "rp_ssl_finetune", "the image tower adds to RP-only SSL"),
    ("forecast", "pimc_linear", "rp_ssl_linear", "the image tower adds to RP-only SSL (linear)"),
    ("pixel_cls", "pimc_finetune", "random_init", "pretraining helps (fine-tuned RP encoder)"),
    ("pixel_cls", "pimc_linear", "random_init_linear", "pretrained RP features beat random ones"),
    ("pixel_cls", "pimc_finetune", "cnn1d", "RP + PIMC beats the raw 1-D series"),
    ("pixel_cls", "random_init", "cnn1d_nolevel", "an RP beats a level-free 1-D series"),
    ("pixel_cls", "cnn1d", "cnn1d_nolevel", "the series' level carries class information"),
    ("pixel_cls", "rp_ssl_finetune", "random_init", "RP-only self-supervision helps"),
    ("pixel_cls", "pimc_finetune", "rp_ssl_finetune", "the image tower adds to RP-only SSL"),
    ("pixel_cls", "pimc_linear", "rp_ssl_linear", "the image tower adds to RP-only SSL (linear)"),
    ("pixel_cls", "random_init", "random_init_normalized", "raw RPs beat [0, 1]-normalised ones"),
    *(
        ("pixel_cls", "pimc_finetune", f"single_index_{i}", f"three indices beat {i} alone")
        for i in ("ndvi", "evi", "savi")
    ),
    ("eurosat", "pimc_finetune", "random_init_finetune", "pretraining helps (image encoder)"),
    ("eurosat", "pimc_linear", "random_init_linear", "pretrained image features beat random"),
)


def seed_params(params: Params, seed: int) -> Params:
    """``params`` for one replicate: every seed set to ``seed``, every output (and, for
    synthetic data, the dataset) under ``<benchmark.out>/seed<seed>/``."""
    base = Path(params.benchmark.out) / f"seed{seed}"
    data = replace(params.data, seed=seed)
    if params.data.source == "synthetic":  # real data are the same for every seed
        data = replace(data, root=str(base / "raw"))
    tasks = {t: replace(getattr(params.finetune, t), seed=seed) for t in TASK_NAMES}
    return replace(
        params,
        data=data,
        prepare=replace(params.prepare, seed=seed, out=str(base / "prepared")),
        recurrence=replace(params.recurrence, out=str(base / "recurrence")),
        pretrain=replace(params.pretrain, seed=seed, out=str(base / "pretrain")),
        finetune=replace(params.finetune, **tasks),
    )


def cell_params(params: Params, task: str, fraction: float) -> Params:
    """``params`` (of a replicate) with ``task`` at label fraction ``fraction``, running the
    methods of ``benchmark.<task>``."""
    cfg = replace(
        getattr(params.finetune, task),
        label_fraction=fraction,
        baselines=tuple(getattr(params.benchmark, task)),
        pretrained="stage",
    )
    return replace(params, finetune=replace(params.finetune, **{task: cfg}))


def rp_views_params(params: Params) -> Params:
    """``params`` (of a replicate) for its RP-only self-supervised pretraining: the same
    pretraining with ``objective: rp_views``, written to :func:`~pimc.core.paths.rp_views_out`
    (where the ``rp_ssl_*`` methods look)."""
    out = str(rp_views_out(params.pretrain.out))
    return replace(params, pretrain=replace(params.pretrain, objective="rp_views", out=out))


def _needs_rp_views(params: Params) -> bool:
    return any(m in RP_SSL for t in TASK_NAMES for m in getattr(params.benchmark, t))


def _replicate(params: Params, progress: bool, log: Log) -> None:
    """Data, prepare, recurrence and pretrain(s) of one replicate; each step resumes."""
    root, wanted = params.data.root, fingerprint(asdict(params.data))
    if params.data.source == "synthetic" and not is_stamped(root, wanted):
        fresh_output_dir(root, f"incomplete {wanted}")  # a kill now leaves no valid stamp
        synthesize(params.data, progress=progress)
        write_text(Path(root) / STAMP, wanted)
    run_prepare(pastis_root(params.data.root), params.prepare, progress=progress)
    gallery = Path(params.recurrence.out) / "gallery.png"
    run_recurrence(params.prepare.out, params.recurrence, gallery, progress=progress)
    runs = [params, rp_views_params(params)] if _needs_rp_views(params) else [params]
    for run in runs:
        result = pretrain(run, progress=progress)
        log(
            f"seed {params.data.seed}: pretrained ({run.pretrain.objective}), best epoch "
            f"{result['best_epoch']}, val loss {result['val/loss']:.3f}, class top-1 "
            f"{result['val/class_top1']:.3f}"
        )


def _cell(params: Params, task: str, fraction: float, progress: bool) -> dict[str, Any]:
    """One task at one label fraction on one replicate: its ``results.json`` (reused when the
    config it was made with is unchanged)."""
    cell = cell_params(params, task, fraction)
    upstream = ("data", "prepare", "recurrence", "model", "pretrain")
    config = {
        "finetune": asdict(getattr(cell.finetune, task)),
        "upstream": {k: asdict(getattr(cell, k)) for k in upstream},
    }
    out = Path(params.benchmark.out) / f"seed{params.data.seed}" / task / f"labels{fraction:g}"
    out = fresh_output_dir(out, fingerprint(config))  # emptied when the config changed
    results = out / "results.json"  # written last and atomically: present means finished
    if not results.is_file():
        get_task(task).run(cell, pretrained=None, out_dir=out, progress=progress)
    return json.loads(results.read_text())


def code_hash() -> str:
    """sha256 of every ``pimc`` source file (path and bytes), in path order."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_benchmark(params: Params, progress: bool = True, log: Log = print) -> pd.DataFrame:
    """Run (or resume) every replicate and cell.

    Returns:
        One row per (seed, label_fraction, task, method): ``value`` (the task's headline test
        metric), ``headline``, ``higher_is_better``, ``best_epoch``.
    """
    # A code change starts afresh, so the report always comes from one version of the code.
    fresh_output_dir(params.benchmark.out, code_hash())
    rows = []
    for seed in params.benchmark.seeds:
        replicate = seed_params(params, seed)
        _replicate(replicate, progress, log)
        for fraction in params.benchmark.label_fractions:
            for task in TASK_NAMES:
                res = _cell(replicate, task, fraction, progress)
                for method, metrics in res["methods"].items():
                    rows.append(
                        {
                            "seed": seed,
                            "label_fraction": fraction,
                            "task": task,
                            "method": method,
                            "value": metrics[res["headline"]],
                            "headline": res["headline"],
                            "higher_is_better": res["higher_is_better"],
                            "best_epoch": metrics.get("best_epoch"),
                            "epochs": getattr(params.finetune, task).epochs,
                        }
                    )
                log(f"seed {seed}, labels {fraction:g}, {task}: done")
    return pd.DataFrame(rows)
