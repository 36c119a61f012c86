"""The MLflow model registry and model loading, part of :mod:`pimc.tracking` (re-exported
there, so callers write ``tracking.get_alias``): versions, aliases, tags and descriptions of the
registered models, and loading a logged model without unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pimc.tracking import _client, _not_found, _use_in_module_api, tracking_uri

#: Registered name of a task model's raw-observation twin: ``<task model>-raw``.
RAW_SUFFIX = "-raw"

#: Version tag holding :func:`weights_digest`: a re-run that logs the same model reuses it.
WEIGHTS_TAG = "pimc.weights"
ORPHAN_TAG = "pimc.orphan"  # a version whose run never finished (see mark_orphans)

__all__ = [
    "ORPHAN_TAG", "RAW_SUFFIX", "WEIGHTS_TAG", "version_tagged", "weights_digest",
    "bootstrap_champion", "delete_alias", "describe_model", "get_alias", "latest_version",
    "load_model", "mark_orphans", "model_metadata", "model_uri", "raw_model_uri",
    "registered_models", "set_alias",
    "tag_version", "version_of_run", "version_run", "version_tags",
]  # fmt: skip


def tag_version(name: str, version: str | int, tags: Mapping[str, Any]) -> None:
    """Tag a registered model version (e.g. its headline metric, for comparisons)."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def describe_model(name: str, version: str | int, description: str) -> None:
    """Set the description of registered model ``name`` and of its ``version`` (MLflow's UI
    shows both): what goes in, what comes out."""
    client = _client()
    client.update_registered_model(name, description=description)
    client.update_model_version(name, str(version), description=description)


def version_of_run(name: str, run_id: str) -> str | None:
    """The version of ``name`` that run ``run_id`` registered, if it did (so a retried
    registration returns it instead of adding a duplicate)."""
    found = _client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(min(int(v.version) for v in found)) if found else None


def version_tagged(name: str, key: str, value: str) -> str | None:
    """The first version of ``name`` tagged ``key = value`` that is not an orphan, if any."""
    found = _client().search_model_versions(f"name = '{name}' and tags.`{key}` = '{value}'")
    kept = [int(v.version) for v in found if ORPHAN_TAG not in v.tags]
    return str(min(kept)) if kept else None


def weights_digest(model: Any, metadata: Mapping[str, Any] | None = None) -> str:
    """sha256 of a module's class, state dict (names, dtypes, shapes, bytes) and deployment
    metadata: equal for the same model however often it is logged."""
    import torch  # here: importing pimc.tracking stays light

    h = hashlib.sha256(type(model).__qualname__.encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(dict(metadata or {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


def version_run(name: str, version: str | int) -> str | None:
    """The id of the run that registered ``name`` ``version``."""
    return _client().get_model_version(name, str(version)).run_id


def mark_orphans(run_id: str, reason: str) -> list[str]:
    """Tag every model version that run ``run_id`` registered ``pimc.orphan`` (the run never
    finished: its metrics and artifacts may be incomplete). Returns ``name/version`` of each."""
    client, marked = _client(), []
    for v in client.search_model_versions(f"run_id = '{run_id}'"):
        client.set_model_version_tag(v.name, v.version, ORPHAN_TAG, reason)
        marked.append(f"{v.name}/{v.version}")
    return marked


def registered_models(prefix: str = "pimc-") -> list[dict[str, Any]]:
    """Every version of the registered models named ``prefix*``: one row per version with
    its aliases, source run, stage and ``metric.*`` tags, newest first."""
    client = _client()
    rows = []
    for model in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
        for found in client.search_model_versions(f"name = '{model.name}'"):
            # search results leave aliases empty; the single-version read fills them
            v = client.get_model_version(model.name, found.version)
            rows.append(
                {
                    "name": model.name,
                    "version": int(v.version),
                    "aliases": ",".join(sorted(v.aliases)),
                    "run_id": v.run_id,
                    "created": v.creation_timestamp,
                    **{k: val for k, val in v.tags.items() if k.startswith("metric.")},
                }
            )
    return sorted(rows, key=lambda r: (r["name"], -r["version"]))


def latest_version(name: str) -> str | None:
    """Newest version number of registered model ``name``; None if it has none (or no model)."""
    versions = _client().search_model_versions(f"name = '{name}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def version_tags(name: str, version: str | int) -> dict[str, str]:
    """Tags of one registered model version."""
    return dict(_client().get_model_version(name, str(version)).tags)


def set_alias(name: str, alias: str, version: str | int) -> None:
    _client().set_registered_model_alias(name, alias, str(version))


def bootstrap_champion(name: str, version: str | int) -> bool:
    """Make ``version`` the ``champion`` of ``name`` if it has none (its first version);
    afterwards only retraining (:mod:`pimc.promotion`) moves the alias. Returns whether it did."""
    if get_alias(name, "champion") is not None:
        return False
    set_alias(name, "champion", version)
    return True


def delete_alias(name: str, alias: str) -> None:
    _client().delete_registered_model_alias(name, alias)


def get_alias(name: str, alias: str) -> str | None:
    """Version behind ``models:/name@alias``, or None when the alias is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def model_uri(ref: str) -> str:
    """``name@alias`` or ``name/version`` -> ``models:/...``; ``models:/`` and ``runs:/`` URIs
    pass through unchanged."""
    if ref.startswith(("models:/", "runs:/")):
        return ref
    if "@" not in ref and "/" not in ref:
        ref = f"{ref}@champion"  # a bare name means its champion
    return f"models:/{ref}"


def raw_model_uri(ref: str) -> str:
    """The raw-observation model (``<name>-raw``, :mod:`pimc.tracking.serving`) of ``ref``:
    ``pimc-pastis-classifier@champion`` -> ``models:/pimc-pastis-classifier-raw@champion``.
    A ``-raw`` ref is kept; a task model's version number is refused (the twins' numbers differ).

    Raises:
        UsageError: ``NAME/VERSION`` of a task model.
    """
    from pimc.core.errors import UsageError

    uri = model_uri(ref)
    body = uri.removeprefix("models:/")
    name, sep, rest = body.partition("@") if "@" in body else body.partition("/")
    if name.endswith(RAW_SUFFIX) or not uri.startswith("models:/"):
        return uri
    if sep == "/":
        raise UsageError(
            f"{ref}: a task model's version does not name its {RAW_SUFFIX} twin; give an alias "
            f"({name}@champion) or the twin itself ({name}{RAW_SUFFIX}/<version>)"
        )
    return f"models:/{name}{RAW_SUFFIX}@{rest}"


@contextmanager
def _pickle_off() -> Iterator[None]:
    """MLflow's pickle loading switched off (it is on by default): a ``model.pth`` is refused,
    and a pt2 archive is loaded only if none of its records (weights, constants, sample
    inputs) carries a pickle payload beyond what ``torch.load(weights_only=True)`` admits."""
    key, old = (
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION",
        os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION"),
    )
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_model(uri: str) -> Any:
    """Load a logged torch model, e.g. ``models:/pimc-rp-encoder@champion``, never unpickling
    anything (pimc logs pt2 programs; see :func:`_pickle_off`).

    Raises:
        ModelNotFoundError: the URI names no model in the registry / store.
        UntrustedModelError: the model's files are not a pickle-free pt2 program (tampered,
            or not logged by pimc); nothing of it was executed.
    """
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from pimc.core.errors import UntrustedModelError

    _use_in_module_api(tracking_uri())
    try:
        with _pickle_off():
            return mlflow.pytorch.load_model(uri)
    except MlflowException as err:
        if "pickle" in str(err).lower():
            raise UntrustedModelError(
                f"{uri}: refused to load, its files would run code on load ({err}). pimc logs "
                "models as pickle-free pt2 programs; re-register the model from a trusted run "
                "(`dvc repro finetune@<task>`), and check who can write to the artifact store."
            ) from err
        raise _not_found(uri, err) from err


def model_metadata(uri: str) -> dict[str, Any]:
    """The ``metadata`` a model was logged with (empty if none).

    Raises:
        ModelNotFoundError: the URI names no model in the registry / store.
    """
    import mlflow.models
    from mlflow.exceptions import MlflowException

    _use_in_module_api(tracking_uri())
    try:
        return dict(mlflow.models.get_model_info(uri).metadata or {})
    except (MlflowException, OSError) as err:
        raise _not_found(uri, err) from err
