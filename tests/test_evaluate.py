"""pimc.stages.evaluate on hand-made task results."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pimc.stages.evaluate import ablation_table, headline_metrics, pimc_vs_random, write_report

RESULTS = {
    "forecast": {
        "headline": "rmse_mean_std",
        "higher_is_better": False,
        "methods": {
            "persistence": {"rmse_mean_std": 0.9},
            "pimc_finetune": {"rmse_mean_std": 0.30, "best_epoch": 3},
            "random_init": {"rmse_mean_std": 0.35},
            "pimc_linear": {"rmse_mean_std": 0.40},
        },
    },
    "eurosat": {
        "headline": "accuracy",
        "higher_is_better": True,
        "methods": {
            "pimc_linear": {"accuracy": 0.80},
            "random_init_linear": {"accuracy": 0.85},
            "random_init_finetune": {"accuracy": 0.70},
            "pimc_finetune": {"accuracy": 0.82},
        },
    },
}


def test_table_orders_methods_and_leaves_absent_cells_empty():
    table = ablation_table(RESULTS)
    assert list(table.columns) == ["forecast: rmse_mean_std ↓", "eurosat: accuracy ↑"]
    assert list(table.index) == [
        "pimc_linear",
        "pimc_finetune",
        "random_init",
        "random_init_linear",
        "random_init_finetune",
        "persistence",
    ]
    assert table.loc["pimc_finetune", "forecast: rmse_mean_std ↓"] == 0.30
    assert math.isnan(table.loc["persistence", "eurosat: accuracy ↑"])


def test_comparison_follows_each_metric_direction():
    got = pimc_vs_random(RESULTS)
    # forecast: lower wins, best PIMC 0.30 vs best random 0.35 -> better
    assert got["forecast"] == {"pimc": 0.30, "random_init": 0.35, "pimc_better": 1.0}
    # eurosat: higher wins, best PIMC 0.82 vs best random 0.85 -> not better
    assert got["eurosat"] == {"pimc": 0.82, "random_init": 0.85, "pimc_better": 0.0}


def test_report_files(tmp_path):
    files = write_report(ablation_table(RESULTS), pimc_vs_random(RESULTS), tmp_path / "r")
    csv, md = files
    back = pd.read_csv(csv, index_col="method")
    assert back.loc["random_init", "forecast: rmse_mean_std ↓"] == pytest.approx(0.35)
    text = md.read_text()
    assert "| pimc_finetune | 0.3000 | 0.8200 |" in text
    assert "- eurosat: PIMC 0.8200 vs random init 0.8500 → PIMC not ahead" in text
    assert "One seed is an anecdote" in text


def test_headline_metrics_are_the_same_three_keys_for_every_task():
    forecast = headline_metrics(RESULTS["forecast"], "finetune")
    assert forecast == {"pimc": 0.30, "random_init": 0.35, "best_baseline": 0.35}  # lower wins
    eurosat = headline_metrics(RESULTS["eurosat"], "linear")
    assert eurosat == {"pimc": 0.80, "random_init": 0.85, "best_baseline": 0.85}
