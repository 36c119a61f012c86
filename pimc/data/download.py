"""Resumable, checksum-verified downloads and safe archive extraction.

Datasets are large and mirrors are flaky, so a download streams into ``<dest>.part``, resumes
with an HTTP ``Range`` request after a dropped connection (or a killed process), and only becomes
``dest`` (atomically) once its md5 matches. Extraction is idempotent the same way: a marker file
written last says the archive was fully unpacked.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import requests
import urllib3.exceptions
from tqdm.auto import tqdm

from pimc.core.errors import ChecksumError, DatasetCorruptError, DatasetNotFoundError, DownloadError

__all__ = ["check_md5", "download_url", "extract_archive", "md5sum"]

# Seconds to wait before the n-th retry is _RETRY_BACKOFF_S * 2 ** (n - 1), capped: long enough
# for a briefly overloaded server to recover, short enough not to stall a pipeline. Tests set 0.
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_MAX_S = 30.0

# Errors after which resuming may succeed; anything else (e.g. a 404) fails at once.
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class _RetryableError(Exception):
    """A transfer stopped short, or the server answered 5xx: resuming may succeed."""


def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex md5 digest of a file, read in chunks so large files fit in memory.

    Args:
        path: File to hash.
        chunk_size: Bytes read at a time.

    Returns:
        The lowercase hexadecimal md5 digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: str | Path, md5: str | None) -> None:
    """Raise if ``path`` does not have the expected md5; do nothing when ``md5`` is None.

    Args:
        path: File to verify.
        md5: Expected hex digest (case-insensitive), or None to skip the check.

    Raises:
        ChecksumError: The digest differs; the message names the file and both digests.
    """
    if md5 is None:
        return
    got = md5sum(path)
    if got != _normalize_md5(md5):
        raise ChecksumError(
            f"{path} has md5 {got}, expected {_normalize_md5(md5)}. The file is corrupt or "
            "incomplete: delete it and re-run. If you deliberately use a mirror or a different "
            "version of the file, fix its md5 in params.yaml instead."
        )


def download_url(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    max_resumes: int = 5,
) -> Path:
    """Download ``url`` to ``dest``, resuming interrupted transfers and verifying the md5.

    Does nothing when ``dest`` already exists and matches ``md5`` (or ``md5`` is None). Data is
    streamed into ``dest + ".part"``; an existing ``.part`` is resumed with a ``Range`` request,
    and ``dest`` only appears, atomically, once the whole file arrived and its md5 matched.

    Args:
        url: HTTP(S) URL to fetch.
        dest: Final path of the file; parent folders are created.
        md5: Expected hex md5 of the file, or None to skip verification.
        progress: Show a tqdm progress bar.
        timeout: Seconds to wait for the connection and for each read.
        chunk_size: Bytes written at a time.
        max_resumes: How many times a dropped connection or a 5xx answer is retried.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: The network failed or the server answered with an HTTP error.
        ChecksumError: The downloaded file does not match ``md5``; the partial file is deleted.
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5sum(dest, chunk_size) == _normalize_md5(md5)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    _fetch_with_retries(url, dest, part, progress, timeout, chunk_size, max_resumes)
    if md5 is not None:
        got = md5sum(part, chunk_size)
        if got != _normalize_md5(md5):
            # A wrong file must not be resumed next time, so it goes.
            part.unlink()
            raise ChecksumError(
                f"The file downloaded from {url} has md5 {got}, expected {_normalize_md5(md5)}; "
                f"it was deleted, nothing was written to {dest}. Re-run to download it again. If "
                "you use a mirror that serves a different version, fix the md5 in params.yaml."
            )
    os.replace(part, dest)
    return dest


def _fetch_with_retries(
    url: str,
    dest: Path,
    part: Path,
    progress: bool,
    timeout: float,
    chunk_size: int,
    max_resumes: int,
) -> None:
    """Fetch ``url`` into ``part`` completely, resuming after up to ``max_resumes`` failures.

    Raises:
        DownloadError: The network failed for good or the server answered with an HTTP error.
    """
    failures = 0
    with (
        requests.Session() as session,
        tqdm(
            desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
        ) as bar,
    ):
        while True:
            try:
                _fetch_into(session, url, part, bar, timeout=timeout, chunk_size=chunk_size)
                return
            except (*_TRANSIENT_ERRORS, _RetryableError) as exc:
                failures += 1
                if failures > max_resumes:
                    raise DownloadError(
                        _failure_message(url, dest, f"{exc} (gave up after {failures} attempts)")
                    ) from exc
                time.sleep(min(_RETRY_BACKOFF_S * 2 ** (failures - 1), _RETRY_BACKOFF_MAX_S))
            except requests.RequestException as exc:
                raise DownloadError(_failure_message(url, dest, str(exc))) from exc


def _fetch_into(
    session: requests.Session,
    url: str,
    part: Path,
    bar: tqdm,
    *,
    timeout: float,
    chunk_size: int,
) -> None:
    """Make one request, appending to (or restarting) ``part``; return once it is complete."""
    offset = part.stat().st_size if part.is_file() else 0
    # identity: a server adding Content-Encoding: gzip would make requests decompress the body,
    # so the bytes written would neither match Content-Length nor the published md5.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and offset:
            _, total = _parse_content_range(response.headers.get("Content-Range"))
            if total is None or total == offset:
                # Nothing left to fetch: a previous run got every byte but was killed before
                # the rename. The md5 check, if any, guards against a bogus part.
                bar.reset(total=offset)
                bar.update(offset)
                return
            part.unlink()  # It cannot be a prefix of the remote file.
            raise _RetryableError(f"{part} does not match the remote size {total}; restarting")
        if response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code} {response.reason}")
        response.raise_for_status()

        length = response.headers.get("Content-Length")
        if response.status_code == 206 and offset:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _RetryableError(f"server resumed at byte {start}, not {offset}; restarting")
            mode = "ab"
            if total is None and length is not None:
                total = offset + int(length)
        else:
            # A 200 answer to a Range request means the server ignores Range: start over.
            mode, offset = "wb", 0
            total = int(length) if length is not None else None

        bar.reset(total=total)
        bar.update(offset)
        with open(part, mode) as f:
            # Not iter_content: when the connection drops it discards the bytes it had buffered
            # towards a full chunk. Raw reads hand over every byte received, so a resume loses
            # nothing. decode_content=False keeps the bytes as sent (we asked for identity).
            while chunk := response.raw.read(chunk_size, decode_content=False):
                f.write(chunk)
                bar.update(len(chunk))

    # urllib3 2 raises on a body shorter than Content-Length, urllib3 1.26 does not; and a
    # server may answer a Range request with a shorter range than asked. Both resume here.
    size = part.stat().st_size
    if total is not None and size < total:
        raise _RetryableError(f"connection closed after {size} of {total} bytes")


def _parse_content_range(header: str | None) -> tuple[int | None, int | None]:
    """Return (start, total) from ``bytes START-END/TOTAL`` or ``bytes */TOTAL``; None if absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _normalize_md5(md5: str) -> str:
    return md5.strip().lower()


def _failure_message(url: str, dest: Path, error: str) -> str:
    return (
        f"Could not download {url}: {error}. Check your network connection and re-run (a partial "
        f"download is resumed), or download {url} yourself and place it at {dest}. To use a "
        "mirror, override the URL and md5 in params.yaml."
    )


#: Largest uncompressed / compressed size accepted, for the archive and for each member over
#: 1 MiB: Sentinel-2 rasters compress ~1.1-3x; a zip bomb, thousands of times.
MAX_RATIO = 100.0
_RATIO_FLOOR = 1 << 20


def extract_archive(
    archive: str | Path,
    dest_dir: str | Path,
    *,
    marker: str | None = None,
    max_bytes: int = 64 << 30,
) -> Path:
    """Extract a zip or tar archive into ``dest_dir``, once.

    Members are unpacked into a temporary folder next to ``dest_dir`` (same filesystem), each
    top-level entry is then moved into ``dest_dir`` (replacing a leftover from an interrupted
    run), and a marker file is written last. When the marker exists nothing is done.

    Args:
        archive: ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
        dest_dir: Folder to extract into; created if missing.
        marker: Name of the marker file inside ``dest_dir``; defaults to
            ``.extracted-<archive name>``.
        max_bytes: Most bytes the extraction may write (all members together); with
            :data:`MAX_RATIO`, checked before anything is written (a decompression bomb).

    Returns:
        ``dest_dir`` as a Path.

    Raises:
        DatasetNotFoundError: ``archive`` does not exist.
        DatasetCorruptError: The archive is unreadable, of an unknown format, has members
            that would land outside ``dest_dir``, or would extract to more than ``max_bytes``
            or :data:`MAX_RATIO` times its size.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker_path = dest_dir / (marker or f".extracted-{archive.name}")
    if marker_path.exists():
        return dest_dir
    if not archive.is_file():
        raise DatasetNotFoundError(
            f"Archive {archive} does not exist: download it first (or place it there by hand)."
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.extracting-", dir=dest_dir.parent))
    try:
        _extract_to(archive, tmp, max_bytes)
        for entry in sorted(tmp.iterdir()):
            target = dest_dir / entry.name
            _remove(target)
            os.replace(entry, target)
        marker_path.write_text(f"{archive.name}\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


def _extract_to(archive: Path, out: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into the empty folder ``out``, rejecting unsafe member paths and
    sizes (declared sizes: zipfile stops reading a member at its declared size, and a tar
    member's size is exact)."""
    name = archive.name.lower()
    is_zip = name.endswith(".zip") or (
        not name.endswith(_TAR_SUFFIXES) and zipfile.is_zipfile(archive)
    )
    corrupt = f"{archive} is corrupt or incomplete: delete it and re-run to download it again."
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                _check_members(archive, zf.namelist())
                infos = zf.infolist()
                _check_sizes(
                    archive, [(i.filename, i.file_size, i.compress_size) for i in infos], max_bytes
                )
                zf.extractall(out)
        elif name.endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                _check_members(archive, tf.getnames())
                # A tar stream has no per-member compressed size: the archive ratio bounds it.
                sizes = [(m.name, m.size, None) for m in tf.getmembers()]
                _check_sizes(archive, sizes, max_bytes)
                # "data" also refuses links pointing outside, device files and setuid bits.
                tf.extractall(out, filter="data")
        else:
            raise DatasetCorruptError(f"{archive} is neither a zip nor a tar archive. {corrupt}")
    except tarfile.FilterError as exc:
        raise DatasetCorruptError(
            f"{archive} has an unsafe member ({exc}); refusing to extract it. Delete it and "
            "download it again from a trusted source."
        ) from exc
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        gzip.BadGzipFile,
        lzma.LZMAError,
        zlib.error,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise DatasetCorruptError(f"{corrupt} ({type(exc).__name__}: {exc})") from exc


def _check_members(archive: Path, names: list[str]) -> None:
    """Reject absolute member paths and ``..`` components (zip slip)."""
    for member in names:
        normalized = member.replace("\\", "/")
        parts = PurePosixPath(normalized).parts
        # A drive letter ("C:") makes a path absolute on Windows.
        drive = bool(parts) and len(parts[0]) == 2 and parts[0][1] == ":"
        if normalized.startswith("/") or ".." in parts or drive:
            raise DatasetCorruptError(
                f"{archive} contains the member {member!r}, which would be written outside the "
                "extraction folder; refusing to extract it. Delete the archive and download it "
                "again from a trusted source."
            )


def _check_sizes(
    archive: Path, members: list[tuple[str, int, int | None]], max_bytes: int
) -> None:
    """Refuse an archive whose ``(name, size, compressed size)`` members would extract to more
    than ``max_bytes`` in all, or expand more than :data:`MAX_RATIO` times."""
    fix = (
        "If it is the genuine dataset, raise data.<dataset>.max_extract_gb in params.yaml; "
        "otherwise delete it and download it again from a trusted source."
    )
    total = 0
    for name, size, packed in members:
        total += size
        if size > max_bytes or total > max_bytes:
            raise DatasetCorruptError(
                f"{archive}: extracting it would write more than {max_bytes / 2**30:.3g} GiB "
                f"(member {name!r}: {size / 2**30:.3g} GiB, {total / 2**30:.3g} GiB so far); "
                f"refusing. {fix}"
            )
        if packed is not None and size > _RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
            raise DatasetCorruptError(
                f"{archive}: member {name!r} expands {size / max(packed, 1):.0f}x "
                f"({packed} -> {size} bytes; at most {MAX_RATIO:g}x): a decompression bomb? {fix}"
            )
    packed_all = archive.stat().st_size
    if total > _RATIO_FLOOR and total > MAX_RATIO * max(packed_all, 1):
        raise DatasetCorruptError(
            f"{archive}: expands {total / max(packed_all, 1):.0f}x ({packed_all} -> {total} "
            f"bytes; at most {MAX_RATIO:g}x): a decompression bomb? {fix}"
        )


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
