"""The benchmark stage end to end on tiny data: replicates, cells, resume, report, plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pimc.core.config import load_params
from pimc.stages.benchmark import run_benchmark, seed_params
from pimc.stages.benchmark_report import write_outputs
from tests.helpers import REPO

FRACTIONS = [0.5, 1.0]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Three seeds of a tiny pipeline, two label budgets, two or three methods per task."""
    root = tmp_path_factory.mktemp("bench")
    overrides = {
        "data.synthetic.pastis_patches": 5,
        "data.synthetic.patch_size": 16,
        "data.synthetic.max_dates": 42,
        "data.synthetic.eurosat_per_class": 5,
        "prepare.pixels_per_patch": 24,
        "pretrain.epochs": 1,
        "pretrain.batch_size": 24,
        "pretrain.warmup_steps": 1,
        "benchmark.seeds": [0, 1, 2],
        "benchmark.label_fractions": FRACTIONS,
        "benchmark.forecast": ["random_init", "cnn1d"],
        "benchmark.pixel_cls": [
            "random_init",
            "cnn1d_nolevel",
            "random_init_normalized",
            "rp_ssl_finetune",
        ],
        "benchmark.eurosat": ["random_init_finetune"],
        "benchmark.out": str(root / "benchmark"),
    }
    for task in ("forecast", "pixel_cls", "eurosat"):
        overrides.update({f"finetune.{task}.{k}": v for k, v in
                          {"epochs": 2, "epoch_steps": 2, "batch_size": 16}.items()})  # fmt: skip
    params = load_params(REPO / "params.yaml", overrides)
    rows = run_benchmark(params, progress=False, log=lambda _: None)
    return params, rows, root


def test_every_seed_fraction_task_and_method_has_a_row(bench):
    params, rows, _ = bench
    assert sorted(rows["seed"].unique()) == [0, 1, 2]
    per_cell = rows.groupby(["seed", "label_fraction", "task"])["method"].apply(sorted)
    assert len(per_cell) == 3 * len(FRACTIONS) * 3
    for (_, _, task), methods in per_cell.items():
        want = {"forecast": ["cnn1d", "pimc_finetune", "random_init"],
                "pixel_cls": ["cnn1d_nolevel", "pimc_finetune", "random_init",
                              "random_init_normalized", "rp_ssl_finetune"],
                "eurosat": ["pimc_finetune", "random_init_finetune"]}[task]  # fmt: skip
        assert methods == want
    assert rows["value"].notna().all() and (rows["best_epoch"] >= 1).all()


def test_replicates_differ_and_budgets_apply(bench):
    params, rows, _ = bench
    a, b = seed_params(params, 0), seed_params(params, 1)
    assert a.data.root != b.data.root and a.pretrain.out != b.pretrain.out
    assert (a.data.seed, a.prepare.seed, a.pretrain.seed, a.finetune.eurosat.seed) == (0,) * 4
    base = params.benchmark.out
    m0 = pd.read_parquet(f"{base}/seed0/prepared/pixels.parquet")
    m1 = pd.read_parquet(f"{base}/seed1/prepared/pixels.parquet")
    assert not m0[["row", "col", "label"]].equals(m1[["row", "col", "label"]])  # new data
    cell = Path(base, "seed0", "pixel_cls")
    res = json.loads((cell / "labels0.5" / "results.json").read_text())
    full = json.loads((cell / "labels1" / "results.json").read_text())
    assert res["methods"]["cnn1d_nolevel"] != full["methods"]["cnn1d_nolevel"]  # other labels
    # Each seed's RP-only pretraining: its own folder and objective, no image tower kept.
    views = Path(base, "seed0", "pretrain_rp_views")
    config = torch.load(views / "best.pt", weights_only=True)["config"]
    assert config["pretrain"]["objective"] == "rp_views"
    assert (views / "rp_encoder.pt").is_file() and not (views / "image_encoder.pt").exists()
    mine = torch.load(views / "rp_encoder.pt", weights_only=True)
    pimc = torch.load(Path(base, "seed0", "pretrain", "rp_encoder.pt"), weights_only=True)
    assert mine.keys() == pimc.keys()
    assert any(not torch.equal(mine[k], pimc[k]) for k in mine)  # another pretraining


def test_the_normalisation_ablation_sees_other_plots(bench):
    """random_init_normalized differs from random_init only in its [0, 1]-scaled plots."""
    _, rows, _ = bench
    wide = rows[rows.task == "pixel_cls"].pivot_table(
        index=["seed", "label_fraction"], columns="method", values="value"
    )
    assert (wide["random_init"] != wide["random_init_normalized"]).any()


def test_rerun_reuses_finished_cells(bench):
    params, rows, _ = bench
    cell = Path(params.benchmark.out, "seed2", "forecast", "labels1", "results.json")
    before, stamp = cell.read_text(), cell.stat().st_mtime_ns
    again = run_benchmark(params, progress=False, log=lambda _: None)
    assert cell.stat().st_mtime_ns == stamp and cell.read_text() == before
    pd.testing.assert_frame_equal(again, rows)


def test_report_plot_and_metrics(bench, tmp_path):
    _, rows, _ = bench
    out = write_outputs(rows, tmp_path / "reports", tmp_path / "le.png", tmp_path / "m.json")
    text = (tmp_path / "reports" / "benchmark.md").read_text()
    assert "## pixel_cls: macro_f1 ↑" in text and "## forecast: rmse_mean_std ↓" in text
    assert "| pixel_cls | 0.5 | pimc_finetune | random_init |" in text
    assert "| pixel_cls | 1 | random_init | random_init_normalized |" in text
    assert "| pixel_cls | 1 | rp_ssl_finetune | random_init |" in text
    assert "Latest best epoch over seeds and budgets (early stopping on val, 2 epochs)" in text
    comp = out["comparisons"]
    assert set(comp["verdict"]) <= {"better", "worse", "no evidence"} and (comp["n"] == 3).all()
    back = pd.read_csv(tmp_path / "reports" / "benchmark.csv")
    assert len(back) == len(rows)
    assert (tmp_path / "le.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "pixel_cls/labels0.5/pimc_finetune_vs_random_init/p" in metrics
    s = out["summary"]
    row = s[(s.task == "eurosat") & (s.method == "pimc_finetune") & (s.label_fraction == 1.0)]
    vals = rows[(rows.task == "eurosat") & (rows.method == "pimc_finetune")
                & (rows.label_fraction == 1.0)]["value"]  # fmt: skip
    assert row["mean"].item() == pytest.approx(vals.mean()) and row["n"].item() == 3


def test_a_foreign_folder_is_never_deleted(tmp_path):
    from dataclasses import replace

    params = load_params(REPO / "params.yaml")
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    params = replace(params, benchmark=replace(params.benchmark, out=str(precious)))
    with pytest.raises(FileExistsError, match="pimc did not write"):
        run_benchmark(params, progress=False, log=lambda _: None)
    assert (precious / "thesis.tex").read_text() == "do not delete"
