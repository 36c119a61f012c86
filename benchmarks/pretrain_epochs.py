"""Does longer pretraining help downstream? ``pretrain.epochs`` 6 (the default) vs 12, paired
by seed: the ablation behind the README's "Why the defaults" paragraph on epochs.

Each arm is :func:`pimc.stages.benchmark.run_benchmark` (a fresh synthetic dataset, prepare and
pretraining per seed, then every task) with only the PIMC methods, one torch thread, in its own
folder under ``--out``; then per task, label budget and method: mean ± sd per arm, the paired
difference, a paired t-test and the seeds where 12 epochs won. Prints; asserts nothing.

    python benchmarks/pretrain_epochs.py --out /tmp/epochs --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pimc.core.config import load_params  # noqa: E402
from pimc.stages.benchmark import run_benchmark  # noqa: E402
from pimc.stats import paired_comparison  # noqa: E402

KEY = ["seed", "label_fraction", "task", "method"]


def run_arm(epochs: int, out: Path, seeds: list[int], fractions: list[float]) -> pd.DataFrame:
    """Every seed and cell with ``pretrain.epochs = epochs`` (resumes finished cells)."""
    overrides = {
        "benchmark.seeds": seeds, "benchmark.label_fractions": fractions,
        "benchmark.forecast": ["pimc_linear"], "benchmark.pixel_cls": ["pimc_linear"],
        "benchmark.eurosat": ["pimc_linear"], "benchmark.out": str(out / f"epochs{epochs}"),
        "pretrain.epochs": epochs, "compute.torch_threads": 1,
    }  # fmt: skip
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml", overrides)
    return run_benchmark(params, progress=False, log=lambda m: print(m, flush=True))


def compare(a: pd.DataFrame, b: pd.DataFrame, na: int, nb: int) -> None:
    """Print arm ``nb`` vs arm ``na`` per task, label budget and method, paired by seed."""
    m = a.merge(b, on=KEY, suffixes=("_a", "_b")).sort_values(KEY)
    for (task, frac, method), g in m.groupby(["task", "label_fraction", "method"]):
        c = paired_comparison(g["value_b"], g["value_a"], bool(g["higher_is_better_a"].iloc[0]))
        print(f"{task:9} {frac:<5g} {method:14} {na}: {g.value_a.mean():.4f} ± "
              f"{g.value_a.std():.4f}  {nb}: {g.value_b.mean():.4f} ± {g.value_b.std():.4f}  "
              f"{nb}-{na}: {c['diff_mean']:+.4f}, p {c['p']:.3f}, {nb} better "
              f"{c['wins']}/{c['n']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for both arms")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--epochs", type=int, nargs=2, default=[6, 12])
    args = parser.parse_args()
    torch.set_num_threads(1)
    na, nb = args.epochs
    a, b = (run_arm(n, args.out, args.seeds, args.fractions) for n in (na, nb))
    compare(a, b, na, nb)


if __name__ == "__main__":
    main()
