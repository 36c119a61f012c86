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


def test_the_file_then_its_folder_are_fsynced_around_the_rename(tmp_path: Path, monkeypatch):
    synced: list[tuple[str, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((path, (tmp_path / "m.json").exists()))
        real_fsync(fd)

    def replace(src, dst) -> None:
        synced.append(("replace", True))
        real_replace(src, dst)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_json(tmp_path / "m.json", {"a": 1})
    (file, before), (step, _), (folder, after) = synced
    assert ".m.tmp-" in file and not before  # the data, before the rename
    assert step == "replace" and folder == str(tmp_path) and after  # the entry, after it


def test_fresh_output_dir_never_deletes_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from pimc.core.io import STAMP, fresh_output_dir, is_stamped

    out = tmp_path / "out"
    fresh_output_dir(out, "a")
    (out / "part.json").write_text("{}")
    assert fresh_output_dir(out, "a") == out and (out / "part.json").is_file()  # resumes
    fresh_output_dir(out, "b")  # other inputs: emptied, re-stamped
    assert sorted(p.name for p in out.iterdir()) == [STAMP] and is_stamped(out, "b")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match=r"mine holds files that pimc did not write"):
        fresh_output_dir(mine, "a")
    assert (mine / "thesis.tex").read_text() == "x" and not is_stamped(mine, "a")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_stamped(fresh_output_dir(empty, "a"), "a")
