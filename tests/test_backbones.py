"""Tests for pimc.models.backbones: torchvision state-dict fit, shapes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pimc.core.errors import ConfigError
from pimc.models.backbones import SmallCNN, build_backbone

# The repo is checked out with ``shared/`` beside it (locally and in CI).
FIXTURE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "fixtures"
    / "torchvision_resnet_state_dict_shapes.json"
)


@pytest.fixture(scope="module")
def torchvision_shapes() -> dict[str, dict[str, list[int]]]:
    if not FIXTURE.is_file():
        pytest.skip(f"torchvision state-dict fixture not found at {FIXTURE} (needs shared/)")
    return json.loads(FIXTURE.read_text())


def _zeros_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.zeros(v, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float)
        for k, v in shapes.items()
    }


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_state_dict_matches_torchvision_exactly(torchvision_shapes, name):
    shapes = torchvision_shapes[name]
    model = build_backbone(name, 3, num_classes=shapes["fc.weight"][0])
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == shapes
    result = model.load_state_dict(_zeros_state(shapes), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.count_nonzero(model.conv1.weight) == 0  # really loaded


@pytest.mark.parametrize("in_channels", [1, 3, 10, 13])
def test_arbitrary_in_channels(in_channels):
    model = build_backbone("resnet18", in_channels, small_input=True).eval()
    assert model.conv1.weight.shape == (64, in_channels, 7, 7)
    assert model(torch.randn(2, in_channels, 9, 9)).shape == (2, 512)
    cnn = build_backbone("small_cnn", in_channels, width=8).eval()
    assert cnn(torch.randn(2, in_channels, 9, 9)).shape == (2, 32)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 9), ("resnet18", 32), ("resnet50", 9)])
def test_small_input_shapes_and_stride(name, size):
    small = build_backbone(name, 10, small_input=True).eval()
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (7, 7)
    x = torch.randn(1, 10, size, size)
    assert small(x).shape == (1, small.num_features)
    stem = small.maxpool(small.relu(small.bn1(small.conv1(x))))
    assert stem.shape[-1] == size  # no down-sampling before layer1
    default = build_backbone(name, 10).eval()
    stem = default.maxpool(default.relu(default.bn1(default.conv1(x))))
    assert stem.shape[-1] == (size + 3) // 4


def test_num_features_and_fc():
    with torch.device("meta"):  # shapes only: skips the slow weight initialisation
        assert build_backbone("resnet34", 3).num_features == 512
        assert build_backbone("resnet50", 3).num_features == 2048
        assert build_backbone("small_cnn", 3, width=8, depth=2).num_features == 16
    model = build_backbone("resnet18", 3, num_classes=7, small_input=True).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


def test_small_cnn_shapes():
    cnn = SmallCNN(3, width=4, depth=4).eval()
    assert cnn.num_features == 32
    assert cnn(torch.randn(3, 3, 64, 64)).shape == (3, 32)
    assert cnn.features[0].stride == (2, 2)
    with pytest.raises(ConfigError, match="depth"):
        SmallCNN(3, depth=0)


def test_build_backbone_errors():
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg'.*resnet18.*small_cnn"):
        build_backbone("vgg", 3)
    with pytest.raises(ConfigError, match="small_input"):
        build_backbone("small_cnn", 3, small_input=True)
    with pytest.raises(ConfigError, match="in_channels"):
        build_backbone("resnet18", 0)
