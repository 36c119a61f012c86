"""Tests for pimc.data.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pimc.core.errors import ChecksumError, DatasetCorruptError, DatasetNotFoundError, DownloadError
from pimc.data.download import check_md5, download_url, extract_archive, md5sum

PAYLOAD = os.urandom(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class ServerState:
    """What the fake server serves and how it misbehaves; records every request."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes before hanging up
    cut_times: dict[str, int] = field(default_factory=dict)  # path -> how many requests to cut
    ignore_range: set[str] = field(default_factory=set)
    max_range: dict[str, int] = field(default_factory=dict)  # path -> most bytes per 206 answer
    fail_503: dict[str, int] = field(default_factory=dict)  # path -> how many requests get 503
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    state: ServerState  # set on a per-server subclass

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        state = self.state
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            cut = state.cut_times.get(self.path, 0) > 0
            if cut:
                state.cut_times[self.path] -= 1
            unavailable = state.fail_503.get(self.path, 0) > 0
            if unavailable:
                state.fail_503[self.path] -= 1
        if unavailable:
            self.send_error(503, "Service Unavailable")
            return
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return

        start = 0
        if rng and self.path not in state.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(len(data), start + state.max_range.get(self.path, len(data)))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            end = len(data)
            self.send_response(200)
        body = data[start:end]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            # Announce the full length, send part of it, then hang up: an interrupted transfer.
            self.wfile.write(body[: state.cut_after[self.path]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would send loopback requests elsewhere. (conftest.py already
    # removes the retry backoff.)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.files["/data.bin"] = PAYLOAD
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- md5 -----------------------------------------------------------------------------------


def test_md5sum_matches_hashlib_with_small_chunks(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(PAYLOAD)
    assert md5sum(f, chunk_size=4096) == PAYLOAD_MD5


def test_check_md5(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(PAYLOAD)
    check_md5(f, PAYLOAD_MD5.upper())  # case-insensitive
    check_md5(f, None)
    with pytest.raises(ChecksumError) as info:
        check_md5(f, "0" * 32)
    msg = str(info.value)
    assert str(f) in msg and "0" * 32 in msg and PAYLOAD_MD5 in msg
    assert "delete it" in msg and "params.yaml" in msg


# --- download_url ---------------------------------------------------------------------------


def test_plain_download(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "dir" / "data.bin"
    out = download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=True)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()
    assert server.ranges("/data.bin") == [None]


def test_interrupted_transfer_is_resumed(server: ServerState, tmp_path: Path) -> None:
    server.cut_after["/data.bin"] = 100_000
    server.cut_times["/data.bin"] = 2  # hang up twice: resume from a resumed transfer too
    dest = tmp_path / "data.bin"
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False, chunk_size=8192)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == [None, "bytes=100000-", "bytes=200000-"]


def test_existing_part_is_resumed(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:12_345])
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == ["bytes=12345-"]


def test_server_ignoring_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    server.ignore_range.add("/data.bin")
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must not stay in front")
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == ["bytes=35-"]


def test_complete_part_answered_416_is_kept(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == [f"bytes={len(PAYLOAD)}-"]


def test_oversized_part_is_restarted(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"extra")
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_server_capping_range_size_is_followed(server: ServerState, tmp_path: Path) -> None:
    server.max_range["/data.bin"] = 100_000
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:10])
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == ["bytes=10-", "bytes=100010-", "bytes=200010-"]


def test_server_error_is_retried(server: ServerState, tmp_path: Path) -> None:
    server.fail_503["/data.bin"] = 2
    dest = tmp_path / "data.bin"
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.ranges("/data.bin")) == 3


def test_gives_up_after_max_resumes(server: ServerState, tmp_path: Path) -> None:
    server.cut_after["/data.bin"] = 1000
    server.cut_times["/data.bin"] = 100
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        download_url(server.url("/data.bin"), dest, progress=False, max_resumes=2)
    assert server.url("/data.bin") in str(info.value)
    assert len(server.ranges("/data.bin")) == 3
    assert not dest.exists()
    # What arrived is kept so that the next run resumes instead of starting over.
    assert (tmp_path / "data.bin.part").stat().st_size == 3000


def test_bad_md5_leaves_nothing(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError) as info:
        download_url(server.url("/data.bin"), dest, "f" * 32, progress=False)
    msg = str(info.value)
    assert server.url("/data.bin") in msg and "f" * 32 in msg and PAYLOAD_MD5 in msg
    assert "params.yaml" in msg
    assert not dest.exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_http_404_is_a_download_error(server: ServerState, tmp_path: Path) -> None:
    url = server.url("/missing.zip")
    dest = tmp_path / "missing.zip"
    with pytest.raises(DownloadError) as info:
        download_url(url, dest, progress=False)
    msg = str(info.value)
    assert url in msg and "404" in msg and "place" in msg and str(dest) in msg
    assert "params.yaml" in msg
    assert len(server.ranges("/missing.zip")) == 1  # a 404 is not retried
    assert not dest.exists()


def test_connection_refused_is_a_download_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed without listen(): nothing accepts connections on that port.
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(DownloadError) as info:
        download_url(url, tmp_path / "data.bin", progress=False, max_resumes=1, timeout=5)
    assert url in str(info.value) and "place" in str(info.value)
    assert isinstance(info.value, OSError)


def test_existing_good_dest_makes_no_request(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    assert download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False) == dest
    assert download_url(server.url("/data.bin"), dest, None, progress=False) == dest
    assert server.requests == []


def test_existing_bad_dest_is_downloaded_again(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    download_url(server.url("/data.bin"), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/data.bin") == [None]


# --- extract_archive ------------------------------------------------------------------------

FILES = {
    "top/a.txt": b"alpha",
    "top/nested/deeper/b.bin": os.urandom(1000),
    "top/nested/c.txt": b"gamma",
    "readme.md": b"# hi",
}


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _assert_extracted(dest: Path) -> None:
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data


def test_extract_zip(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "ds.zip", FILES)
    dest = tmp_path / "out" / "ds"
    assert extract_archive(archive, dest) == dest
    _assert_extracted(dest)
    assert (dest / ".extracted-ds.zip").is_file()
    # Only the extracted entries and the marker: the temporary folder is gone.
    assert sorted(p.name for p in dest.iterdir()) == [".extracted-ds.zip", "readme.md", "top"]
    assert [p.name for p in dest.parent.iterdir()] == ["ds"]


def test_reextract_is_skipped_when_marker_exists(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "ds.zip", FILES)
    dest = tmp_path / "ds"
    extract_archive(archive, dest, marker="done")
    assert (dest / "done").is_file()
    (dest / "top" / "a.txt").write_bytes(b"edited")
    archive.unlink()  # would raise if extraction were attempted
    extract_archive(archive, dest, marker="done")
    assert (dest / "top" / "a.txt").read_bytes() == b"edited"


def test_interrupted_extraction_is_redone(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "ds.zip", FILES)
    dest = tmp_path / "ds"
    # Leftovers from a run killed mid-move: a partial tree and a file where a folder belongs.
    (dest / "top" / "nested").mkdir(parents=True)
    (dest / "top" / "nested" / "c.txt").write_bytes(b"trunc")
    (dest / "readme.md").mkdir()
    extract_archive(archive, dest)
    _assert_extracted(dest)


def test_extract_tar_gz(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "ds.tar.gz", FILES)
    dest = tmp_path / "ds"
    extract_archive(archive, dest)
    _assert_extracted(dest)
    assert (dest / ".extracted-ds.tar.gz").is_file()


@pytest.mark.parametrize("member", ["../evil.txt", "top/../../evil.txt", "/tmp/evil.txt"])
@pytest.mark.parametrize("maker", [_make_zip, _make_tar], ids=["zip", "tar"])
def test_zip_slip_is_rejected(tmp_path: Path, member: str, maker) -> None:
    suffix = ".zip" if maker is _make_zip else ".tar.gz"
    archive = maker(tmp_path / f"evil{suffix}", {"ok.txt": b"ok", member: b"pwned"})
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(DatasetCorruptError) as info:
        extract_archive(archive, dest)
    assert str(archive) in str(info.value)
    assert not (dest / f".extracted-evil{suffix}").exists()
    assert not (dest / "ok.txt").exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_tar_link_outside_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("top/escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(DatasetCorruptError, match="links.tar"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "top").exists()


@pytest.mark.parametrize("name", ["broken.zip", "broken.tar.gz", "broken.bin"])
def test_corrupt_archive(tmp_path: Path, name: str) -> None:
    archive = tmp_path / name
    archive.write_bytes(os.urandom(4096))
    dest = tmp_path / "out"
    with pytest.raises(DatasetCorruptError) as info:
        extract_archive(archive, dest)
    assert str(archive) in str(info.value) and "delete it" in str(info.value)
    assert not (dest / f".extracted-{name}").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_zip_is_corrupt(tmp_path: Path) -> None:
    full = _make_zip(tmp_path / "full.zip", FILES).read_bytes()
    archive = tmp_path / "ds.zip"
    archive.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetCorruptError, match="ds.zip"):
        extract_archive(archive, tmp_path / "out")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nope.zip"):
        extract_archive(tmp_path / "nope.zip", tmp_path / "out")


def test_a_decompression_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PASTIS/metadata.geojson", "{}")
        zf.writestr("PASTIS/DATA_S2/S2_1.npy", b"\0" * (50 << 20))  # 50 MiB -> ~50 KiB
    assert bomb.stat().st_size < 200_000
    out = tmp_path / "out"
    with pytest.raises(DatasetCorruptError, match=r"member 'PASTIS/DATA_S2/S2_1.npy' expands"):
        extract_archive(bomb, out)
    assert not any(out.rglob("*")) and len(list(tmp_path.iterdir())) == 2  # nothing written


def test_total_size_limit_names_the_member_and_the_param(tmp_path: Path) -> None:
    import numpy as np

    big = tmp_path / "big.tar"  # incompressible members: only the total limit applies
    with tarfile.open(big, "w") as tf:
        for i in range(3):
            data = np.random.default_rng(i).bytes(1 << 20)
            info = tarfile.TarInfo(f"d/m{i}.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetCorruptError, match=r"member 'd/m2.bin'.*max_extract_gb"):
        extract_archive(big, tmp_path / "out", max_bytes=(5 << 20) // 2)
    assert extract_archive(big, tmp_path / "ok", max_bytes=4 << 20) == tmp_path / "ok"
    assert (tmp_path / "ok" / "d" / "m2.bin").stat().st_size == 1 << 20
