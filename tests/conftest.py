"""Hermetic test environment: Prefect, MLflow, DVC and git write only under a temp folder.

The environment is set at import time, before any test module imports prefect or mlflow,
because both read some settings once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_ENV_ROOT = Path(tempfile.mkdtemp(prefix="pimc-tests-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_ENV_ROOT / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{_ENV_ROOT / 'mlflow.db'}",
        "PIMC_ARTIFACT_ROOT": str(_ENV_ROOT / "mlartifacts"),
        "DVC_NO_ANALYTICS": "1",
        "MPLBACKEND": "Agg",
        "GIT_AUTHOR_NAME": "pimc-tests",
        "GIT_AUTHOR_EMAIL": "tests@pimc.invalid",
        "GIT_COMMITTER_NAME": "pimc-tests",
        "GIT_COMMITTER_EMAIL": "tests@pimc.invalid",
    }
)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ENV_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_download_backoff(monkeypatch):
    """Retries of failed downloads wait seconds in real life; not in tests."""
    import pimc.data.download

    monkeypatch.setattr(pimc.data.download, "_RETRY_BACKOFF_S", 0.0)


@pytest.fixture(scope="session")
def env_root() -> Path:
    """The session's temp folder holding PREFECT_HOME, mlflow.db and artifacts."""
    return _ENV_ROOT


@pytest.fixture(scope="module")
def prefect_harness():
    """A temporary Prefect server for a module's in-process flow tests.

    Module- rather than session-scoped: while it runs, its threads and at-fork hooks live in
    the test process, and forked DataLoader workers of later tests die on start.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (both layouts) written once per session; treat as read-only."""
    from pimc.data.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path_factory.mktemp("raw")
    spec = SyntheticSpec(
        seed=0, pastis_patches=5, patch_size=16, min_dates=38, max_dates=45, eurosat_per_class=5
    )
    write_synthetic(root, spec, progress=False)
    return root


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> str:
    """A fresh MLflow store (SQLite + artifacts) for one test; returns its tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIMC_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    return uri


@pytest.fixture
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of :func:`tiny_data` that a test may corrupt."""
    dest = tmp_path / "raw"
    shutil.copytree(tiny_data, dest)
    return dest


#: Fine-tuning settings of :func:`task_params`: 2 epochs, small batches.
TASK_FAST = {"epochs": 2, "batch_size": 32, "patience": 5, "freeze_epochs": 1}


@pytest.fixture(scope="module")
def task_params(tiny_data, tmp_path_factory):
    """Params of a tiny task run: prepared pairs (32 px per patch, one patch per fold), RP
    shards, a 1-epoch pretrain and 2-epoch fine-tuning (one copy per test module)."""
    from pimc.core.config import load_params
    from pimc.core.paths import pastis_root
    from pimc.stages.prepare import run_prepare
    from pimc.stages.pretrain import pretrain
    from pimc.stages.recurrence import run_recurrence

    root = tmp_path_factory.mktemp("tasks")
    overrides = {
        "data.root": str(tiny_data),
        "prepare.pixels_per_patch": 32,
        "prepare.out": str(root / "prepared"),
        "recurrence.out": str(root / "recurrence"),
        "pretrain.out": str(root / "pretrain"),
        "pretrain.epochs": 1,
        "pretrain.batch_size": 32,
        "pretrain.warmup_steps": 1,
    }
    for task in ("forecast", "pixel_cls", "eurosat"):
        overrides.update({f"finetune.{task}.{k}": v for k, v in TASK_FAST.items()})
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml", overrides)
    run_prepare(pastis_root(tiny_data), p.prepare, progress=False)
    run_recurrence(p.prepare.out, p.recurrence, root / "gallery.png", progress=False)
    pretrain(p, progress=False)
    return p
