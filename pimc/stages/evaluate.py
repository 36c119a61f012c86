"""The ``evaluate`` stage's ablation table: one row per method, one column per task.

Each task's ``reports/<task>.json`` (written by ``finetune@<task>``) holds its headline
metric's name, whether higher is better, and every method's metrics. Methods that a task does
not run (e.g. ``persistence`` for EuroSAT) are left empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pimc.core.errors import DatasetNotFoundError
from pimc.core.io import atomic_path, write_text
from pimc.core.paths import results_file

# Rows in this order first (the PIMC methods, then the shared baselines); others follow.
ORDER = (
    "pimc_linear",
    "pimc_finetune",
    "random_init",
    "random_init_linear",
    "random_init_finetune",
    "cnn1d",
    "cnn1d_nolevel",
)


def load_results(tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``reports/<task>.json`` of each task."""
    out = {}
    for task in tasks:
        path = results_file(task)
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} is missing; run `dvc repro finetune@{task}` first")
        out[task] = json.loads(path.read_text())
    return out


def ablation_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Methods x tasks, each cell the task's headline metric (column ``<task>: <metric>``)."""
    columns = {}
    for task, res in results.items():
        arrow = "↑" if res["higher_is_better"] else "↓"
        name = f"{task}: {res['headline']} {arrow}"
        columns[name] = {m: v.get(res["headline"]) for m, v in res["methods"].items()}
    table = pd.DataFrame(columns)
    first = [m for m in ORDER if m in table.index]
    table = table.loc[first + sorted(m for m in table.index if m not in first)]
    table.index.name = "method"
    return table


def pimc_vs_random(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task: best PIMC method vs best random-init method on the headline metric."""
    out = {}
    for task, res in results.items():
        head, sign = res["headline"], 1 if res["higher_is_better"] else -1
        score = {m: v[head] for m, v in res["methods"].items() if v.get(head) is not None}
        pimc = max((m for m in score if m.startswith("pimc")), key=lambda m: sign * score[m])
        rand = max((m for m in score if m.startswith("random_init")), key=lambda m: sign * score[m])
        out[task] = {
            "pimc": score[pimc],
            "random_init": score[rand],
            "pimc_better": float(sign * (score[pimc] - score[rand]) > 0),
        }
    return out


def headline_metrics(result: Mapping[str, Any], mode: str) -> dict[str, float]:
    """A task's ``dvc metrics``: its headline for the registered PIMC model (``pimc``,
    ``pimc_<mode>``), the best random-init method and the best non-PIMC method. The same
    three keys for every task, so ``dvc metrics show`` has three task columns."""
    head, sign = result["headline"], 1 if result["higher_is_better"] else -1
    score = {m: v[head] for m, v in result["methods"].items() if v.get(head) is not None}

    def best(names: list[str]) -> float:
        return max((score[m] for m in names), key=lambda v: sign * v, default=float("nan"))

    return {
        "pimc": score[f"pimc_{mode}"],
        "random_init": best([m for m in score if m.startswith("random_init")]),
        "best_baseline": best([m for m in score if not m.startswith("pimc")]),
    }


def write_report(table: pd.DataFrame, comparison: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """``ablations.csv`` (pandas) and ``ablations.md`` (the table plus PIMC vs random init)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "ablations.csv"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, float_format="%.4f")
    lines = ["# Ablations", "", "Headline metric per task (↑ higher is better, ↓ lower).", ""]
    header = ["method", *table.columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4f}" for v in row]
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    lines += [
        "",
        "## PIMC pretraining vs random initialisation (this run only)",
        "",
        "One seed is an anecdote: a margin here can be smaller than the seed-to-seed spread. "
        "`make benchmark` (reports/benchmark.md) repeats everything over seeds and label "
        "budgets with paired tests.",
        "",
    ]
    for task, c in comparison.items():
        verdict = "PIMC ahead" if c["pimc_better"] else "PIMC not ahead"
        lines.append(
            f"- {task}: PIMC {c['pimc']:.4f} vs random init {c['random_init']:.4f} → {verdict}"
        )
    md = write_text(out_dir / "ablations.md", "\n".join(lines) + "\n")
    return [csv, md]
