"""The ``benchmark`` stage: every claim of PIMC tested over seeds and label budgets.

For each seed of ``benchmark.seeds`` the pipeline runs again from scratch under
``<benchmark.out>/seed<s>/`` (a new synthetic dataset, pixel sample, pretraining: every
``seed`` of ``params.yaml`` set to ``s``, everything else as in ``params.yaml``), then every
task at every ``benchmark.label_fractions`` with the methods listed under ``benchmark.<task>``
(plus the PIMC variant of ``finetune.<task>.mode``). The same functions as the pipeline's
stages do the work, so the benchmark measures exactly what ``dvc repro`` ships.

Each (seed, label fraction, task) cell writes its ``results.json`` and the config it ran
with; a re-run reuses a cell whose config is unchanged, so an interrupted benchmark resumes.
The folder is keyed on the ``pimc`` source code too (``code.json``): after a code change the
benchmark starts afresh, so its report always comes from one version of the code.

Outputs (see :func:`write_outputs`): ``reports/benchmark.csv`` (one row per seed, fraction,
task and method), ``reports/benchmark.md`` (mean ± sd per method and the paired comparisons of
:data:`COMPARISONS`), ``plots/label_efficiency.png`` and ``metrics/benchmark.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pimc.core.config import Params
from pimc.core.io import write_json
from pimc.core.paths import pastis_root
from pimc.core.task_config import TASK_NAMES
from pimc.stages.data import synthesize
from pimc.stages.prepare import run_prepare
from pimc.stages.pretrain import pretrain
from pimc.stages.recurrence import run_recurrence
from pimc.tasks.registry import get_task

__all__ = ["COMPARISONS", "cell_params", "run_benchmark", "seed_params"]

Log = Callable[[str], None]

#: (task, method A, method B, the claim "A beats B" tests). First the paper's claims, then
#: the ablations that say where a difference comes from.
COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("forecast", "pimc_finetune", "random_init", "pretraining helps (fine-tuned RP encoder)"),
    ("forecast", "pimc_linear", "random_init_linear", "pretrained RP features beat random ones"),
    ("forecast", "pimc_finetune", "cnn1d", "RP + PIMC beats the raw 1-D series"),
    ("pixel_cls", "pimc_finetune", "random_init", "pretraining helps (fine-tuned RP encoder)"),
    ("pixel_cls", "pimc_linear", "random_init_linear", "pretrained RP features beat random ones"),
    ("pixel_cls", "pimc_finetune", "cnn1d", "RP + PIMC beats the raw 1-D series"),
    ("pixel_cls", "random_init", "cnn1d_nolevel", "an RP beats a level-free 1-D series"),
    ("pixel_cls", "cnn1d", "cnn1d_nolevel", "the series' level carries class information"),
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


def _replicate(params: Params, progress: bool, log: Log) -> None:
    """Data, prepare, recurrence and pretrain of one replicate; each step resumes."""
    marker = Path(params.benchmark.out) / f"seed{params.data.seed}" / "data.json"
    wanted = json.loads(json.dumps(asdict(params.data)))
    if params.data.source == "synthetic" and not (
        marker.is_file() and json.loads(marker.read_text()) == wanted
    ):
        synthesize(params.data, progress=progress)
        write_json(marker, wanted)
    run_prepare(pastis_root(params.data.root), params.prepare, progress=progress)
    gallery = Path(params.recurrence.out) / "gallery.png"
    run_recurrence(params.prepare.out, params.recurrence, gallery, progress=progress)
    result = pretrain(params, progress=progress)
    log(
        f"seed {params.data.seed}: pretrained, best epoch {result['best_epoch']}, val loss "
        f"{result['val/loss']:.3f}, class top-1 {result['val/class_top1']:.3f}"
    )


def _cell(params: Params, task: str, fraction: float, progress: bool) -> dict[str, Any]:
    """One task at one label fraction on one replicate: its ``results.json`` (reused when the
    config it was made with is unchanged)."""
    cell = cell_params(params, task, fraction)
    out = Path(params.benchmark.out) / f"seed{params.data.seed}" / task / f"labels{fraction:g}"
    config = json.loads(json.dumps({"finetune": asdict(getattr(cell.finetune, task))}))
    upstream = ("data", "prepare", "recurrence", "model", "pretrain")
    config["upstream"] = {k: asdict(getattr(cell, k)) for k in upstream}
    config = json.loads(json.dumps(config))
    done, results = out / "config.json", out / "results.json"
    if done.is_file() and results.is_file() and json.loads(done.read_text()) == config:
        return json.loads(results.read_text())
    done.unlink(missing_ok=True)  # results.json is rewritten below; a kill leaves no marker
    get_task(task).run(cell, pretrained=None, out_dir=out, progress=progress)
    write_json(done, config)
    return json.loads(results.read_text())


def code_hash() -> str:
    """sha256 of every ``pimc`` source file (path and bytes), in path order."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _own_folder(out: Path) -> None:
    """Make ``out`` belong to this code: a folder made by other code is removed (only if it is
    a benchmark folder, i.e. holds ``code.json``; anything else is refused, never deleted)."""
    marker, code = out / "code.json", {"pimc_sha256": code_hash()}
    if marker.is_file() and json.loads(marker.read_text()) == code:
        return
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise FileExistsError(
                f"{out} exists but is not a benchmark folder (no code.json); move it away or "
                "set 'benchmark.out' to another folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, code)


def run_benchmark(params: Params, progress: bool = True, log: Log = print) -> pd.DataFrame:
    """Run (or resume) every replicate and cell.

    Returns:
        One row per (seed, label_fraction, task, method): ``value`` (the task's headline test
        metric), ``headline``, ``higher_is_better``, ``best_epoch``.
    """
    _own_folder(Path(params.benchmark.out))
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
