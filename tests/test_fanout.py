"""``compute.task_runner: dask``: prepare and recurrence fanned out per patch over a 2-process
LocalCluster (prefect-dask) write exactly what the sequential run writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pimc.core.config import ComputeConfig
from pimc.core.errors import ConfigError
from pimc.core.paths import MANIFEST, META, PATCHES

PARAMS = str(Path(__file__).resolve().parents[1] / "params.yaml")
TIMING = {"seconds", "peak_rss_mib", "rps_per_second"}


def _overrides(data: Path, **compute) -> dict:
    return {
        "data.root": str(data),
        "prepare.out": "prepared",  # relative on purpose: workers must get absolute paths
        "prepare.pixels_per_patch": 24,
        "recurrence.out": "recurrence",
        "recurrence.size": 16,
        "recurrence.materialize": True,
        **{f"compute.{k}": v for k, v in compute.items()},
    }


def _run_both_stages(data: Path, cwd: Path, monkeypatch, **compute) -> tuple[dict, dict]:
    from flows.prepare import prepare_flow
    from flows.recurrence import recurrence_flow

    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the flows write metrics/ and plots/ relative to the cwd
    overrides = _overrides(data, **compute)
    return prepare_flow(PARAMS, overrides), recurrence_flow(PARAMS, overrides)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        return {"": np.load(path)}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_same_folders(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names and names == sorted(p.name for p in (b / "shards").iterdir())
    for name in names:  # includes no leftover temp files: their names would differ
        x, y = _arrays(a / "shards" / name), _arrays(b / "shards" / name)
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (name, key)


def test_dask_fan_out_matches_sequential(prefect_harness, tiny_data, tmp_path, monkeypatch):
    seq_prep, seq_rp = _run_both_stages(tiny_data, tmp_path / "seq", monkeypatch)
    dask_prep, dask_rp = _run_both_stages(
        tiny_data,
        tmp_path / "dask",
        monkeypatch,
        task_runner="dask",
        dask_workers=2,
        patches_per_task=2,
    )
    seq, fan = tmp_path / "seq", tmp_path / "dask"

    _assert_same_folders(seq / "prepared", fan / "prepared")
    for table in (MANIFEST, PATCHES):
        pd.testing.assert_frame_equal(
            pd.read_parquet(seq / "prepared" / table), pd.read_parquet(fan / "prepared" / table)
        )
    meta = [json.loads((d / "prepared" / META).read_text()) for d in (seq, fan)]
    assert meta[0] == meta[1]  # config.out is the same relative path in both
    for key in ("prepared", "recurrence"):
        assert (seq / key / ".fingerprint").read_text() == (fan / key / ".fingerprint").read_text()
    drop = lambda stats: {k: v for k, v in stats.items() if k not in TIMING}  # noqa: E731
    assert drop(seq_prep) == drop(dask_prep) and seq_prep["patches"] == 5
    assert dask_prep["resumed_patches"] == 0

    _assert_same_folders(seq / "recurrence", fan / "recurrence")
    assert drop(seq_rp) == drop(dask_rp) and seq_rp["shards"] == 5
    gallery = "plots/rp_gallery.png"
    assert (seq / gallery).read_bytes() == (fan / gallery).read_bytes()
    seq_metrics = json.loads((seq / "metrics/prepare.json").read_text())
    assert seq_metrics.keys() == json.loads((fan / "metrics/prepare.json").read_text()).keys()

    import distributed

    from flows.prepare import prepare_flow

    def no_cluster(**kwargs):
        raise AssertionError("a Dask cluster was started with no patch left to prepare")

    # Nothing left to do: the fan-out resumes every shard and never starts a cluster.
    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    again = prepare_flow(PARAMS, _overrides(tiny_data, task_runner="dask", dask_workers=2))
    assert drop(again) == {**drop(dask_prep), "resumed_patches": 5}


def test_runner_for_an_existing_scheduler_does_not_connect():
    from prefect_dask import DaskTaskRunner

    from flows.common import dask_task_runner

    address = "tcp://scheduler.invalid:8786"  # never resolvable: building must not connect
    runner = dask_task_runner(ComputeConfig(task_runner="dask", dask_address=address))
    assert isinstance(runner, DaskTaskRunner) and runner.address == address
    assert runner.cluster_class is None and runner._client is None

    local = dask_task_runner(ComputeConfig(task_runner="dask", dask_workers=3))
    assert local.address is None and local.cluster_class == "distributed.LocalCluster"
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["processes"]


def test_unreachable_scheduler_error_names_the_parameter():
    from flows.common import map_in_order

    class _Unreachable:  # what a Prefect task's map does when the Dask client cannot connect
        def map(self, *args, **kwargs):
            raise OSError("Timed out trying to connect to tcp://10.0.0.9:8786 after 30 s")

    compute = ComputeConfig(task_runner="dask", dask_address="tcp://10.0.0.9:8786")
    with pytest.raises(ConfigError, match=r"compute\.dask_address='tcp://10\.0\.0\.9:8786'"):
        map_in_order(_Unreachable(), [1, 2], compute)
    with pytest.raises(ConfigError, match=r"compute\.dask_workers=2"):
        map_in_order(_Unreachable(), [1, 2], ComputeConfig(task_runner="dask"))
