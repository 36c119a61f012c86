"""The DVC remote workflow of infra/README.md, end to end on a local-folder remote.

A local remote stands in for s3://dvc/pimc: push, lose the workspace copy and the cache, pull,
get the same bytes back. The S3 remote's settings are checked for where they land, since its
credentials must stay out of the committed .dvc/config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DVC = Path(sys.executable).parent / "dvc"


@pytest.fixture
def repo(tmp_path) -> Path:
    """A fresh git + DVC repo in a temp folder (nothing of the project's repo is touched)."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    root = tmp_path / "repo"
    root.mkdir()
    _run(["git", "init", "--quiet"], root)
    _dvc(root, "init", "--quiet")
    return root


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run([str(DVC), *args], cwd)


def _cloud_status(cwd: Path) -> dict:
    return json.loads(_dvc(cwd, "status", "--cloud", "--json") or "{}")


def test_push_then_pull_restores_identical_bytes(repo, tmp_path):
    remote = tmp_path / "remote"
    payload = os.urandom(4096) + b"\x00pimc\n"
    data = repo / "data"
    data.mkdir()
    (data / "tiny.bin").write_bytes(payload)

    _dvc(repo, "add", "--quiet", "data/tiny.bin")
    _dvc(repo, "remote", "add", "--default", "local", str(remote))
    assert _cloud_status(repo) == {"data/tiny.bin": "new"}, "nothing pushed yet"

    _dvc(repo, "push", "--quiet")
    assert any(p.is_file() for p in remote.rglob("*")), f"dvc push left {remote} empty"

    (data / "tiny.bin").unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    _dvc(repo, "pull", "--quiet")

    assert (data / "tiny.bin").read_bytes() == payload
    assert _cloud_status(repo) == {}
    assert json.loads(_dvc(repo, "status", "--json")) == {}, "workspace differs from dvc.lock"


def test_s3_remote_credentials_stay_local(repo):
    """The README's commands: url committed in .dvc/config, endpoint and keys in config.local."""
    _dvc(repo, "remote", "add", "--default", "storage", "s3://dvc/pimc")
    _dvc(repo, "remote", "modify", "--local", "storage", "endpointurl", "http://127.0.0.1:9000")
    _dvc(repo, "remote", "modify", "--local", "storage", "access_key_id", "pimc")
    _dvc(repo, "remote", "modify", "--local", "storage", "secret_access_key", "not-a-secret")

    committed = (repo / ".dvc" / "config").read_text()
    local = (repo / ".dvc" / "config.local").read_text()
    assert "s3://dvc/pimc" in committed
    assert "not-a-secret" not in committed and "access_key_id" not in committed
    assert "secret_access_key = not-a-secret" in local
    assert "endpointurl = http://127.0.0.1:9000" in local
    # git must not pick up config.local (dvc init writes .dvc/.gitignore for that).
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".dvc/config.local"], cwd=repo, capture_output=True
    )
    assert ignored.returncode == 0, ".dvc/config.local is not git-ignored"
