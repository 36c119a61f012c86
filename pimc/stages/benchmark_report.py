"""The ``benchmark`` stage's report: tables, paired comparisons, the label-efficiency plot.

Input: :func:`pimc.stages.benchmark.run_benchmark`'s rows (one per seed, label fraction, task
and method). Nothing here trains; every number is computed from those rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pimc.core.io import atomic_path, write_json, write_text
from pimc.plots import label_efficiency
from pimc.stages.benchmark import COMPARISONS
from pimc.stats import mean_sd, paired_comparison

__all__ = ["comparisons", "summary", "write_outputs"]

KEY = ["task", "label_fraction", "method"]


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label fraction, method): ``mean``, ``sd``, ``n`` seeds, ``best_epoch_max``."""
    out = []
    for (task, fraction, method), group in rows.groupby(KEY, sort=True):
        mean, sd = mean_sd(group["value"].to_list())
        epochs = group["best_epoch"].dropna()
        out.append(
            {
                "task": task,
                "label_fraction": fraction,
                "method": method,
                "mean": mean,
                "sd": sd,
                "n": len(group),
                "best_epoch_max": int(epochs.max()) if len(epochs) else None,
            }
        )
    return pd.DataFrame(out)


def comparisons(rows: pd.DataFrame) -> pd.DataFrame:
    """:data:`~pimc.stages.benchmark.COMPARISONS` at every label fraction where both methods
    ran, paired by seed (:func:`pimc.stats.paired_comparison`)."""
    out = []
    for task, a, b, claim in COMPARISONS:
        sub = rows[rows["task"] == task]
        for fraction, group in sub.groupby("label_fraction", sort=True):
            wide = group.pivot(index="seed", columns="method", values="value")
            if a not in wide or b not in wide:
                continue
            pair = wide[[a, b]].dropna()
            if len(pair) < 2:
                continue
            higher = bool(group["higher_is_better"].iloc[0])
            test = paired_comparison(pair[a].to_list(), pair[b].to_list(), higher)
            out.append({"task": task, "label_fraction": fraction, "a": a, "b": b,
                        "claim": claim, **test})  # fmt: skip
    return pd.DataFrame(out)


def _markdown(summ: pd.DataFrame, comp: pd.DataFrame, rows: pd.DataFrame) -> str:
    seeds = sorted(rows["seed"].unique().tolist())
    lines = [
        "# Benchmark: PIMC over seeds and label budgets",
        "",
        f"Seeds {seeds}: each a new synthetic dataset, pixel sample, pretraining and "
        "fine-tuning. Test headline metric, mean ± sd over seeds. ↑ higher is better, ↓ lower.",
        "",
    ]
    for task, group in summ.groupby("task", sort=False):
        head = rows[rows["task"] == task].iloc[0]
        arrow = "↑" if head["higher_is_better"] else "↓"
        fractions = sorted(group["label_fraction"].unique())
        lines += [f"## {task}: {head['headline']} {arrow}", ""]
        lines += ["| method | " + " | ".join(f"{f:g} labels" for f in fractions) + " |"]
        lines += ["|---|" + "---|" * len(fractions)]
        for method, m in group.groupby("method", sort=True):
            cells = {r.label_fraction: f"{r.mean:.4f} ± {r.sd:.4f}" for r in m.itertuples()}
            lines.append(f"| {method} | " + " | ".join(cells.get(f, "") for f in fractions) + " |")
        late = group.dropna(subset=["best_epoch_max"])
        budget = int(rows.loc[rows["task"] == task, "epochs"].max())
        lines += [
            "",
            f"Latest best epoch over seeds and budgets (early stopping on val, {budget} "
            "epochs): "
            + ", ".join(
                f"{m} {int(v)}" for m, v in late.groupby("method")["best_epoch_max"].max().items()
            ),
            "",
        ]
    lines += [
        "## Paired comparisons (A − B per seed)",
        "",
        "95 % t-interval of the mean difference and two-sided paired t-test; `wins` counts "
        'seeds where A is better. "no evidence": the interval includes 0.',
        "",
        "| task | labels | A | B | claim | A − B | 95 % CI | p | wins | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in comp.itertuples():
        lines.append(
            f"| {r.task} | {r.label_fraction:g} | {r.a} | {r.b} | {r.claim} | "
            f"{r.diff_mean:+.4f} ± {r.diff_sd:.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
            f"{r.p:.3f} | {r.wins}/{r.n} | {r.verdict} |"
        )
    return "\n".join(lines) + "\n"


def _metrics(comp: pd.DataFrame) -> dict[str, float]:
    """``metrics/benchmark.json``: per comparison and fraction, the mean difference and p."""
    out: dict[str, float] = {}
    for r in comp.itertuples():
        key = f"{r.task}/labels{r.label_fraction:g}/{r.a}_vs_{r.b}"
        out[f"{key}/diff"] = round(float(r.diff_mean), 6)
        out[f"{key}/p"] = round(float(r.p), 6)
    return out


def write_outputs(rows: pd.DataFrame, reports: Path, plot: Path, metrics: Path) -> dict[str, Any]:
    """``<reports>/benchmark.csv`` (the rows), ``<reports>/benchmark.md``, the PNG at ``plot``
    and the DVC metrics at ``metrics``.

    Returns:
        ``summary`` and ``comparisons`` (DataFrames), ``metrics`` (dict), ``files`` (paths).
    """
    reports.mkdir(parents=True, exist_ok=True)
    summ, comp = summary(rows), comparisons(rows)
    csv = reports / "benchmark.csv"
    with atomic_path(csv) as tmp:
        rows.sort_values(["task", "label_fraction", "method", "seed"]).to_csv(
            tmp, index=False, float_format="%.6f"
        )
    md = write_text(reports / "benchmark.md", _markdown(summ, comp, rows))
    png = label_efficiency(summ, rows, plot)
    values = _metrics(comp)
    write_json(metrics, values)
    return {"summary": summ, "comparisons": comp, "metrics": values, "files": [csv, md, png]}
