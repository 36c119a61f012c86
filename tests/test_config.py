from __future__ import annotations

import dataclasses

import pytest
import yaml

from pimc.core.config import DataConfig, Params, flatten, load_params
from pimc.core.errors import ConfigError, UsageError
from pimc.core.typed_config import parse_overrides
from tests.helpers import REPO


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_load_into_dataclasses():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert isinstance(params.data, DataConfig)
    assert params.data.source == "synthetic"
    assert params.data.synthetic.patch_size >= 8


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(Params)])
def test_params_yaml_equals_the_dataclass_defaults(section):
    """Code that builds ``Params()`` (tests, notebooks) trains what the pipeline trains."""
    assert section in yaml.safe_load((REPO / "params.yaml").read_text())  # every key written out
    assert getattr(load_params(REPO / "params.yaml"), section) == getattr(Params(), section)


def test_defaults_fill_missing_keys(tmp_path):
    params = load_params(write(tmp_path, "data:\n  seed: 7\n"))
    assert params.data.seed == 7
    assert params.data.synthetic == DataConfig().synthetic


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'data\.synthetic\.patch_sise'.*patch_size"):
        load_params(write(tmp_path, "data:\n  synthetic:\n    patch_sise: 3\n"))


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_params(write(tmp_path, "trian: {}\n"))


def test_bad_literal_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match="'data.source' = 'web'.*'synthetic', 'real'"):
        load_params(write(tmp_path, "data:\n  source: web\n"))


@pytest.mark.parametrize("text", ["data:\n  seed: 1.5\n", "data:\n  seed: true\n", "data: 3\n"])
def test_bad_types(tmp_path, text):
    with pytest.raises(ConfigError, match="data"):
        load_params(write(tmp_path, text))


def test_value_checks_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.synthetic.cloud_prob"):
        load_params(write(tmp_path, "data:\n  synthetic:\n    cloud_prob: 2.0\n"))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("finetune.pixel_cls.label_fraction", 0.0, "must be in"),
        ("finetune.forecast.label_fraction", 1.5, "must be in"),
        ("finetune.eurosat.epoch_steps", 0, "must be >= 1"),
        ("finetune.pixel_cls.val_pixels", 1, "must be >= 2"),
        ("prepare.pixels_per_patch", 0, "or null for every pixel"),
        ("pretrain.batches", "by_parcel", "pretrain.batches"),
        ("benchmark.seeds", [0, 0, 1], "3 distinct seeds"),
        ("benchmark.label_fractions", [0.1, 0.0], "values in"),
        ("benchmark.pixel_cls", ["cnn2d"], "unknown"),
    ],
)
def test_new_sections_reject_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_params(REPO / "params.yaml", {key: value})
    assert key.rsplit(".", 1)[0] in str(err.value)


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, "data:\n  seed: 1\n")
    assert load_params(path, {"data.source": "real"}).data.source == "real"
    with pytest.raises(ConfigError, match="unknown key 'data.sed'"):
        load_params(path, {"data.sed": 3})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_configs_are_frozen_and_flatten():
    params = Params()
    with pytest.raises(AttributeError):
        params.data.seed = 3  # type: ignore[misc]
    flat = flatten(params)
    assert flat["data.synthetic.patch_size"] == params.data.synthetic.patch_size
    assert flat["data.eurosat.url"] is None


def test_exponent_floats_without_a_dot(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-6` as a string; params and -S overrides still get floats."""
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  forecast:\n    lr: 1e-6\n")
    assert load_params(path).finetune.forecast.lr == 1e-6
    assert parse_overrides(["finetune.forecast.lr=2e-6"]) == {"finetune.forecast.lr": 2e-6}
    with pytest.raises(ConfigError, match="'finetune.forecast.lr' = 'fast' is not a valid float"):
        load_params(path, {"finetune.forecast.lr": "fast"})


def test_overrides_are_typed_as_yaml_with_dates_kept_as_text():
    got = parse_overrides(["pretrain.epochs=2", "prepare.folds=[1, 2]", "data.root=x=y"])
    assert got == {"pretrain.epochs": 2, "prepare.folds": [1, 2], "data.root": "x=y"}
    assert parse_overrides(["prepare.grid_start=2018-10-01"]) == {
        "prepare.grid_start": "2018-10-01"
    }
    for bad in ("pretrain.epochs", "=3", "prepare.folds=[1,"):
        with pytest.raises(UsageError, match="override"):
            parse_overrides([bad])


def test_flows_use_the_library_override_parser():
    import importlib

    from flows import common

    for name in ("data", "prepare", "recurrence", "pretrain", "finetune", "pipeline", "retrain"):
        assert importlib.import_module(f"flows.{name}").parse_overrides is parse_overrides, name
    args = common.stage_args("x", ["-S", "prepare.grid_start=2018-10-01"])
    assert args.overrides == ["prepare.grid_start=2018-10-01"]
    with pytest.raises(SystemExit):  # argparse's usage error, not a traceback
        common.stage_args("x", ["-S", "no-equals-sign"])


# Values that used to pass load_params and fail inside a stage after its outputs were deleted
# (issue 13), or were accepted silently (a 1-date grid, a capped pixel count, ignore_index 99).
BAD_PARAMS = [
    ("prepare.patch_size", -1, "prepare.patch_size"),
    ("prepare.patch_size", 65, "prepare.patch_size"),
    ("prepare.despike_window", 2, "prepare.despike_window"),
    ("prepare.despike_window", 0, "prepare.despike_window"),
    ("prepare.grid_start", "2020-01-01", "prepare.grid_start/grid_end"),
    ("prepare.grid_start", "nope", "prepare.grid_start"),
    ("prepare.patch_date_index", 100, "prepare.patch_date_index"),
    ("prepare.random_dates", 0, "prepare.random_dates"),
    ("prepare.grid_step_days", 1000, "finetune.forecast.input_len/horizon"),
    ("prepare.pixels_per_patch", 100000, "prepare.pixels_per_patch"),
    ("prepare.exclude_classes", list(range(20)), "prepare.exclude_classes"),
    ("prepare.exclude_classes", [25], "prepare.exclude_classes"),
    ("prepare.indices", ["ndvi", "ndvi"], "prepare.indices"),
    ("prepare.indices", ["foo"], "prepare.indices"),
    ("prepare.folds", [1, 2], "prepare.folds"),
    ("prepare.out", "", "prepare.out"),
    ("prepare.out", ".", "prepare.out"),
    ("recurrence.dimension", 0, "recurrence.dimension"),
    ("recurrence.dimension", 100, "recurrence.dimension/time_delay"),
    ("recurrence.threshold", -1.0, "recurrence.threshold"),
    ("pretrain.device", "tpu", "pretrain.device"),
    ("finetune.forecast.device", "tpu", "finetune.forecast.device"),
    ("finetune.forecast.input_len", 45, "finetune.forecast.input_len/horizon"),
    ("finetune.pixel_cls.ignore_index", 99, "finetune.pixel_cls.ignore_index"),
    ("finetune.eurosat.bands", ["B99"], "finetune.eurosat.bands"),
    ("compute.dask_address", "scheduler", "compute.dask_address"),
]


@pytest.mark.parametrize(
    "key, value, named", BAD_PARAMS, ids=[f"{k}={v}" for k, v, _ in BAD_PARAMS]
)
def test_a_bad_value_is_rejected_at_load_naming_its_key(key, value, named):
    with pytest.raises(ConfigError, match=f"'{named}'"):
        load_params(REPO / "params.yaml", {key: value})


@pytest.mark.parametrize(
    "overrides",
    [
        {"prepare.time_axis": "pad"},
        {"prepare.patch_date": "fixed", "prepare.patch_date_index": 37},
        {"prepare.pixels_per_patch": 1024, "prepare.patch_size": 63},
        {"data.source": "real", "prepare.patch_size": 65, "prepare.pixels_per_patch": 16384},
        {"recurrence.dimension": 0.25, "recurrence.time_delay": 0.1},
        {"pretrain.device": "cuda:1", "finetune.eurosat.device": "mps"},
    ],
)
def test_valid_edge_values_still_load(overrides):
    load_params(REPO / "params.yaml", overrides)
