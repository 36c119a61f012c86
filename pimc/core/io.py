"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted stage therefore never leaves a half-written output that a re-run (or DVC) would
mistake for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pimc.core.errors import InputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; it replaces ``path`` if the body succeeds.

    The suffix is kept (``.tmp-xxxx.npy``) so libraries that infer a format from it still work.
    The file gets the mode a plain ``open`` would give (0666 less the umask), not ``mkstemp``'s
    0600, so other users and services can read the outputs. It is durable: the data are
    fsynced before the rename and the folder after it (as databases do), so a power loss
    leaves the old file or the whole new one, never an empty one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    is_dir = os.path.isdir(path)
    if is_dir and os.name == "nt":  # folders cannot be opened (nor need syncing) on Windows
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    # The only portable way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (what DVC metrics and plots read)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


STAMP = ".fingerprint"


def fresh_output_dir(out: str | Path, fingerprint: str) -> Path:
    """Make ``out`` a folder whose contents belong to ``fingerprint`` (a hash of the inputs).

    Kept as is when its stamp matches (so an interrupted stage resumes from finished files);
    emptied when the stamp differs (outputs of another config are never mixed). A non-empty
    folder without a stamp was not made by pimc and is never deleted.

    Raises:
        FileExistsError: ``out`` holds files but no stamp (e.g. an output path set to a
            source folder by mistake).
    """
    out = Path(out)
    stamp = out / STAMP
    if out.exists() and not stamp.is_file() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} holds files that pimc did not write (no {STAMP}); move them away or point "
            "the output path elsewhere"
        )
    if not is_stamped(out, fingerprint):
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(stamp, fingerprint)
    return out


def is_stamped(out: str | Path, fingerprint: str) -> bool:
    """True when ``out`` was made by :func:`fresh_output_dir` for ``fingerprint``."""
    stamp = Path(out) / STAMP
    return stamp.is_file() and stamp.read_text() == fingerprint


def fingerprint(*parts: Any) -> str:
    """Short stable hash of JSON-able parts and/or bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(
            part
            if isinstance(part, bytes)
            else json.dumps(part, sort_keys=True, default=str).encode()
        )
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Atomically ``torch.save`` ``state`` to ``path``: a kill mid-write keeps the old file.

    Equal ``state`` gives equal bytes: saved through a file object, the archive's inner folder
    is always ``archive/`` (given a path, torch names it after the temporary file), and
    :func:`_canonical` makes object sharing the same however the values came to be, so a
    resumed run's checkpoints hash as an uninterrupted run's and DVC re-runs nothing after it.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(_canonical(state), fh)
    return Path(path)


def _canonical(value: Any) -> Any:
    """Fresh containers and interned strings: pickle writes a repeated object as a reference
    to its first copy, so state rebuilt from a loaded checkpoint (its strings shared by
    unpickling) would otherwise give other bytes than state built in one process."""
    if isinstance(value, dict):  # dict or OrderedDict (a state_dict, with its _metadata)
        out = type(value)((_canonical(k), _canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = _canonical(value._metadata)
        return out
    if type(value) in (list, tuple):
        return type(value)(_canonical(v) for v in value)
    if type(value) is str:
        return sys.intern(value)
    return value


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickles).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: ``path`` is truncated, not a torch file, or holds more than tensors and
            plain values.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise InputError(
            f"{path}: not a readable pimc checkpoint ({type(err).__name__}: {err}); re-run the "
            "stage that wrote it"
        ) from err
