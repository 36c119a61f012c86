"""The pipeline/retrain command lines (the flows themselves run in tests/test_pipeline.py)."""

from __future__ import annotations

import pytest

from flows import pipeline, retrain


def test_repro_or_experiment_command():
    assert pipeline.repro_command(None) == ["repro"]
    assert pipeline.repro_command({}, force=True) == ["repro", "--force"]
    cmd = pipeline.repro_command({"finetune.eurosat.lr": 0.005, "data.source": "real"})
    assert cmd == ["exp", "run", "-S", "finetune.eurosat.lr=0.005", "-S", 'data.source="real"']
    assert pipeline.repro_command({"prepare.folds": [1, 2]})[-1] == "prepare.folds=[1, 2]"


def test_failed_dvc_command_names_command_and_output(tmp_path):
    from pimc.core.errors import PimcError

    with pytest.raises(PimcError, match=r"(?s)`dvc repro` failed in .*not inside of a DVC repo"):
        pipeline.dvc(["repro"], tmp_path)
    assert pipeline.has_remote(tmp_path) is False


def test_retrain_arguments():
    args = retrain.build_parser().parse_args(["serve", "--cron", "*/5 * * * *", "-S", "a.b=1"])
    assert (args.command, args.cron, args.overrides) == ("serve", "*/5 * * * *", ["a.b=1"])
    assert retrain.build_parser().parse_args([]).command == "run"


def test_serve_needs_a_prefect_server(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(SystemExit, match="PREFECT_API_URL"):
        retrain.main(["serve"])
