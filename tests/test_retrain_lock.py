"""Two retrainings at once: the second fails at once with one line, touching nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flows.retrain as retrain
from pimc.core.errors import UsageError
from tests.helpers import REPO


def test_a_second_retraining_fails_before_it_touches_the_workspace(tmp_path, monkeypatch):
    def touched(*args, **kwargs):
        raise AssertionError("the second retraining went past the lock")

    for name in ("load_params", "registry_snapshot", "snapshot_workspace", "pipeline_flow"):
        monkeypatch.setattr(retrain, name, touched)
    with retrain.retrain_lock(tmp_path) as lock:
        with pytest.raises(UsageError, match=r"another retraining is running .*pid \d+"):
            retrain.retrain_flow.fn(repo=str(tmp_path))
        # Another process (a second `python -m flows.retrain`) is refused with one line too.
        code = (
            "import sys, flows.retrain as r\n"
            "try:\n    r.retrain_lock(sys.argv[1]).__enter__()\n"
            "except Exception as e:\n    sys.exit(f'retrain: {e}')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 1 and str(lock) in proc.stderr
    with retrain.retrain_lock(tmp_path):  # released: the next one runs
        pass
