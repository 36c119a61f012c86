"""Results of the methods that do not depend on pretraining, kept between fine-tuning runs.

A change to pretraining re-runs every ``finetune@<task>`` stage, but random-init networks, the
1-D CNNs and the other baselines read nothing that pretraining writes: at full PASTIS scale
retraining them costs ~45 min per run. :class:`MethodCache` keeps each such method's test
metrics, curves and the arrays its plots need, under a key that hashes everything its result
depends on: the method, the task config (less the keys that only choose *which* methods run),
the recurrence and model configs, a signature of the input files (names, sizes, mtimes), the
source of the code that trains and scores it, the torch version, device type and thread count
(the last digits of a result depend on them). Any change misses; a hit returns the bytes a
fresh run would compute. Entries are written atomically and read without unpickling
(JSON + ``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pimc.core.config import Params
from pimc.core.io import atomic_path, fingerprint, write_json
from pimc.core.typed_config import to_dict
from pimc.tasks.methods import Method

__all__ = ["CODE", "Cached", "MethodCache", "files_signature"]

_ROOT = Path(__file__).resolve().parents[2]
#: The code a baseline's result depends on (pretraining's loop and losses are not in it).
CODE = (
    "pimc/core",
    "pimc/data",
    "pimc/transforms",
    "pimc/models",
    "pimc/tasks",
    "pimc/training/pairs.py",
    "pimc/training/utils.py",
    "pimc/metrics.py",
)
#: Task config keys that choose which methods run or where, not what one of them computes.
_SELECTION_KEYS = ("baselines", "pretrained", "mode")


@dataclass(frozen=True)
class Cached:
    """One method's stored result: test ``metrics``, per-epoch ``curves`` and ``arrays``."""

    metrics: dict[str, Any]
    curves: list[dict[str, float]]
    arrays: dict[str, np.ndarray]


def files_signature(paths: Iterable[Path]) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of every file under ``paths`` (as make and rsync compare)."""
    rows = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            rows.append([str(f), st.st_size, st.st_mtime_ns])
    return rows


def _code_hash() -> str:
    h = hashlib.sha256()
    for part in CODE:
        top = _ROOT / part
        for f in [top] if top.is_file() else sorted(top.rglob("*.py")):
            h.update(str(f.relative_to(_ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class MethodCache:
    """Stored results of one task's pretraining-free methods.

    Args:
        root: The cache folder (``None``: nothing is cached).
        task: The task name.
        params: The run's params (task config ``finetune.<task>``, ``recurrence``, ``model``).
        inputs: The files the task reads (their signature is part of the key).
        device: Where the methods train.
    """

    def __init__(
        self,
        root: Path | None,
        task: str,
        params: Params,
        inputs: Iterable[Path],
        device: torch.device,
    ) -> None:
        self.root = None if root is None else Path(root) / task
        self.hits: list[str] = []  # methods served from the cache, in order
        if self.root is None:
            return
        cfg = {k: v for k, v in to_dict(getattr(params.finetune, task)).items()
               if k not in _SELECTION_KEYS}  # fmt: skip
        self._base = [
            task,
            cfg,
            to_dict(params.recurrence),
            to_dict(params.model),
            files_signature(inputs),
            _code_hash(),
            torch.__version__,
            device.type,
            torch.get_num_threads(),
        ]

    @staticmethod
    def applies(spec: Method) -> bool:
        """Whether ``spec``'s result is independent of pretraining (and worth keeping)."""
        return not spec.pretrained and spec.input != "none"

    def _folder(self, spec: Method) -> Path:
        return self.root / f"{spec.name}-{fingerprint(self._base, asdict(spec))}"

    def get(self, spec: Method) -> Cached | None:
        """The stored result of ``spec``, or None (not cacheable, not stored, or unreadable)."""
        if self.root is None or not self.applies(spec):
            return None
        folder = self._folder(spec)
        try:
            entry = json.loads((folder / "result.json").read_text())
            with np.load(folder / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):  # missing or damaged: compute it again
            return None
        self.hits.append(spec.name)
        return Cached(entry["metrics"], entry["curves"], arrays)

    def put(self, spec: Method, result: Cached) -> None:
        """Store ``result`` for ``spec`` (arrays first: ``result.json`` marks a whole entry)."""
        if self.root is None or not self.applies(spec):
            return
        folder = self._folder(spec)
        with atomic_path(folder / "arrays.npz") as tmp:
            np.savez(tmp, **result.arrays)
        write_json(folder / "result.json", {"metrics": result.metrics, "curves": result.curves})

    def result(
        self, spec: Method, train: Callable[[Method], tuple[Cached, Any]]
    ) -> tuple[Cached, Any | None]:
        """``spec``'s stored result (and no model), or ``train(spec)``'s result and model,
        stored for the next run when ``spec`` is cacheable."""
        done = self.get(spec)
        if done is not None:
            return done, None
        done, model = train(spec)
        self.put(spec, done)
        return done, model
