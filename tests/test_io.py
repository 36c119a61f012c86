"""pimc.core.io: atomic outputs that keep the old file on failure and honour the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pimc.core.io import atomic_path, write_json, write_text


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_open_would_give(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        files = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "m.json", {"a": 1})]
        with atomic_path(tmp_path / "b.npy") as tmp:
            tmp.write_bytes(b"y")
        files.append(tmp_path / "b.npy")
    finally:
        os.umask(old)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f
