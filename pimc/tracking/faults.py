"""Faults around tracking: a tracking server that does not answer, and runs left ``RUNNING`` by
killed processes. Part of :mod:`pimc.tracking` (re-exported there)."""

from __future__ import annotations

import os
import socket
from typing import Any

from pimc.tracking import tracking_uri

__all__ = ["close_killed_runs", "outage_message"]


def outage_message(err: BaseException) -> str | None:
    """One line for an exception that means "the tracking server did not answer", else None."""
    text = f"{type(err).__name__}: {err}"
    markers = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out")
    if not any(m in text for m in markers) or not tracking_uri().startswith("http"):
        return None
    return (
        f"the MLflow tracking server at {tracking_uri()} did not answer "
        f"({text.splitlines()[0][:160]}). Start it (`make servers-up`) or point "
        "MLFLOW_TRACKING_URI at a running one, then re-run: finished work resumes."
    )


def close_killed_runs(client: Any, experiment_id: str, stage: str) -> list[str]:
    """Mark ``KILLED`` the runs of ``stage`` left ``RUNNING`` by a process of this host that no
    longer exists (a ``kill -9``, a power loss), and tag what they registered ``pimc.orphan``.

    Runs of other hosts, of live processes, or without pimc's host/pid tags are left alone.
    Returns the ids of the runs it closed.
    """
    from pimc.tracking.registry import mark_orphans

    host, closed = socket.gethostname(), []
    query = f"tags.`pimc.stage` = '{stage}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment_id], filter_string=query):
        tags = run.data.tags
        if tags.get("pimc.host") != host or not tags.get("pimc.pid", "").isdigit():
            continue
        if _alive(int(tags["pimc.pid"])):
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        client.set_tag(run.info.run_id, "pimc.closed_by", f"pid {os.getpid()}: process gone")
        mark_orphans(run.info.run_id, "its run was killed before it finished")
        closed.append(run.info.run_id)
    return closed


def finished_here() -> bool:
    """Whether this process completed an MLflow run (status ``FINISHED``, tagged with this
    host and pid): a stage's tracked work (outputs, metrics, models) is then done, whatever
    happens to its Prefect flow run afterwards. False when the store cannot be asked."""
    from pimc.tracking import _client, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        return False  # no store yet (asking would create one): nothing was recorded
    query = (
        f"tags.`pimc.pid` = '{os.getpid()}' and tags.`pimc.host` = '{socket.gethostname()}' "
        "and attributes.status = 'FINISHED'"
    )
    try:
        client = _client()
        ids = [e.experiment_id for e in client.search_experiments()]
        return bool(ids and client.search_runs(ids, filter_string=query, max_results=1))
    except Exception:  # noqa: BLE001 - the store is down too: nothing is known to be done
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
