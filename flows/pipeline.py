"""The whole pipeline as one Prefect flow, run through DVC.

    python -m flows.pipeline                                # dvc repro
    python -m flows.pipeline -S finetune.eurosat.lr=0.005   # dvc exp run -S ... (an experiment)

Prefect schedules and observes; DVC keeps caching and lineage: only stages whose dependencies
or params changed run, each as its own flow (``flows/<stage>.py``) logging to MLflow. With a
default DVC remote configured, cached outputs are pulled first and new ones pushed after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.common import add_override_args
from pimc import tracking
from pimc.core.errors import CommandError, PimcError
from pimc.core.paths import METRICS_DIR
from pimc.core.typed_config import parse_overrides

TAIL = 4000  # characters of a failed DVC command's output kept in the error


def _env() -> dict[str, str]:
    # Stage commands say `python`: it must be this interpreter (the project's venv).
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    run_id = flow_run.get_id()
    if run_id:  # the stages' flow and MLflow runs are tagged with it (see flows.common)
        env[tracking.PIPELINE_RUN_ENV] = str(run_id)
    api = _ephemeral_api_url()
    if api and not env.get("PREFECT_API_URL"):
        env["PREFECT_API_URL"] = api
    return env


def _ephemeral_api_url() -> str | None:
    """The URL of the temporary Prefect server this process started (no server configured),
    or None. Handing it to the stages saves each of them starting its own (~10 s each)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)  # the default, random-port instance
    return server.api_url if server is not None and server.running else None


def dvc(args: Sequence[str], repo: str | Path, log: Callable[[str], Any] | None = None) -> str:
    """Run ``dvc <args>`` in ``repo``, passing each output line to ``log`` as it comes (stages
    run for minutes: their output should stream, not arrive at the end).

    Returns:
        The whole output.

    Raises:
        CommandError: DVC failed; the message holds the command and the output's tail.
    """
    exe = Path(sys.executable).parent / "dvc"
    cmd = [str(exe) if exe.exists() else "dvc", *args]
    lines = []
    with subprocess.Popen(
        cmd, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            lines.append(line)
            if log is not None:
                log(line.rstrip())
    out = "".join(lines)
    if proc.returncode != 0:
        raise CommandError(f"`{' '.join(['dvc', *args])}` failed in {repo}:\n{out[-TAIL:]}")
    return out


def has_remote(repo: str | Path) -> bool:
    """Whether the repo has a default DVC remote (``dvc remote add -d``)."""
    try:
        return bool(dvc(["config", "core.remote"], repo).strip())
    except CommandError:  # unset key: dvc exits non-zero
        return False


def repro_command(overrides: dict[str, Any] | None, force: bool = False) -> list[str]:
    """``dvc repro`` or, with parameter overrides, ``dvc exp run -S key=value ...``."""
    if not overrides:
        return ["repro", *(["--force"] if force else [])]
    # JSON is valid in DVC's (Hydra) override grammar: strings quoted, lists as [..], null.
    sets = [
        x
        for k, v in overrides.items()
        for x in ("-S", f"{k}={json.dumps(v, ensure_ascii=False, default=str)}")
    ]
    return ["exp", "run", *sets, *(["--force"] if force else [])]


# Retries only where I/O can fail transiently: transfers to and from the remote.
@task(retries=3, retry_delay_seconds=[10, 30, 90])
def pull(repo: str) -> str:
    return dvc(["pull", "--allow-missing"], repo)


@task(retries=3, retry_delay_seconds=[10, 30, 90])
def push(repo: str) -> str:
    return dvc(["push"], repo)


@task
def reproduce(repo: str, overrides: dict[str, Any] | None, force: bool) -> list[str]:
    """Run the pipeline; returns the stages that ran."""
    logger = get_run_logger()
    out = dvc(repro_command(overrides, force), repo, log=logger.info)
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
    logger.info("stages run: %s", ", ".join(ran) or "none (everything up to date)")
    return ran


@task
def read_metrics(repo: str) -> dict[str, Any]:
    """Every DVC metrics file of the run, by stage."""
    folder = Path(repo) / METRICS_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# What an experiment changes in the workspace besides cached outputs (those `dvc checkout`
# restores): the params, the lock, and the git-tracked results of cache: false outputs.
WORKSPACE_FILES = ("params.yaml", "dvc.lock", "metrics", "plots", "reports")


def snapshot_workspace(repo: str | Path) -> Path:
    """Copy :data:`WORKSPACE_FILES` of ``repo`` aside, for :func:`restore_workspace`."""
    saved = Path(tempfile.mkdtemp(prefix="pimc-workspace-"))
    for name in WORKSPACE_FILES:
        src = Path(repo) / name
        if src.is_dir():
            shutil.copytree(src, saved / name)
        elif src.is_file():
            shutil.copy2(src, saved / name)
    return saved


def restore_workspace(repo: str | Path, saved: Path) -> None:
    """Put the workspace back as :func:`snapshot_workspace` saw it (params, lock, results, and
    the cached outputs the lock names); drops the snapshot."""
    for name in WORKSPACE_FILES:
        dst, src = Path(repo) / name, saved / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        if src.is_dir():
            shutil.copytree(src, dst)
        elif src.is_file():
            shutil.copy2(src, dst)
    shutil.rmtree(saved, ignore_errors=True)
    dvc(["checkout", "--force"], repo)


@flow(name="pimc-pipeline", log_prints=True)
def pipeline_flow(
    overrides: dict[str, Any] | None = None, repo: str = ".", force: bool = False
) -> dict[str, Any]:
    """Run the DVC pipeline in ``repo``.

    Args:
        overrides: ``{"finetune.eurosat.lr": 0.005}``: run as ``dvc exp run -S`` instead of
            ``dvc repro`` (the experiment is applied to the workspace and recorded by DVC).
        repo: The project folder (holding ``dvc.yaml``).
        force: Re-run every stage even if DVC has it cached.

    Returns:
        ``stages`` (those that ran) and ``metrics`` (the DVC metrics files, by stage).
    """
    repo = str(Path(repo).resolve())
    remote = has_remote(repo)
    if remote:
        pull(repo)
    stages = reproduce(repo, overrides, force)
    if remote:
        push(repo)
    return {"stages": stages, "metrics": read_metrics(repo)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_override_args(parser)
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    try:
        result = pipeline_flow(parse_overrides(args.overrides), force=args.force)
    except PimcError as err:  # one clear message, not a Prefect traceback
        raise SystemExit(f"pipeline: {err}") from None
    print(f"stages run: {', '.join(result['stages']) or 'none'}")
