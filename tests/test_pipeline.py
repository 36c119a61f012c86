"""Integration: the pipeline as users run it, against real MLflow and Prefect servers.

`infra/local/servers.sh` starts `mlflow server` and `prefect server` on free loopback ports; a
fresh git repo holding the project runs `python -m flows.pipeline` (DVC under Prefect), then the
retrain flow twice (promote, then keep the champion), a served deployment, `pimc predict` from
the registry, and DVC's own guarantees (no-op re-run, per-stage invalidation). Both servers are
stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TINY = {
    "data": {
        "synthetic": {
            "pastis_patches": 5,
            "patch_size": 16,
            "max_dates": 42,
            "eurosat_per_class": 5,
        }
    },
    "prepare": {"pixels_per_patch": 32},
    "recurrence": {"materialize": True},  # the stored-plots path end to end (default: off)
    "pretrain": {"epochs": 2, "batch_size": 32, "checkpoint_every": 4},
}
# Promotion is tested here, not label efficiency: every label, one pass per epoch (10 % of 96
# pixels, or 10 steps per epoch over them, would make the retrained model's score noise).
FAST_TASK = {
    "epochs": 2,
    "batch_size": 32,
    "patience": 1,
    "freeze_epochs": 0,
    "label_fraction": 1.0,
    "epoch_steps": None,
}
# The first forecaster is deliberately broken (a learning rate 100x too high: on tiny data a
# barely trained model can score as well as a trained one, so "weak" must mean broken), a
# sensible retraining run must beat it, and a second broken run must not beat that one.
WEAK_FORECAST = {"lr": 1.0, "baselines": ["pimc_linear", "random_init", "persistence"]}
GOOD_RETRAIN = ["-S", "finetune.forecast.lr=0.01", "-S", "finetune.forecast.epochs=4"]
BAD_RETRAIN = ["-S", "finetune.forecast.lr=1.5", "-S", "finetune.forecast.epochs=3"]
FORECASTER, CLASSIFIER = "pimc-pastis-forecaster", "pimc-pastis-classifier"
HEADLINE = "metric.rmse_mean_std"  # lower is better


def sh(*cmd, cwd, timeout=900):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Real `mlflow server` + `prefect server` on free ports; pimc pointed at them."""
    state = tmp_path_factory.mktemp("servers")
    mlflow_port, prefect_port = free_port(), free_port()
    env = {
        "MLFLOW_PORT": str(mlflow_port),
        "PREFECT_PORT": str(prefect_port),
        "PIMC_SERVERS_DIR": str(state),
        "PIMC_VENV": sys.prefix,
    }
    script = REPO / "infra" / "local" / "servers.sh"
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        sh("bash", script, "start", cwd=state, timeout=300)
        pids = {n: int((state / f"{n}.pid").read_text()) for n in ("mlflow", "prefect")}
        mp.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}")
        mp.setenv("PREFECT_API_URL", f"http://127.0.0.1:{prefect_port}/api")
        mp.delenv("PIMC_ARTIFACT_ROOT", raising=False)  # the server stores (proxies) artifacts
        yield {"prefect_api": f"http://127.0.0.1:{prefect_port}/api", "pids": pids}
    finally:
        mp.undo()
        subprocess.run(["bash", script, "stop"], env={**os.environ, **env}, timeout=120)
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        pytest.fail(f"{name} server (pid {pid}) still running after servers.sh stop")


def test_prefect_dashboard_talks_to_its_own_port(servers):
    """servers.sh on a port other than 4200: the UI must be told where its API is."""
    import urllib.request

    base = servers["prefect_api"].removesuffix("/api")
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=30) as resp:
        assert json.load(resp)["api_url"] == servers["prefect_api"]


@pytest.fixture(scope="module")
def project(servers, tmp_path_factory):
    """A git repo with the project's pipeline files and tiny params, run once by the
    pipeline flow."""
    work = tmp_path_factory.mktemp("project")
    for name in ("pimc", "flows"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in ("forecast", "pixel_cls", "eurosat"):
        params["finetune"][name].update(FAST_TASK)
    params["finetune"]["forecast"].update(WEAK_FORECAST)
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=work)
    # A local-folder DVC remote (S3/MinIO in production): the pipeline flow pulls and pushes.
    sh("dvc", "remote", "add", "-d", "storage", str(tmp_path_factory.mktemp("remote")), cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "project", cwd=work)
    out = sh(sys.executable, "-m", "flows.pipeline", cwd=work)
    return work, out


def test_repro_runs_every_stage(project):
    work, _ = project
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert {"data", "prepare", "recurrence", "pretrain"} <= set(lock["stages"])
    report = json.loads((work / "reports" / "data.json").read_text())
    assert report["stats"]["pastis"]["patches"] == 5
    assert (work / "data" / "raw" / "EuroSAT" / "EuroSATallBands.zip").is_file()
    assert json.loads((work / "metrics" / "prepare.json").read_text())["pixels"] == 5 * 32
    assert len(list((work / "data" / "recurrence" / "shards").glob("*.npy"))) == 5
    assert (work / "plots" / "rp_gallery.png").stat().st_size > 1000
    pretrain = json.loads((work / "metrics" / "pretrain.json").read_text())
    assert pretrain["best_epoch"] >= 1 and 0.0 <= pretrain["val/class_top1"] <= 1.0
    assert (work / "data" / "models" / "pretrain" / "last.pt").is_file()
    assert json.loads((work / "plots" / "pretrain_val.json").read_text())
    assert json.loads((work / "plots" / "pretrain_train.json").read_text())
    for task in ("forecast", "pixel_cls", "eurosat"):
        result = json.loads((work / "reports" / f"{task}.json").read_text())
        assert {"pimc_finetune", "pimc_linear"} <= set(result["methods"])
        assert "train_seconds" not in result["methods"]["pimc_finetune"]  # MLflow only
        metrics = json.loads((work / "metrics" / f"{task}.json").read_text())
        assert set(metrics) == {"pimc", "random_init", "best_baseline"}
        assert any((work / "plots" / task).glob("*.png"))
    table = (work / "reports" / "ablations.md").read_text()
    assert "| pimc_finetune |" in table and "PIMC pretraining vs random" in table
    shown = sh("dvc", "metrics", "show", cwd=work)
    assert "metrics/eurosat.json" in shown and "metrics/pretrain.json" in shown
    # Results only, few enough columns for a terminal; no run statistics.
    assert max(map(len, shown.splitlines())) <= 200, shown  # one terminal screen wide
    assert "seconds" not in shown and "resumed" not in shown


def test_pipeline_flow_pushed_every_output_to_the_remote(project):
    work, out = project
    assert "stages run: data, prepare, recurrence, pretrain" in out
    status = subprocess.run(
        [Path(sys.executable).parent / "dvc", "status", "--cloud", "--json"],
        cwd=work, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    shutil.rmtree(work / "data" / "models" / "pretrain")
    sh("dvc", "pull", "data/models/pretrain", cwd=work)  # another machine would do the same
    assert (work / "data" / "models" / "pretrain" / "last.pt").is_file()


def test_stages_are_tracked_and_encoders_registered(project, servers, tmp_path, capsys):
    from pimc import tracking
    from pimc.cli import main as cli_main
    from pimc.models.build import load_pretrained_model

    stages = {r.data.tags["pimc.stage"] for r in tracking.search_runs()}
    assert {"data", "prepare", "recurrence", "pretrain", "finetune@eurosat", "evaluate"} <= stages
    for name in ("pimc-pastis-forecaster", "pimc-pastis-classifier", "pimc-eurosat-classifier"):
        assert tracking.get_alias(name, "champion") is not None
    run = tracking.search_runs("pretrain")[0]
    assert run.data.tags["git.sha"] != "unknown" and "train/loss" in run.data.metrics
    assert run.data.tags["git.inputs_dirty"] == "false"  # the pipeline rewrote only outputs
    assert int(run.data.tags["torch.threads"]) >= 1  # compute.torch_threads, as resolved
    for name in ("pimc-pastis-forecaster-raw", "pimc-pastis-classifier-raw"):  # REST twins
        assert tracking.get_alias(name, "champion") is not None
    # One pipeline run links its stages: the same id on every MLflow run and Prefect flow run.
    (pipeline,) = {r.data.tags.get("pimc.pipeline_run") for r in tracking.search_runs()}
    assert pipeline
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The settings prefect read at import time may predate the servers fixture: say the URL.
    with temporary_settings({PREFECT_API_URL: servers["prefect_api"]}), _prefect_client() as c:
        tagged = c.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"pipeline:{pipeline}"]))
        )
    assert {t for r in tagged for t in r.tags if t.startswith("stage:")} >= {
        "stage:data", "stage:pretrain", "stage:finetune@eurosat", "stage:evaluate"
    }  # fmt: skip
    for name in ("pimc-rp-encoder", "pimc-image-encoder"):
        assert tracking.get_alias(name, "champion") is not None
    encoder = tracking.load_model("models:/pimc-rp-encoder@champion")
    assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 128)
    rows = {(r["name"], r["version"]): r for r in tracking.registered_models()}
    eurosat = rows[("pimc-eurosat-classifier", 1)]
    assert "champion" in eurosat["aliases"] and 0.0 <= float(eurosat["metric.accuracy"]) <= 1.0
    assert "metric.val_top1" in rows[("pimc-rp-encoder", 1)]
    # Registered models say what goes in and out; held-out metrics sit under test/.
    client = tracking._client()
    for name in ("pimc-pastis-classifier", "pimc-rp-encoder"):
        assert "Input: float32" in client.get_registered_model(name).description
        assert "Output" in client.get_model_version(name, "1").description
    eurosat_run = tracking.search_runs("finetune@eurosat")[0]
    assert any(re.fullmatch(r"test/pimc_\w+/accuracy", k) for k in eurosat_run.data.metrics)
    assert not any(k.startswith("test/") and "seconds" in k for k in eurosat_run.data.metrics)
    ckpt = tracking.run_artifact_of("pimc-rp-encoder", "champion", "checkpoint/best.pt", tmp_path)
    model, state = load_pretrained_model(ckpt)
    assert state["step"] > 0 and model.config["rp_channels"] == 3
    assert cli_main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "pimc-pastis-forecaster" in listing and "champion" in listing


def test_second_repro_is_a_no_op(project):
    work, _ = project
    out = sh("dvc", "repro", cwd=work)
    assert "Running stage" not in out
    status = sh("dvc", "status", cwd=work)
    assert "up to date" in status


def _retrain(work, *args):
    return sh(sys.executable, "-m", "flows.retrain", *args, cwd=work)


@pytest.fixture(scope="module")
def retrained(project):
    """The retrain flow run twice on the pipeline's registry: a better forecaster (promoted),
    then a weaker one (kept as challenger). Returns what the registry, the retrain runs and the
    workspace showed after each, so the tests that need retraining do not depend on each other.
    """
    from pimc import tracking

    work, _ = project
    seen = {
        "champion_before": tracking.get_alias(FORECASTER, "champion"),
        "weak": float(tracking.version_tags(FORECASTER, "1")[HEADLINE]),
    }
    for step, args in (("good", GOOD_RETRAIN), ("bad", BAD_RETRAIN)):
        _retrain(work, *args)
        latest = tracking.latest_version(FORECASTER)
        seen[step] = {
            "latest": latest,
            "tags": tracking.version_tags(FORECASTER, latest),
            "champion": tracking.get_alias(FORECASTER, "champion"),
            "challenger": tracking.get_alias(FORECASTER, "challenger"),
            "classifier_latest": tracking.latest_version(CLASSIFIER),
            "run": tracking.search_runs("retrain")[0],
            "params": yaml.safe_load((work / "params.yaml").read_text()),
            "status": sh("dvc", "status", cwd=work),
        }
    seen["experiments"] = sh("dvc", "exp", "show", "--csv", cwd=work)
    return seen


def test_retrain_promotes_a_better_model_then_keeps_the_champion(retrained):
    assert retrained["champion_before"] == "1"  # first version, by default
    weak, good_run, bad_run = retrained["weak"], retrained["good"], retrained["bad"]

    tags = good_run["tags"]
    good = float(tags[HEADLINE])
    assert good_run["latest"] == "2"
    assert good < weak - 0.002, f"retraining did not improve the forecaster: {weak} -> {good}"
    assert good_run["champion"] == "2"
    assert tags["retrain.decision"] == "promoted" and tags["retrain.replaced"] == "1"
    # only the forecaster's params changed: no new classifier/EuroSAT version was made
    assert good_run["classifier_latest"] == "1"
    run = good_run["run"]
    assert "no new version" in run.data.tags["decision.pixel_cls"]
    assert run.data.metrics["forecast/promoted"] == 1.0

    tags = bad_run["tags"]
    assert bad_run["latest"] == "3"
    assert bad_run["champion"] == "2" and bad_run["challenger"] == "3"
    assert tags["retrain.decision"] == "challenger" and "<= margin" in tags["challenger"]
    assert float(tags[HEADLINE]) > good
    assert bad_run["run"].data.metrics["forecast/promoted"] == 0.0
    # the rejected experiment was rolled back: the workspace is the champion's again
    assert bad_run["params"]["finetune"]["forecast"]["lr"] == 0.01
    assert "up to date" in bad_run["status"]
    # DVC recorded both retraining runs as experiments
    assert "finetune.forecast.lr" in retrained["experiments"]


def _prefect_client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_flow_runs_completed_and_served_deployment_has_cron(project, servers, retrained):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    work, _ = project
    with temporary_settings({PREFECT_API_URL: servers["prefect_api"]}), _prefect_client() as c:
        names = {f.id: f.name for f in c.read_flows()}
        runs = c.read_flow_runs()
        by_flow: dict[str, list[str]] = {}
        for run in runs:
            by_flow.setdefault(names[run.flow_id], []).append(run.state.type.value)
        for flow in ("pimc-pipeline", "pimc-retrain", "pimc-data", "pimc-finetune"):
            assert flow in by_flow, f"no {flow} run on the server: {sorted(by_flow)}"
        states = {s for flow_states in by_flow.values() for s in flow_states}
        assert states == {"COMPLETED"}, by_flow
        assert len(by_flow["pimc-retrain"]) == 2

        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.retrain", "serve", "--cron", "0 3 * * 1",
             "--name", "weekly-test"],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            deployment = None
            for _ in range(120):
                assert serve.poll() is None, serve.stdout.read()
                try:
                    deployment = c.read_deployment_by_name("pimc-retrain/weekly-test")
                    break
                except Exception:  # ObjectNotFound until serve has registered it
                    time.sleep(0.5)
            assert deployment is not None, "serve did not create the deployment in 60 s"
            crons = [s.schedule.cron for s in deployment.schedules]
            assert crons == ["0 3 * * 1"]
            assert deployment.parameters["repo"] == str(work.resolve())
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)


def test_predict_from_the_registry_writes_a_georeferenced_map(project, tmp_path, capsys):
    from pimc.cli import main as cli_main
    from pimc.predict import load_deployed

    work, _ = project
    pastis = work / "data" / "raw" / "PASTIS"
    s2 = sorted((pastis / "DATA_S2").glob("S2_*.npy"))[0]
    out = tmp_path / "map.tif"
    argv = ["predict", "--model", f"{CLASSIFIER}@champion", "--patch", str(s2), "--out", str(out)]
    assert cli_main([*argv, "--quiet"]) == 0, capsys.readouterr().err
    _, meta = load_deployed(f"{CLASSIFIER}@champion")
    geo = json.loads((pastis / "metadata.geojson").read_text())
    pid = int(s2.stem.removeprefix("S2_"))
    ring = np.asarray(
        next(f for f in geo["features"] if f["properties"]["ID_PATCH"] == pid)["geometry"][
            "coordinates"
        ][0]
    )
    with rasterio.open(out) as src:
        assert src.crs is not None and src.crs.to_epsg() == 2154
        assert not src.transform.is_identity
        assert (src.bounds.left, src.bounds.top) == pytest.approx(
            (ring[:, 0].min(), ring[:, 1].max())
        )
        assert src.transform.a == pytest.approx(-src.transform.e)  # square pixels
        classes = src.read(1)
    assert classes.shape == (16, 16)
    assert set(np.unique(classes).tolist()) <= set(meta["class_ids"])
    assert max(meta["class_ids"]) < 20
    assert (tmp_path / "map.png").is_file()

    fc = tmp_path / "forecast.tif"
    assert cli_main(["predict", "--model", FORECASTER, "--patch", str(s2),
                     "--out", str(fc), "--quiet"]) == 0  # fmt: skip
    with rasterio.open(fc) as src:
        assert src.count == 3 * 10 and src.crs.to_epsg() == 2154


def test_task_param_change_touches_only_that_task(project):
    work, _ = project
    original = (work / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["finetune"]["eurosat"]["lr"] = 0.005
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = sh("dvc", "status", cwd=work)
    finally:
        (work / "params.yaml").write_text(original)  # the next test sees the project unchanged
    assert "finetune@eurosat" in status
    assert "finetune@forecast" not in status and "finetune@pixel_cls" not in status
    assert "pretrain:" not in status


def test_finetune_from_the_registry(project):
    from pimc import tracking

    work, _ = project
    before = len(tracking.search_runs("finetune@eurosat"))
    sh(
        sys.executable,
        "-m",
        "flows.finetune",
        "eurosat",
        "-S",
        "finetune.eurosat.pretrained=registry",
        cwd=work,
    )
    runs = tracking.search_runs("finetune@eurosat")
    assert len(runs) == before + 1
    # the checkpoint came from the champion encoder's run, downloaded by the flow
    tag = runs[0].data.tags["pretrained"]
    assert tag.startswith("checkpoint:") and "data/models/eurosat/registry" in tag


def test_changing_a_recurrence_param_reruns_only_recurrence(project):
    from flows.pipeline import restore_workspace, snapshot_workspace

    work, _ = project
    saved = snapshot_workspace(work)
    try:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["recurrence"]["size"] = 24
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = sh("dvc", "repro", "recurrence", cwd=work)  # the stages after it would follow
        shard = next((work / "data" / "recurrence" / "shards").glob("*.npy"))
        side = np.load(shard).shape[-1]
    finally:
        restore_workspace(work, saved)  # params, lock and outputs as the other tests expect
    assert "Running stage 'recurrence'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'data'" not in out
    assert side == 24
