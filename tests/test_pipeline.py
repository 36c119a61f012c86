"""`dvc repro` end to end, the way a user runs it: a fresh git repo holding the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

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
    "pretrain": {"epochs": 2, "batch_size": 32, "checkpoint_every": 4},
}
FAST_TASK = {"epochs": 2, "batch_size": 32, "patience": 1, "freeze_epochs": 0}


def sh(*cmd, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repo with the project's pipeline files and tiny params, `dvc repro`-ed once."""
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
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "project", cwd=work)
    out = sh("dvc", "repro", cwd=work)
    return work, out


def test_repro_runs_every_stage(project):
    work, _ = project
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert {"data", "prepare", "recurrence", "pretrain"} <= set(lock["stages"])
    metrics = json.loads((work / "metrics" / "data.json").read_text())
    assert metrics["pastis_patches"] == 5
    assert (work / "data" / "raw" / "EuroSAT" / "EuroSATallBands.zip").is_file()
    assert json.loads((work / "metrics" / "prepare.json").read_text())["pixels"] == 5 * 32
    assert len(list((work / "data" / "recurrence" / "shards").glob("*.npy"))) == 5
    assert (work / "plots" / "rp_gallery.png").stat().st_size > 1000
    pretrain = json.loads((work / "metrics" / "pretrain.json").read_text())
    assert pretrain["steps"] > 0 and 0.0 <= pretrain["val/top1"] <= 1.0
    assert (work / "data" / "models" / "pretrain" / "last.pt").is_file()
    assert json.loads((work / "plots" / "pretrain_val.json").read_text())
    for task in ("forecast", "pixel_cls", "eurosat"):
        result = json.loads((work / "metrics" / f"{task}.json").read_text())
        assert {"pimc_finetune", "pimc_linear"} <= set(result["methods"])
        assert any((work / "plots" / task).glob("*.png"))
    table = (work / "reports" / "ablations.md").read_text()
    assert "| pimc_finetune |" in table and "PIMC pretraining vs random" in table
    shown = sh("dvc", "metrics", "show", cwd=work)
    assert "metrics/eurosat.json" in shown and "metrics/pretrain.json" in shown


def test_stages_are_tracked_and_encoders_registered(project, tmp_path, capsys):
    from pimc import tracking
    from pimc.cli import main as cli_main
    from pimc.pretrain import load_pretrained_model

    stages = {r.data.tags["pimc.stage"] for r in tracking.search_runs()}
    assert {"data", "prepare", "recurrence", "pretrain", "finetune@eurosat", "evaluate"} <= stages
    for name in ("pimc-pastis-forecaster", "pimc-pastis-classifier", "pimc-eurosat-classifier"):
        assert tracking.get_alias(name, "champion") is not None
    run = tracking.search_runs("pretrain")[0]
    assert run.data.tags["git.sha"] != "unknown" and "train/loss" in run.data.metrics
    for name in ("pimc-rp-encoder", "pimc-image-encoder"):
        assert tracking.get_alias(name, "champion") is not None
    encoder = tracking.load_model("models:/pimc-rp-encoder@champion")
    assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 128)
    rows = {(r["name"], r["version"]): r for r in tracking.registered_models()}
    eurosat = rows[("pimc-eurosat-classifier", 1)]
    assert "champion" in eurosat["aliases"] and 0.0 <= float(eurosat["metric.accuracy"]) <= 1.0
    assert "metric.val_top1" in rows[("pimc-rp-encoder", 1)]
    ckpt = tracking.run_artifact_of("pimc-rp-encoder", "champion", "checkpoint/last.pt", tmp_path)
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


def test_task_param_change_touches_only_that_task(project):
    work, _ = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["finetune"]["eurosat"]["lr"] = 0.005
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh("dvc", "status", cwd=work)
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
    work, _ = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["recurrence"]["size"] = 24
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", "recurrence", cwd=work)  # the stages after it would follow
    assert "Running stage 'recurrence'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'data'" not in out
    shard = next((work / "data" / "recurrence" / "shards").glob("*.npy"))
    assert np.load(shard).shape[-1] == 24
