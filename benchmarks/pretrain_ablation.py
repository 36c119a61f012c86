"""Does a pretraining choice pay downstream? The defaults vs one change, paired by seed: the
ablations behind the README's "Why the defaults" paragraphs on epochs and negatives.

Each arm is :func:`pimc.stages.benchmark.run_benchmark` (a fresh synthetic dataset, prepare and
pretraining per seed, then every task) with one torch thread, in its own folder under
``--out``. The default arm also fine-tunes from random init, so both arms can be compared with
it on the same seeds' data. Printed per task, label budget and method: mean ± sd per arm, the
paired difference, a paired t-test and the seeds where the change won; every row also goes to
``<out>/results.csv``. Asserts nothing.

Without ``--set`` only the defaults run, their seeds split over ``--jobs`` processes (arms
``default0``, ``default1``): more seeds for the PIMC vs random-init comparison at low budgets.

    python benchmarks/pretrain_ablation.py --out /tmp/neg --set pretrain.negatives=other_parcels
    python benchmarks/pretrain_ablation.py --out /tmp/epochs --set pretrain.epochs=12 --jobs 1
    python benchmarks/pretrain_ablation.py --out /tmp/seeds --seeds 0 1 2 3 4 5 6 7 --fractions 0.01
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pimc.core.config import load_params  # noqa: E402
from pimc.stages.benchmark import run_benchmark  # noqa: E402
from pimc.stats import paired_comparison  # noqa: E402

KEY = ["seed", "label_fraction", "task"]
PIMC = {t: ["pimc_finetune", "pimc_linear"] for t in ("forecast", "pixel_cls", "eurosat")}
RANDOM = {"forecast": "random_init", "pixel_cls": "random_init", "eurosat": "random_init_finetune"}


def run_arm(name: str, change: dict, out: Path, seeds: list[int], fractions: list[float]):
    """Every seed and cell of one arm (resumes finished cells); ``change``: dotted overrides."""
    torch.set_num_threads(1)  # two arms side by side on 2 cores must not oversubscribe
    methods = {t: m + ([RANDOM[t]] if not change else []) for t, m in PIMC.items()}
    overrides = {
        "benchmark.seeds": seeds, "benchmark.label_fractions": fractions,
        **{f"benchmark.{t}": m for t, m in methods.items()},
        "benchmark.out": str(out / name), "compute.torch_threads": 1, **change,
    }  # fmt: skip
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml", overrides)
    return run_benchmark(params, progress=False, log=lambda m: print(f"[{name}] {m}", flush=True))


def _direction(wide: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``wide`` with each task's ``higher_is_better`` (from the long ``rows``) as a column."""
    return wide.assign(
        higher_is_better=wide["task"].map(rows.groupby("task")["higher_is_better"].first())
    )


def _line(label: str, g: pd.DataFrame, a: str, b: str) -> str:
    c = paired_comparison(g[a], g[b], bool(g["higher_is_better"].iloc[0]))
    return (
        f"{label}: {g[a].mean():.4f} ± {g[a].std():.4f} vs {g[b].mean():.4f} ± "
        f"{g[b].std():.4f}, diff {c['diff_mean']:+.4f} [{c['ci_low']:+.4f}, "
        f"{c['ci_high']:+.4f}], p {c['p']:.3f}, wins {c['wins']}/{c['n']}"
    )


def compare(base: pd.DataFrame, changed: pd.DataFrame, name: str) -> None:
    """Print the changed arm vs the defaults, and each arm's PIMC vs random init."""
    wide = [
        df.pivot_table(index=KEY, columns="method", values="value").add_suffix(f"@{arm}")
        for arm, df in (("default", base), (name, changed))
    ]
    m = _direction(wide[0].join(wide[1]).reset_index(), base)
    for (task, frac), g in m.groupby(["task", "label_fraction"]):
        print(f"\n{task}, labels {frac:g} ({len(g)} seeds)")
        for method in PIMC[task]:
            print("  " + _line(f"{method} {name} vs default", g, f"{method}@{name}",
                               f"{method}@default"))  # fmt: skip
        for arm in ("default", name):
            print("  " + _line(f"pimc_finetune ({arm}) vs {RANDOM[task]}", g,
                               f"pimc_finetune@{arm}", f"{RANDOM[task]}@default"))  # fmt: skip


def compare_random(base: pd.DataFrame) -> None:
    """Print the defaults' PIMC methods vs random init, paired by seed."""
    m = _direction(
        base.pivot_table(index=KEY, columns="method", values="value").reset_index(), base
    )
    for (task, frac), g in m.groupby(["task", "label_fraction"]):
        print(f"\n{task}, labels {frac:g} ({len(g)} seeds)")
        for method in PIMC[task]:
            print("  " + _line(f"{method} vs {RANDOM[task]}", g, method, RANDOM[task]))


def _change(pairs: list[str]) -> dict:
    """``["pretrain.epochs=12"]`` -> ``{"pretrain.epochs": 12}`` (values parsed as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. pretrain.epochs=12")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the arms")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the change: dotted params.yaml keys; none: defaults only",
    )
    parser.add_argument("--name", default="changed", help="the changed arm's folder and label")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2, help="arms at once")
    args = parser.parse_args()
    change = _change(args.set)
    load_params(Path(__file__).resolve().parents[1] / "params.yaml", change)  # fail fast
    if change:
        arms = [("default", {}, args.seeds), (args.name, change, args.seeds)]
    else:  # defaults only: each process takes every jobs-th seed
        arms = [(f"default{i}", {}, args.seeds[i :: args.jobs]) for i in range(args.jobs)]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_arm, n, c, args.out, s, args.fractions) for n, c, s in arms]
        results = [f.result().assign(arm=n) for f, (n, _, _) in zip(futures, arms, strict=True)]
    pd.concat(results).to_csv(args.out / "results.csv", index=False)  # to re-read later
    if change:
        compare(results[0], results[1], args.name)
    else:
        compare_random(pd.concat(results))


if __name__ == "__main__":
    main()
