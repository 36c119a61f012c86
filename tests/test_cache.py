"""Issue 15: fine-tuning re-runs only the methods that depend on pretraining.

The pretraining-free methods' results (pimc.tasks.cache) are reused when nothing they read
changed, equal what a fresh run computes, and are recomputed when an input, the config or a
damaged entry says so.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from pimc.tasks.forecast import run_forecast
from pimc.tasks.pixel_cls import run_pixel_cls

BASELINES = ("random_init", "cnn1d")  # pimc_finetune is the mode's method, never cached


def _scores(result):
    """Every method's metrics, less the run statistic ``train_seconds``."""
    return {
        m: {k: v for k, v in vals.items() if k != "train_seconds"}
        for m, vals in result["methods"].items()
    }


def _with(params, task, **changes):
    cfg = replace(getattr(params.finetune, task), baselines=BASELINES, **changes)
    return replace(params, finetune=replace(params.finetune, **{task: cfg}))


@pytest.fixture(scope="module")
def first(task_params, tmp_path_factory):
    """A pixel_cls run that fills the cache."""
    root = tmp_path_factory.mktemp("cache")
    params = _with(task_params, "pixel_cls")
    result = run_pixel_cls(params, out_dir=root / "a", progress=False, cache=root / "cache")
    return params, root, result


def test_a_second_run_reuses_exactly_the_pretraining_free_methods(first):
    params, root, a = first
    assert a["cached"] == []
    b = run_pixel_cls(params, out_dir=root / "b", progress=False, cache=root / "cache")
    assert b["cached"] == list(BASELINES)
    assert _scores(b) == _scores(a)  # the same metrics (the PIMC method trained again)
    assert b["methods"]["cnn1d"] == a["methods"]["cnn1d"]  # stored timing included
    assert (root / "b" / "confusion_random_init.png").is_file()
    assert not (root / "b" / "random_init.pt").exists()  # it was not trained
    fresh = run_pixel_cls(params, out_dir=root / "c", progress=False, cache=None)
    assert fresh["cached"] == [] and _scores(fresh) == _scores(b)  # a hit == a recompute


def test_a_pretraining_change_keeps_the_baselines(first):
    params, root, _ = first
    none = replace(params.finetune.pixel_cls, pretrained="none")
    p = replace(params, finetune=replace(params.finetune, pixel_cls=none))
    out = run_pixel_cls(p, out_dir=root / "d", progress=False, cache=root / "cache")
    assert out["cached"] == list(BASELINES) and out["pretrained"] == "none"


def test_a_changed_config_input_or_damaged_entry_is_recomputed(first):
    params, root, _ = first
    cache = root / "cache"
    lr = _with(params, "pixel_cls", lr=0.02)
    assert run_pixel_cls(lr, out_dir=root / "e", progress=False, cache=cache)["cached"] == []
    manifest = os.path.join(params.prepare.out, "pixels.parquet")
    st = os.stat(manifest)
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # "re-prepared"
    try:
        touched = run_pixel_cls(params, out_dir=root / "f", progress=False, cache=cache)
        assert touched["cached"] == []
    finally:
        os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    for entry in (cache / "pixel_cls").glob("random_init-*/result.json"):
        entry.write_text("{truncated")
    again = run_pixel_cls(params, out_dir=root / "g", progress=False, cache=cache)
    assert again["cached"] == ["cnn1d"]


def test_forecast_reuses_its_baselines_and_their_forecasts(task_params, tmp_path):
    params = _with(task_params, "forecast")
    a = run_forecast(params, out_dir=tmp_path / "a", progress=False, cache=tmp_path / "cache")
    b = run_forecast(params, out_dir=tmp_path / "b", progress=False, cache=tmp_path / "cache")
    assert a["cached"] == [] and b["cached"] == list(BASELINES)
    assert _scores(b) == _scores(a)
    assert (tmp_path / "b" / "forecast_examples.png").read_bytes() == (
        tmp_path / "a" / "forecast_examples.png"
    ).read_bytes()
