"""MLflow, in one place.

Every MLflow call in pimc goes through this module, so the tracking URI, the artifact location,
the run tags (git SHA, DVC stage) and the order "params first" are decided once.

The tracking URI comes from ``MLFLOW_TRACKING_URI``; by default it is ``sqlite:///mlflow.db``
in the working directory (the repo root when DVC runs a stage), with artifacts in
``mlartifacts/`` beside it. Each tracking URI gets one ``MlflowClient``, built on first use;
MLflow's process-wide tracking URI is only pointed at it for the few calls that exist in
MLflow's module-level API alone (logging and loading models). A :class:`TrackedRun` carries its
run id and tracking URI explicitly, so logging works from any thread (Prefect may run tasks in
worker threads, where MLflow's "active run" is not visible) and never needs an active run.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from pimc.core.config import flatten

DEFAULT_EXPERIMENT = "pimc"
_MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit for params


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or an absolute ``sqlite:///<cwd>/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # Absolute, so `dvc exp run --temp` (which runs in a temp copy) still logs to the repo's db.
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def artifact_location() -> str | None:
    """Where new experiments keep artifacts; ``None`` lets a remote server decide."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if os.environ.get("PIMC_ARTIFACT_ROOT"):
        return Path(os.environ["PIMC_ARTIFACT_ROOT"]).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        # Artifacts beside the database, so one folder holds the whole local store.
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return (Path.cwd() / "mlartifacts").resolve().as_uri()


#: What a run's results depend on (besides data): a change here, uncommitted, makes the run's
#: inputs dirty. Outputs the pipeline itself rewrites (dvc.lock, metrics/, plots/) do not.
GIT_INPUTS = ("pimc", "flows", "params.yaml", "dvc.yaml", "pyproject.toml")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_tags() -> dict[str, str]:
    """The commit a run started from (``git.sha``, also MLflow's own ``mlflow.source.git.commit``)
    and ``git.inputs_dirty``: ``true`` when :data:`GIT_INPUTS` have uncommitted changes.
    ``unknown`` outside git."""
    try:
        sha = _git("rev-parse", "HEAD")
        inputs = _git("rev-parse", "--show-toplevel")
        dirty = _git("-C", inputs, "status", "--porcelain", "--", *GIT_INPUTS)
    except (OSError, subprocess.SubprocessError):
        return {"git.sha": "unknown", "git.inputs_dirty": "unknown"}
    return {
        "git.sha": sha,
        "mlflow.source.git.commit": sha,
        "git.inputs_dirty": "true" if dirty else "false",
    }


def param_value(value: Any) -> str:
    """How a config value is logged as an MLflow param: lists, booleans and None as JSON
    (``["ndvi", "evi"]``, ``true``, ``null``, as in params.yaml), the rest as ``str``."""
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


#: Bounded HTTP behaviour towards a tracking server (MLflow's defaults: 120 s timeout, 7
#: retries with exponential backoff, ~10 minutes before a dead server is reported). pimc fails
#: fast instead: an outage ends the stage within about a minute with one line naming the URI,
#: and the stage resumes from its checkpoint once the server is back. Training does not buffer
#: metrics through an outage: a run whose curves have holes would be silently incomplete.
#: Set any of these in the environment to override.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


@functools.cache
def _client_for(uri: str):
    """The one ``MlflowClient`` of tracking URI ``uri`` (tests switch stores between tests)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow  # imported lazily: it costs seconds and most library users never track

    return mlflow.MlflowClient(tracking_uri=uri)


def _client():
    """The client of the current :func:`tracking_uri`."""
    return _client_for(tracking_uri())


def _use_in_module_api(uri: str) -> None:
    """Point MLflow's module-level API at ``uri``: ``mlflow.pytorch.log_model``/``load_model``
    and ``mlflow.models.get_model_info`` resolve the store (and registry) from MLflow's global
    tracking URI, not from a client. A no-op while it already is ``uri``."""
    import mlflow

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)


def _not_found(uri: str, err: Exception):
    from pimc.core.errors import ModelNotFoundError

    return ModelNotFoundError(
        f"{uri} is not in the MLflow store at {tracking_uri()} ({err}); list what is there "
        "with `pimc models`, or set MLFLOW_TRACKING_URI to the server that has it."
    )


#: Set by the pipeline flow for the stages it runs (``flows/pipeline.py``): the Prefect flow-run id
#: that every stage's MLflow run is tagged with (``pimc.pipeline_run``), linking them.
PIPELINE_RUN_ENV = "PIMC_PIPELINE_RUN"

#: Opens the experiment in MLflow's model-training view (3.x guesses GenAI for untagged ones).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(
            name, artifact_location=artifact_location(), tags=EXPERIMENT_TAGS
        )
    for key, value in EXPERIMENT_TAGS.items():
        if key not in exp.tags:  # experiments made by older pimc; a user's choice is kept
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


@dataclass
class TrackedRun:
    """Handle to one MLflow run; every method logs to ``run_id`` at ``tracking_uri`` explicitly.

    Plain strings only: Prefect hashes task arguments, and a run handle is one.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str

    @property
    def client(self):
        return _client_for(self.tracking_uri)

    def log_params(self, params: Any) -> None:
        """Log a config dataclass or mapping, flattened to dotted keys."""
        from mlflow.entities import Param

        flat = flatten(params) if is_dataclass(params) or isinstance(params, Mapping) else {}
        items = [Param(k, param_value(v)) for k, v in sorted(flat.items())]
        client = self.client
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        """Write ``data`` as JSON artifact ``name`` (e.g. ``"stats/data.json"``)."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(name).name
            target.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
            parent = str(Path(name).parent)
            self.log_artifact(target, None if parent == "." else parent)

    def register_model(
        self,
        model: Any,
        name: str,
        input_example: Any,
        registered_model_name: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """:meth:`log_model` and register it, once per model: a retried call returns the
        version this run registered before, and a re-run that logs the same weights and
        metadata (:func:`weights_digest`; e.g. a stage DVC re-runs after an orchestration
        outage) returns that version, instead of adding a duplicate. Returns the version."""
        from pimc.tracking.registry import (
            WEIGHTS_TAG,
            tag_version,
            version_of_run,
            version_tagged,
            weights_digest,
        )

        digest = weights_digest(model, metadata)
        done = version_of_run(registered_model_name, self.run_id) or version_tagged(
            registered_model_name, WEIGHTS_TAG, digest
        )
        if done is not None:
            return done
        info = self.log_model(model, name, input_example, registered_model_name, metadata)
        version = str(info.registered_model_version)
        tag_version(registered_model_name, version, {WEIGHTS_TAG: digest})
        return version

    def log_model(
        self,
        model: Any,
        name: str,
        input_example: Any,
        registered_model_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Log a torch module as an MLflow model (pt2: ``torch.export``, no pickle) and
        optionally register it; returns MLflow's ``ModelInfo``.

        pt2 keeps loading safe (no arbitrary code runs on ``load_model``) and needs no pimc
        install to serve. The batch dimension of ``input_example`` stays dynamic. ``metadata``
        (plain JSON-like values) is stored in the model's MLmodel file, so the model carries
        what a caller needs to build its input (see :func:`model_metadata`).
        """
        import mlflow.pytorch
        import torch

        _use_in_module_api(self.tracking_uri)
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]  # skips slow inference
        return mlflow.pytorch.log_model(
            model.eval(),
            name=name,
            input_example=input_example,
            serialization_format="pt2",
            pip_requirements=requirements,
            registered_model_name=registered_model_name,
            metadata=dict(metadata) if metadata else None,
            run_id=self.run_id,  # passed on to mlflow.models.Model.log: no active run needed
        )


def load_dict(run_id: str, name: str) -> Any:
    """The JSON artifact ``name`` that :meth:`TrackedRun.log_dict` wrote in run ``run_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _client().download_artifacts(run_id, name, tmp)
        return json.loads(Path(path).read_text())


def run_artifact_of(name: str, alias: str, artifact: str, dest: str | Path) -> Path:
    """Download ``artifact`` of the run that logged ``models:/name@alias`` into ``dest``.

    Used to fetch the full training checkpoint behind a registered encoder (the registered
    pt2 graph holds the encoder only).
    """
    import mlflow.artifacts

    client = _client()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except Exception as err:  # MlflowException: unknown model or alias
        from pimc.core.errors import ModelNotFoundError

        raise ModelNotFoundError(
            f"models:/{name}@{alias} is not in the MLflow registry at {tracking_uri()}; run the "
            "pretrain stage first or set the alias (pimc.tracking.set_alias)."
        ) from err
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=version.run_id,
            artifact_path=artifact,
            dst_path=str(dest),
            tracking_uri=tracking_uri(),
        )
    )


@contextmanager
def start_run(
    stage: str,
    params: Any,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[TrackedRun]:
    """Open an MLflow run for one pipeline stage; params are logged before anything else.

    The run is tagged ``pimc.stage`` (the DVC stage name), :func:`git_tags` and, under the
    pipeline flow, ``pimc.pipeline_run``; it ends FAILED if the body raises, FINISHED otherwise.

    Args:
        stage: DVC stage name, e.g. ``"data"``.
        params: the stage's config, e.g. ``{"data": params.data}``; logged flattened with
            dotted keys (``data.synthetic.patch_size``) as in ``params.yaml``.
        experiment: MLflow experiment name (created with a local artifact location if missing).
        run_name: defaults to the stage name.
        tags: extra tags.
    """
    uri = tracking_uri()
    client = _client_for(uri)
    exp_id = _experiment_id(client, experiment)
    all_tags = {"pimc.stage": stage, **git_tags(), "mlflow.runName": run_name or stage}
    if os.environ.get(PIPELINE_RUN_ENV):
        all_tags["pimc.pipeline_run"] = os.environ[PIPELINE_RUN_ENV]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    all_tags.update({"pimc.host": socket.gethostname(), "pimc.pid": str(os.getpid())})
    from pimc.tracking.faults import close_killed_runs

    close_killed_runs(client, exp_id, stage)
    run = client.create_run(exp_id, tags=all_tags, run_name=run_name or stage)
    tracked = TrackedRun(run.info.run_id, exp_id, uri)
    status = "FAILED"
    try:
        tracked.log_params(params)
        yield tracked
        status = "FINISHED"
    finally:
        try:
            client.set_terminated(tracked.run_id, status=status)
            if status == "FAILED":  # what it registered before failing is not a result
                from pimc.tracking.registry import mark_orphans

                mark_orphans(tracked.run_id, "its run failed before it finished")
        except Exception:
            if status == "FINISHED":
                raise
            # The body's error (often the same outage) is the one to report, not this one;
            # the next start of the stage marks the run KILLED.


def get_run(run_id: str):
    """The MLflow run (for tests and reports)."""
    return _client().get_run(run_id)


def search_runs(stage: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> list:
    """Runs of ``experiment`` (optionally one stage), newest first."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"tags.`pimc.stage` = '{stage}'" if stage else ""
    return client.search_runs(
        [exp.experiment_id], filter_string=query, order_by=["start_time DESC"]
    )


# The model registry and model loading (pimc/tracking/registry.py), under the same name.
from pimc.tracking.faults import finished_here, outage_message  # noqa: E402, F401
from pimc.tracking.registry import *  # noqa: E402, F403
from pimc.tracking.registry import _pickle_off  # noqa: E402, F401
