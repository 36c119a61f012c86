from __future__ import annotations

import os
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


def test_params_as_json_experiment_kind_and_pipeline_link(monkeypatch):
    from pimc.core.task_config import PixelClsConfig

    monkeypatch.setenv(tracking.PIPELINE_RUN_ENV, "flow-run-42")
    with tracking.start_run(
        "unit", {"finetune.pixel_cls": PixelClsConfig()}, experiment="kind"
    ) as r:
        pass
    got = tracking.get_run(r.run_id)
    assert got.data.params["finetune.pixel_cls.train_folds"] == "[1, 2, 3]"  # not "(1, 2, 3)"
    assert got.data.params["finetune.pixel_cls.keep_background"] == "true"
    assert got.data.params["finetune.pixel_cls.rotation"] == "null"
    assert got.data.params["finetune.pixel_cls.lr"] == "0.01"
    assert got.data.tags["pimc.pipeline_run"] == "flow-run-42"
    exp = tracking._client().get_experiment(r.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_git_tags_say_whether_the_inputs_not_the_outputs_are_dirty(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    clean = tracking.git_tags()
    assert clean["git.inputs_dirty"] == "false" and len(clean["git.sha"]) == 40
    assert clean["mlflow.source.git.commit"] == clean["git.sha"]
    (tmp_path / "dvc.lock").write_text("rewritten by the pipeline\n")
    assert tracking.git_tags() == clean  # an output changed: inputs still clean
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert tracking.git_tags()["git.inputs_dirty"] == "true"
    monkeypatch.chdir(tmp_path.parent)
    assert tracking.git_tags()["git.sha"] == "unknown"


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


class _Payload:
    """Unpickling this runs ``open(<marker>, "w")``: proof that code ran on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("attack", ["pickled_model", "pt2_sample_inputs"])
def test_a_tampered_model_is_refused_before_any_code_runs(tracking_store, tmp_path, attack):
    import pickle
    import zipfile

    import numpy as np
    import torch

    from pimc.core.errors import UntrustedModelError

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    example = np.zeros((2, 3, 8, 8), dtype=np.float32)
    with tracking.start_run("unit", {}, experiment="test-tamper") as run:
        info = run.log_model(net, "net", example, registered_model_name="pimc-tamper")
    where = tracking._client().get_logged_model(info.model_id).artifact_location
    (pt2,) = Path(where.removeprefix("file://")).rglob("model.pt2")  # what an attacker edits
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    if attack == "pickled_model":  # what MLflow's pickle flavour would load: model.pth
        pt2.unlink()
        (pt2.parent / "model.pth").write_bytes(payload)
        (pt2.parent / "pickle_module_info.txt").write_text("pickle")
    else:  # a valid program whose sample inputs record is swapped for a payload
        rebuilt = pt2.with_suffix(".new")
        with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(rebuilt, "w") as dst:
            names = [n for n in src.namelist() if "sample_inputs" in n and n.endswith(".pt")]
            assert names, src.namelist()
            for item in src.infolist():
                data = payload if item.filename in names else src.read(item.filename)
                dst.writestr(item, data)
        rebuilt.replace(pt2)
    with pytest.raises(UntrustedModelError, match="refused to load"):
        tracking.load_model("models:/pimc-tamper/1")
    assert not marker.exists()


def _net_and_example():
    import numpy as np
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    return net, np.zeros((2, 3, 2, 2), dtype=np.float32)


def test_a_retried_registration_returns_the_first_version(tracking_store):
    """Issue 13: a retried register task must not add a duplicate version of one run."""
    net, example = _net_and_example()
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        first = run.register_model(net, "net", example, "pimc-once")
        again = run.register_model(net, "net", example, "pimc-once")
    assert first == again == "1"
    assert [r["version"] for r in tracking.registered_models("pimc-once")] == [1]


def test_a_rerun_logging_the_same_model_reuses_its_version(tracking_store):
    """Issue 13: a stage DVC re-runs after an outage used to register its models again."""
    import torch

    net, example = _net_and_example()
    digest = tracking.weights_digest(net, {"a": 1})
    versions = []
    for _ in range(2):  # two runs, e.g. a stage and its re-run, with identical weights
        with tracking.start_run("unit", {}, experiment="test-tracking") as run:
            versions.append(run.register_model(net, "net", example, "pimc-rerun", {"a": 1}))
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        other_meta = run.register_model(net, "net", example, "pimc-rerun", {"a": 2})
    with torch.no_grad():
        net[1].bias += 1
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        other_weights = run.register_model(net, "net", example, "pimc-rerun", {"a": 1})
    assert versions == ["1", "1"] and (other_meta, other_weights) == ("2", "3")
    assert tracking.version_tags("pimc-rerun", 1)["pimc.weights"] == digest
    tracking.tag_version("pimc-rerun", 3, {"pimc.orphan": "its run was killed"})
    with tracking.start_run("unit", {}, experiment="test-tracking") as run:
        assert run.register_model(net, "net", example, "pimc-rerun", {"a": 1}) == "4"


def test_runs_left_running_by_a_dead_process_are_marked_killed(tracking_store):
    """Issue 13: 5 kill -9s used to leave 5 runs RUNNING forever (and orphan versions)."""
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    client = tracking._client()
    exp = tracking._experiment_id(client, "test-killed")

    def leftover(pid):
        tags = {"pimc.stage": "pretrain", "pimc.host": socket.gethostname(), "pimc.pid": str(pid)}
        return client.create_run(exp, tags=tags).info.run_id

    killed, alive = leftover(dead.pid), leftover(os.getpid())
    client.create_registered_model("pimc-orphaned")
    client.create_model_version("pimc-orphaned", "file:///nowhere", run_id=killed)
    with tracking.start_run("pretrain", {}, experiment="test-killed") as run:
        pass
    assert tracking.get_run(killed).info.status == "KILLED"
    assert tracking.get_run(alive).info.status == "RUNNING"  # a live process: not touched
    assert tracking.get_run(run.run_id).info.status == "FINISHED"
    assert "pimc.orphan" in tracking.version_tags("pimc-orphaned", 1)


def test_a_dead_tracking_server_fails_fast_with_one_line(monkeypatch):
    """Issue 13: a stopped server used to stall a stage for 285-521 s before a traceback."""
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        with tracking.start_run("unit", {}, experiment="test-outage"):
            pass
    assert time.monotonic() - start < 60
    line = tracking.outage_message(caught.value)
    assert line is not None and line.startswith(f"the MLflow tracking server at {uri} did not")
    assert tracking.outage_message(ValueError("Connection refused")) is not None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking.outage_message(ValueError("Connection refused")) is None  # not a server


def test_versions_registered_by_a_failed_run_are_tagged_orphans(tracking_store):
    net, example = _net_and_example()
    with pytest.raises(RuntimeError, match="after registering"):
        with tracking.start_run("unit", {}, experiment="test-tracking") as run:
            version = run.register_model(net, "net", example, "pimc-failed")
            raise RuntimeError("the stage failed after registering")
    assert tracking.get_run(run.run_id).info.status == "FAILED"
    assert "failed" in tracking.version_tags("pimc-failed", version)["pimc.orphan"]
