"""The task registry, the method records, params.yaml and dvc.yaml name the same things."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pimc.core.config import load_params
from pimc.core.errors import ConfigError
from pimc.core.task_config import TASK_NAMES, FinetuneConfig
from pimc.tasks.methods import METHODS, SINGLE_INDEX, method, method_plan
from pimc.tasks.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent


def test_registry_params_and_dvc_name_the_same_tasks():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert tuple(TASKS) == TASK_NAMES
    assert list(dvc["stages"]["finetune"]["foreach"]) == list(TASK_NAMES)
    assert list(params["finetune"]) == list(TASK_NAMES)
    assert tuple(load_params(ROOT / "params.yaml").retrain.tasks) == TASK_NAMES


def test_each_spec_uses_its_config_section():
    for name, spec in TASKS.items():
        assert type(getattr(FinetuneConfig(), name)) is spec.config
        assert spec.config.SECTION == f"finetune.{name}"
        assert spec.encoder_model in ("pimc-rp-encoder", "pimc-image-encoder")


def test_every_configurable_method_has_a_record():
    for spec in TASKS.values():
        for name in spec.config.METHODS:
            assert name == SINGLE_INDEX or name in METHODS, (spec.name, name)


def test_method_records_match_their_meaning():
    assert method("pimc_linear").pretrained and method("pimc_linear").frozen
    assert method("pimc_finetune").pretrained and not method("pimc_finetune").frozen
    assert not method("random_init").pretrained
    assert method("random_init_linear").frozen and not method("random_init_linear").pretrained
    assert method("cnn1d").input == "series" and method("persistence").input == "none"
    single = method("single_index_evi", ["ndvi", "evi", "savi"])
    assert single.channel == 1 and single.pretrained and not single.frozen


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method("nope")
    with pytest.raises(ConfigError, match="single_index_<index>"):
        method("single_index_ndre", ["ndvi"])
    with pytest.raises(ConfigError, match="choose one of forecast, pixel_cls, eurosat"):
        get_task("segmentation")


def test_method_plan_puts_the_mode_first_and_expands_single_index():
    cfg = FinetuneConfig().pixel_cls
    names = [m.name for m in method_plan(cfg, ["ndvi", "evi"])]
    assert names[0] == f"pimc_{cfg.mode}"
    assert names[-2:] == ["single_index_ndvi", "single_index_evi"]
    assert len(names) == len(set(names))


def test_deploy_metadata_is_plain_and_names_its_task():
    params = load_params(ROOT / "params.yaml")
    result = {"class_ids": [0, 3], "class_names": ["Background", "Corn"]}
    for name, spec in TASKS.items():
        meta = spec.metadata(params, result)
        assert meta["pimc_task"] == name
        yaml.safe_dump(meta)  # YAML-safe values only (MLflow stores it in MLmodel)
        assert (spec.predict_input is None) == (name == "eurosat")
