"""BatchNorm folding (pimc.models.fold): same eval outputs, no conv -> BN left, exportable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pimc.core.config import ModelConfig, Params
from pimc.models import ResNet
from pimc.models.backbones import Bottleneck
from pimc.models.fold import fold_batchnorm
from pimc.tasks.baselines import CNN1d
from pimc.tasks.common import TaskModel, tower_backbone
from pimc.tasks.forecast import Forecaster

C, S, H = 3, 16, 5  # indices (channels), RP side, forecast horizon


def _rp_classifier(backbone: str, frozen: bool = False) -> TaskModel:
    cfg = ModelConfig(rp_backbone=backbone)
    return TaskModel(tower_backbone(None, "rp_encoder", C, cfg), 4, frozen=frozen)


def _bottleneck_classifier() -> TaskModel:
    # One Bottleneck per stage: resnet50's block kind without its 23M parameters.
    return TaskModel(ResNet(Bottleneck, (1, 1, 1, 1), C, small_input=True), 4)


def _series_classifier() -> TaskModel:
    return TaskModel(CNN1d(C), 4, in_mean=torch.rand(C), in_std=torch.rand(C) + 0.5)


def _rp_forecaster() -> Forecaster:
    backbone = tower_backbone(None, "rp_encoder", C, ModelConfig())
    return Forecaster(backbone, C, H, torch.rand(C), torch.rand(C) + 0.5, rp_input=True)


def _series_forecaster() -> Forecaster:
    mean, std = torch.rand(C), torch.rand(C) + 0.5
    return Forecaster(CNN1d(C), C, H, mean, std, rp_input=False, context=2)


def _eurosat() -> TaskModel:
    backbone = tower_backbone(None, "image_encoder", 10, ModelConfig())
    return TaskModel(backbone, 10, in_mean=torch.rand(10), in_std=torch.rand(10) + 0.5)


# name -> (model factory, input shape, conv -> BN pairs it holds)
CASES = {
    "pixel_cls_small_cnn": (lambda: _rp_classifier("small_cnn"), (C, S, S), 3),
    "pixel_cls_small_cnn_linear_probe": (lambda: _rp_classifier("small_cnn", True), (C, S, S), 3),
    "pixel_cls_resnet18": (lambda: _rp_classifier("resnet18"), (C, S, S), 1 + 8 * 2 + 3),
    "pixel_cls_bottleneck": (_bottleneck_classifier, (C, S, S), 1 + 4 * 3 + 4),
    "pixel_cls_cnn1d": (_series_classifier, (C, 24), 3),
    "forecast_rp": (_rp_forecaster, (C, S, S + 1), 3),
    "forecast_cnn1d": (_series_forecaster, (C, 16), 3),
    "eurosat": (_eurosat, (10, S, S), 3),
}


def _trained(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A model with BN statistics and affine params far from their (0, 1) init, and an input."""
    factory, shape, _ = CASES[name]
    torch.manual_seed(0)
    model = factory()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.train()
        for _ in range(4):
            model(torch.randn(16, *shape) * 3 + 1)
    return model.eval(), torch.randn(8, *shape) * 3 + 1


def _batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_the_training_forwards_moved_the_statistics():
    model, _ = _trained("pixel_cls_small_cnn")
    bn = model.backbone.features[1]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean), atol=0.1)


@pytest.mark.parametrize("name", CASES)
def test_folded_model_answers_as_the_original(name):
    model, x = _trained(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # fold_batchnorm must neither need nor change eval mode
    folded = fold_batchnorm(model)
    assert model.training and not folded.training
    model.eval()
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    # Only the head's BatchNorm1d (which precedes a Linear, no conv) is left.
    left = _batchnorms(folded)
    assert len(_batchnorms(model)) - len(left) == CASES[name][2]
    assert left == ["head.0"]


@pytest.mark.parametrize("name", CASES)
def test_folded_model_exports(name):
    model, x = _trained(name)
    folded = fold_batchnorm(model)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(folded, (x,), dynamic_shapes=({0: batch},))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert sum("batch_norm" in op for op in ops) == 1  # the head's
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x[:3]), model(x[:3]), rtol=1e-4, atol=1e-5)


def test_a_bn_without_running_stats_or_after_a_non_conv_is_kept():
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3, track_running_stats=False),  # eval still uses batch stats
        nn.Conv2d(3, 3, 1),
        nn.ReLU(),
        nn.BatchNorm2d(3),  # after a ReLU
        nn.Conv1d(3, 3, 1),
        nn.BatchNorm2d(3),  # wrong kind for a Conv1d's output
    )
    assert len(_batchnorms(fold_batchnorm(net))) == 3


def test_register_logs_the_folded_model_and_keeps_the_result(monkeypatch):
    from flows import finetune
    from pimc import tracking

    model, x = _trained("eurosat")
    for fn in ("tag_version", "describe_model", "bootstrap_champion"):
        monkeypatch.setattr(tracking, fn, lambda *a, **k: None)
    logged = {}

    class Run:
        def register_model(self, model, name, example, registered, metadata=None):
            logged["model"] = model
            return "1"

    result = {
        "best_model": model,
        "example_input": x.numpy(),
        "methods": {"pimc_finetune": {"accuracy": 0.5}, "pimc_linear": {"accuracy": 0.5}},
    }
    assert finetune.register.fn("eurosat", result, Params(), Run()) == "1"
    assert result["best_model"] is model and len(_batchnorms(model)) == 4
    assert _batchnorms(logged["model"]) == ["head.0"]
    with torch.no_grad():
        np.testing.assert_allclose(logged["model"](x), model(x), rtol=1e-4, atol=1e-5)


def test_a_registered_folded_classifier_and_its_raw_twin_answer_as_the_unfolded(tiny_data):
    """The pt2 round trip of a folded model (pickle-free check, ``pimc predict``) and the
    ``-raw`` pyfunc that copies its pt2 folder, against the unfolded module itself."""
    import mlflow.pyfunc

    from pimc import tracking
    from pimc.data.pastis import PASTIS
    from pimc.predict import load_deployed, predict_patch, read_patch
    from pimc.tasks.registry import TASKS
    from pimc.tracking.serving import raw_rows, register_raw_model
    from tests import test_predict as tp

    n_idx, name = len(tp.PARAMS.prepare.indices), "pimc-test-folded"
    torch.manual_seed(0)
    model = TaskModel(tower_backbone(None, "rp_encoder", n_idx, tp.PARAMS.model), 4)
    with torch.no_grad():
        model.train()(torch.randn(32, n_idx, 16, 16) + 1)
    result = {"class_ids": tp.CLASS_IDS, "class_names": [PASTIS.classes[i] for i in tp.CLASS_IDS]}
    meta = TASKS["pixel_cls"].metadata(tp.PARAMS, result)
    with tracking.start_run("finetune@pixel_cls", {}, experiment="test-fold") as run:
        example = torch.rand(4, n_idx, 16, 16).numpy()
        version = run.register_model(fold_batchnorm(model), "pixel_cls", example, name, meta)
    deployed, meta = load_deployed(f"{name}/{version}")
    patch = read_patch(tp._first_patch(tiny_data)[1])
    want = predict_patch(model.eval(), meta, patch, progress=False)
    got = predict_patch(deployed, meta, patch, progress=False)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-4, atol=1e-6)

    pixels = [(0, 0), (3, 7), (15, 15)]
    with tracking.start_run("finetune@pixel_cls", {}, experiment="test-fold") as run:
        rows = raw_rows(patch.image.numpy(), patch.dates, pixels[:2])
        raw = register_raw_model(run, f"models:/{name}/{version}", meta, rows, f"{name}-raw")
    out = mlflow.pyfunc.load_model(f"models:/{name}-raw/{raw}").predict(
        raw_rows(patch.image.numpy(), patch.dates, pixels)
    )
    np.testing.assert_allclose(
        out["confidence"], [want["confidence"][r, c] for r, c in pixels], rtol=1e-4
    )
