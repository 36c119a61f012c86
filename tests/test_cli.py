from __future__ import annotations

import json

import pytest

from pimc.cli import main
from pimc.data import PASTIS, EuroSAT


def test_synth_writes_both_layouts(tmp_path, capsys):
    root = tmp_path / "raw"
    code = main(
        [
            "synth",
            "--root",
            str(root),
            "--params",
            str(tmp_path / "none.yaml"),
            "--patches",
            "5",
            "--patch-size",
            "16",
            "--eurosat-per-class",
            "5",
        ]
    )
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pastis"]["patches"] == 5
    assert len(PASTIS(root / "PASTIS", folds=PASTIS.all_folds)) == 5
    assert len(EuroSAT(root / "EuroSAT", split="test")) > 0


def test_download_offline_is_one_clear_line(tmp_path, capsys):
    code = main(
        [
            "download",
            "pastis",
            "--root",
            str(tmp_path / "PASTIS"),
            "--url",
            "http://127.0.0.1:9/PASTIS.zip",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # above it: the progress bar
    assert last.startswith("pimc download: error:") and "127.0.0.1:9" in last
    assert "Traceback" not in err


def test_version_is_the_package_version(capsys):
    import pimc
    from pimc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"pimc {pimc.__version__}\n"
