from __future__ import annotations

from pathlib import Path

import pytest

from pimc import tracking
from pimc.core.config import Params


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


def test_log_register_alias_and_load_model():
    import numpy as np
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    example = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        tracking_info = run.log_model(net, "net", example, registered_model_name="pimc-test-net")
        run.log_metrics({"after_model": 1.0})  # the run is still open for logging
    assert tracking_info.registered_model_version == 1
    assert tracking.get_run(run.run_id).info.status == "FINISHED"
    assert tracking.get_alias("pimc-test-net", "champion") is None
    tracking.set_alias("pimc-test-net", "champion", tracking.latest_version("pimc-test-net"))
    assert tracking.get_alias("pimc-test-net", "champion") == "1"
    loaded = tracking.load_model("models:/pimc-test-net@champion")
    batch = torch.rand(5, 3, 8, 8)  # another batch size than the example: dynamic batch dim
    torch.testing.assert_close(loaded(batch), net(batch))
