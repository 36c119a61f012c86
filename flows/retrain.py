"""Scheduled retraining: rerun the pipeline, promote better task models in the MLflow registry.

    python -m flows.retrain                                   # once, current params/data
    python -m flows.retrain -S finetune.pixel_cls.epochs=40   # once, as a DVC experiment
    python -m flows.retrain serve --cron "0 3 * * 1"          # deployment: Mondays 03:00 UTC

The flow reruns the pipeline (:mod:`flows.pipeline`: new data or new params; DVC skips what is
unchanged), then, for each task in ``retrain.tasks``, compares the newest registered version's
test headline with the current ``champion`` and moves the alias only if it is better by more
than ``retrain.margin``; otherwise the version becomes ``challenger``, tagged with the reason
(:mod:`pimc.promotion`). Every decision goes to the flow's log and to an MLflow run
(stage ``retrain``: ``decisions.json``, one metric per task).

``serve`` needs a real Prefect server (``make servers-up`` and ``PREFECT_API_URL``); with a
work pool, deploy with ``prefect deploy`` instead (see infra/README.md).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import add_override_args
from flows.pipeline import pipeline_flow, restore_workspace, snapshot_workspace
from pimc import promotion, tracking
from pimc.core.config import load_params
from pimc.core.errors import PimcError, UsageError
from pimc.core.typed_config import parse_overrides
from pimc.tasks.registry import TASKS

DEPLOYMENT = "pimc-retrain"
DEFAULT_CRON = "0 3 * * 1"
LOCK = Path(".dvc") / "tmp" / "pimc-retrain.lock"  # in the repo; .dvc/tmp is git-ignored


@contextmanager
def retrain_lock(repo: str | Path) -> Iterator[Path]:
    """Hold ``<repo>/.dvc/tmp/pimc-retrain.lock`` for one retraining, or fail at once.

    Taken before anything else: a second retraining must not snapshot, run or roll back the
    workspace under a running one (DVC's own lock would stop it only mid-way, after which its
    rollback would undo the first run's outputs). ``flock``: released even on ``kill -9``.

    Raises:
        UsageError: Another retraining holds the lock (its pid is named).
    """
    path = Path(repo) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UsageError(
                f"another retraining is running in {Path(repo).resolve()} (pid {holder}, lock "
                f"{path}); wait for it to finish, or schedule retraining once (serve limit=1)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Retries only where I/O can fail transiently: the MLflow server. NO_CACHE: every call must
# read the registry afresh.
@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def registry_snapshot(models: list[str]) -> dict[str, str | None]:
    """Newest version of each model before the run (None: not registered yet)."""
    return {m: tracking.latest_version(m) for m in models}


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def decide(model: str, previous_latest: str | None, margin: float) -> promotion.Decision:
    return promotion.decide(model, previous_latest, margin)


# Decided once, applied with retries: a retry must not re-decide against a moved alias.
@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def apply(decision: promotion.Decision) -> None:
    promotion.apply(decision)
    verdict = "PROMOTED" if decision.promoted else "kept champion"
    if decision.candidate is None:
        verdict = "no candidate"
    get_run_logger().info(
        "%s v%s: %s (champion was v%s) - %s",
        decision.model,
        decision.candidate,
        verdict,
        decision.champion,
        decision.reason,
    )


@flow(name="pimc-retrain", log_prints=True)
def retrain_flow(
    overrides: dict[str, Any] | None = None,
    repo: str = ".",
    params_path: str = "params.yaml",
    force: bool = False,
) -> dict[str, Any]:
    """Rerun the pipeline and decide, per task, whether its new model becomes champion.

    Versions registered before a pipeline failure are still decided on (then the error is
    raised). An experiment (``overrides``) that promoted nothing is rolled back: the workspace
    keeps the params and outputs behind the champions, not those of a rejected challenger.

    Args:
        overrides: Parameter overrides for this run (``dvc exp run -S``), e.g.
            ``{"finetune.pixel_cls.lr": 0.005}``; they may set ``retrain.margin`` too.
        repo: The project folder.
        params_path: ``params.yaml`` of ``repo`` (relative to it).
        force: Re-run every stage even if cached.

    Returns:
        ``stages`` that ran and one decision per task (see :class:`pimc.promotion.Decision`).
    """
    repo = str(Path(repo).resolve())
    with retrain_lock(repo):
        return _retrain(overrides, repo, params_path, force)


def _retrain(
    overrides: dict[str, Any] | None, repo: str, params_path: str, force: bool
) -> dict[str, Any]:
    """:func:`retrain_flow`'s body, under the retrain lock."""
    # The stages log to <repo>/mlflow.db unless told otherwise: read the same registry.
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlflow.db")
    params = load_params(Path(repo) / params_path, overrides)
    cfg = params.retrain
    models = {t: TASKS[t].registered_model for t in cfg.tasks}
    before = registry_snapshot(list(models.values()))
    saved = snapshot_workspace(repo) if overrides else None
    error, stages = None, []
    try:
        stages = pipeline_flow(overrides, repo=repo, force=force)["stages"]
    except Exception as err:  # decide on what was registered before the failure, then raise
        error = err
    decisions = {}
    for t, model in models.items():
        decision = decide(model, before[model], cfg.margin)
        apply(decision)
        decisions[t] = decision.as_dict()
    promoted = [t for t, d in decisions.items() if d["promoted"] and d["candidate"]]
    if saved is not None:
        if promoted:
            shutil.rmtree(saved, ignore_errors=True)
        else:
            restore_workspace(repo, saved)
    with tracking.start_run("retrain", {"retrain": cfg}) as run:
        record = {"overrides": overrides or {}, "stages": stages, "decisions": decisions}
        if error is not None:
            record["pipeline_error"] = str(error)[-4000:]
            run.set_tags({"pipeline.error": str(error)[-4000:]})
        run.log_dict(record, "decisions.json")
        run.log_metrics({f"{t}/promoted": float(d["promoted"]) for t, d in decisions.items()})
        run.set_tags({f"decision.{t}": d["reason"][:4000] for t, d in decisions.items()})
    print(f"retrain: stages run {stages or 'none'}; promoted: {promoted or 'none'}")
    if error is not None:
        raise error
    return {"stages": stages, "decisions": decisions, "rolled_back": bool(saved and not promoted)}


def serve(name: str, cron: str, overrides: dict[str, Any], repo: str) -> None:
    """Create the deployment and run its schedule in this process (``flow.serve``)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # env or profile (`prefect config set PREFECT_API_URL=`)
        raise SystemExit(
            "serve needs a running Prefect server: start one (`make servers-up`, or "
            "`prefect server start`) and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    retrain_flow.serve(
        name=name,
        cron=cron,
        parameters={"overrides": overrides or None, "repo": str(Path(repo).resolve())},
        description="Weekly retraining with champion/challenger promotion (flows/retrain.py).",
        limit=1,  # one retraining at a time: runs share the workspace and the DVC lock
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["run", "serve"], default="run")
    add_override_args(parser)
    parser.add_argument("--repo", default=".", help="project folder (default: %(default)s)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="serve: schedule (%(default)s)")
    parser.add_argument("--name", default=DEPLOYMENT, help="serve: deployment name")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    overrides = parse_overrides(args.overrides)
    if args.command == "serve":
        if args.force:
            raise SystemExit("--force is for one run; a served schedule reruns only what changed")
        serve(args.name, args.cron, overrides, args.repo)
        return
    try:
        retrain_flow(overrides or None, repo=args.repo, force=args.force)
    except PimcError as err:  # one clear message, not a Prefect traceback
        raise SystemExit(f"retrain: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
