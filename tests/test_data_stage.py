"""The ``data`` stage through the paths users take: the Prefect flow, and real downloads
served by a local HTTP server (127.0.0.1) in place of the Hugging Face / Zenodo mirrors."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from pimc import tracking
from pimc.core.config import load_params
from pimc.core.errors import ChecksumError, DownloadError, InputError
from pimc.data import PASTIS, EuroSAT
from pimc.data.download import md5sum
from pimc.stages import data as raw_stage

TINY = """
data:
  root: data/raw
  synthetic: {pastis_patches: 5, patch_size: 16, max_dates: 42, eurosat_per_class: 5}
"""


def test_data_flow_writes_metrics_and_logs_run(
    prefect_harness, tracking_store, tmp_path, monkeypatch
):
    from flows.data import HEADLINE, data_flow

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(TINY)
    stats = data_flow("params.yaml")
    # DVC metrics: the difficulty card's headline only; counts and the whole card beside it.
    metrics = json.loads(Path("metrics/data.json").read_text())
    assert set(metrics) == set(HEADLINE)
    report = json.loads(Path("reports/data.json").read_text())
    assert report["stats"]["pastis"]["patches"] == 5 == stats["pastis"]["patches"]
    assert 38 <= report["stats"]["pastis"]["dates_min"] <= report["stats"]["pastis"]["dates_max"]
    (run,) = tracking.search_runs("data")  # this test's own store holds this run only
    assert run.info.status == "FINISHED"
    assert run.data.params["data.source"] == "synthetic"
    assert run.data.metrics["pastis_patches"] == 5
    assert run.data.metrics["eurosat_train_tiles"] + run.data.metrics["eurosat_test_tiles"] > 0
    assert len(PASTIS("data/raw/PASTIS", folds=PASTIS.all_folds)) == 5
    for key in ("nn1_macro_f1", "centroid_macro_f1", "chance_macro_f1", "cloud_share",
                "eurosat_nn1_accuracy", "eurosat_centroid_accuracy"):  # fmt: skip
        assert 0.0 <= run.data.metrics[f"difficulty_{key}"] <= 1.0, key
        assert report["difficulty"][key] == run.data.metrics[f"difficulty_{key}"]
    assert any(k.startswith("difficulty_parcels_fold") for k in run.data.metrics)
    card = tracking.load_dict(run.info.run_id, "difficulty.json")
    assert card["nn1_macro_f1"] == metrics["difficulty_nn1_macro_f1"]


@pytest.fixture
def mirror(tiny_data, tmp_path):
    """A local HTTP server holding EuroSAT's files and a PASTIS.zip made from the tiny data."""
    site = tmp_path / "site"
    shutil.copytree(
        tiny_data / "EuroSAT", site / "eurosat", ignore=shutil.ignore_patterns("ds", ".*")
    )
    with zipfile.ZipFile(site / "PASTIS.zip", "w") as zf:
        for path in sorted((tiny_data / "PASTIS").rglob("*")):
            zf.write(path, Path("PASTIS") / path.relative_to(tiny_data / "PASTIS"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", site
    server.shutdown()
    server.server_close()


def test_real_download_path_against_local_mirror(mirror, tmp_path):
    url, site = mirror
    cfg = load_params(
        Path(__file__).parents[1] / "params.yaml",
        {
            "data.source": "real",
            "data.root": str(tmp_path / "raw"),
            "data.eurosat.url": f"{url}/eurosat/",
            "data.eurosat.md5": md5sum(site / "eurosat" / EuroSAT.filename),
            "data.pastis.url": f"{url}/PASTIS.zip",
            "data.pastis.md5": md5sum(site / "PASTIS.zip"),
        },
    ).data
    raw_stage.download_eurosat(cfg)
    raw_stage.download_pastis(cfg)
    stats = raw_stage.summarize(cfg)
    assert stats["pastis"]["patches"] == 5
    assert stats["eurosat"]["train_tiles"] > 0
    # Issue 15: an extracted archive does not stay inside the DVC output (keep_archives: false).
    assert not (tmp_path / "raw" / PASTIS.filename).exists()
    assert not (tmp_path / "raw" / "EuroSAT" / EuroSAT.filename).exists()
    assert (tmp_path / "raw" / f".extracted-{PASTIS.filename}").is_file()
    # A second run finds everything in place and downloads nothing (server may be gone).
    raw_stage.download_eurosat(cfg)


def test_zip_failing_md5_is_refused(mirror, tmp_path):
    url, _ = mirror
    with pytest.raises(ChecksumError, match=EuroSAT.filename):
        EuroSAT(tmp_path / "EuroSAT", download=True, url=f"{url}/eurosat/", md5="0" * 32)
    assert not (tmp_path / "EuroSAT" / EuroSAT.filename).exists()


def test_offline_error_names_url_and_manual_placement(tmp_path):
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1:9/PASTIS\.zip.*place"):
        PASTIS(tmp_path / "PASTIS", download=True, url="http://127.0.0.1:9/PASTIS.zip")


def test_keep_archives_keeps_them(mirror, tmp_path):
    url, site = mirror
    cfg = load_params(
        Path(__file__).parents[1] / "params.yaml",
        {"data.source": "real", "data.root": str(tmp_path / "raw"), "data.keep_archives": True,
         "data.pastis.url": f"{url}/PASTIS.zip", "data.pastis.md5": md5sum(site / "PASTIS.zip")},
    ).data  # fmt: skip
    raw_stage.download_pastis(cfg)
    assert (tmp_path / "raw" / PASTIS.filename).is_file()


def test_a_download_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch, capsys):
    cfg = load_params(
        Path(__file__).parents[1] / "params.yaml",
        {"data.source": "real", "data.root": str(tmp_path / "raw")},
    ).data
    copying = tmp_path / "copying.dvc"  # a DVC folder with the default cache (reflink, copy)
    copying.mkdir()
    (copying / "config").write_text("[core]\n    analytics = false\n")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(raw_stage.shutil, "disk_usage", lambda p: usage._replace(free=int(50e9)))
    with pytest.raises(InputError, match=r"50.0 GB free but the download needs ~85.8 GB"):
        raw_stage.check_disk(cfg, copying)
    assert not (tmp_path / "raw").exists()  # nothing fetched, nothing created
    monkeypatch.setattr(raw_stage.shutil, "disk_usage", lambda p: usage._replace(free=int(1e12)))
    assert raw_stage.check_disk(cfg, copying)["needed_gb"] == 85.8
    assert "need ~85.8 GB at the peak" in capsys.readouterr().out
    # The repository's own DVC config links its cache: the extraction is not stored twice,
    # and full PASTIS + EuroSAT fit in 80 GB (issue 15).
    plan = raw_stage.check_disk(cfg, Path(__file__).parents[1] / ".dvc")
    assert plan["dvc_links"] and plan["needed_gb"] == 74.0 <= 80
    assert "DVC links its cache" in capsys.readouterr().out
