from __future__ import annotations

from pathlib import Path

import pytest

from pimc import tracking
from pimc.core.config import Params
from pimc.core.errors import ModelNotFoundError


def test_run_tags_params_metrics_and_artifacts(env_root):
    params = Params()
    with tracking.start_run("unit", params, experiment="test-tracking") as run:
        run.log_metrics({"loss": 0.5}, step=1)
        run.log_dict({"a": 1}, "stats/info.json")
    got = tracking.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags["pimc.stage"] == "unit"
    assert got.data.tags["git.sha"]
    assert got.data.params["data.synthetic.patch_size"] == str(params.data.synthetic.patch_size)
    assert got.data.metrics["loss"] == 0.5
    artifact_dir = Path(got.info.artifact_uri.removeprefix("file://"))
    assert (artifact_dir / "stats" / "info.json").is_file()
    assert str(artifact_dir).startswith(str(env_root))  # hermetic: artifacts stay in tmp


def test_failed_body_marks_run_failed():
    with pytest.raises(RuntimeError):
        with tracking.start_run("boom", {"x": 1}, experiment="test-tracking") as run:
            raise RuntimeError("stage crashed")
    assert tracking.get_run(run.run_id).info.status == "FAILED"


def test_default_uri_is_absolute_sqlite(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("PIMC_ARTIFACT_ROOT")
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location() == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_a_run_keeps_logging_to_its_own_store(tracking_store, tmp_path, monkeypatch):
    import mlflow

    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        assert run.tracking_uri == tracking_store
        # Another store becomes current mid-run: the run's handle still names its own.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
        run.log_metrics({"loss": 0.25})
    assert tracking.search_runs(experiment="test-tracking") == []  # nothing in the other store
    got = mlflow.MlflowClient(tracking_uri=tracking_store).get_run(run.run_id)
    assert got.data.metrics["loss"] == 0.25 and got.info.status == "FINISHED"


def test_log_register_alias_and_load_model(tracking_store):
    import mlflow
    import numpy as np
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    example = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        meta = {"pimc_task": "unit"}
        tracking_info = run.log_model(
            net, "net", example, registered_model_name="pimc-test-net", metadata=meta
        )
        assert mlflow.active_run() is None  # logged into the given run, none was activated
        run.log_metrics({"after_model": 1.0})  # the run is still open for logging
    assert tracking_info.registered_model_version == 1
    assert tracking_info.run_id == run.run_id
    assert tracking.get_run(run.run_id).info.status == "FINISHED"
    assert tracking.get_alias("pimc-test-net", "champion") is None
    tracking.set_alias("pimc-test-net", "champion", tracking.latest_version("pimc-test-net"))
    assert tracking.get_alias("pimc-test-net", "champion") == "1"
    assert tracking.model_metadata("models:/pimc-test-net@champion") == meta
    loaded = tracking.load_model("models:/pimc-test-net@champion")
    batch = torch.rand(5, 3, 8, 8)  # another batch size than the example: dynamic batch dim
    torch.testing.assert_close(loaded(batch), net(batch))


def test_unknown_models_raise_model_not_found(tracking_store, tmp_path):
    uri = "models:/pimc-nothing@champion"
    with pytest.raises(ModelNotFoundError, match="pimc-nothing"):
        tracking.model_metadata(uri)
    with pytest.raises(ModelNotFoundError, match="pimc-nothing"):
        tracking.load_model(uri)
    with pytest.raises(ModelNotFoundError, match="run the pretrain stage"):
        tracking.run_artifact_of("pimc-nothing", "champion", "checkpoint/last.pt", tmp_path)
    assert tracking.get_alias("pimc-nothing", "champion") is None
    assert tracking.latest_version("pimc-nothing") is None
