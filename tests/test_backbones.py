"""Tests for pimc.models.backbones: torchvision state-dict fit, band adaptation, shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pimc.core.errors import ConfigError
from pimc.models.backbones import (
    SmallCNN,
    adapt_first_conv,
    build_backbone,
    load_pretrained,
)

# The repo is checked out with ``shared/`` beside it (locally and in CI).
FIXTURE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "fixtures"
    / "torchvision_resnet_state_dict_shapes.json"
)

EUROSAT_BANDS = [f"B{i:02d}" for i in range(1, 13)] + ["B8A"]  # file order: B8A is last
PASTIS_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


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


def test_load_pretrained_drops_fc_for_feature_backbone(torchvision_shapes):
    model = build_backbone("resnet18", 3)
    assert not hasattr(model, "fc")
    dropped = load_pretrained(model, _zeros_state(torchvision_shapes["resnet18"]))
    assert dropped == ["fc.bias", "fc.weight"]
    assert torch.count_nonzero(model.layer4[0].conv1.weight) == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_load_pretrained_keeps_new_classifier_and_adapts_bands(torchvision_shapes):
    shapes = dict(torchvision_shapes["resnet18"])
    shapes["conv1.weight"] = [64, 13, 7, 7]  # a EuroSAT-pretrained stem
    state = _zeros_state(shapes)
    state["conv1.weight"] = torch.randn(64, 13, 7, 7)
    model = build_backbone("resnet18", 10, num_classes=5)
    fresh_fc = model.fc.weight.clone()
    dropped = load_pretrained(model, state, in_bands=PASTIS_BANDS, weight_bands=EUROSAT_BANDS)
    assert dropped == ["fc.bias", "fc.weight"]
    assert torch.equal(model.fc.weight, fresh_fc)
    assert torch.equal(model.conv1.weight[:, 0], state["conv1.weight"][:, 1])  # B02


def test_load_pretrained_errors_list_keys(torchvision_shapes):
    state = _zeros_state(torchvision_shapes["resnet18"])
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"layer1\.0\.bn1\.running_var.*extra\.weight"):
        load_pretrained(build_backbone("resnet18", 3), state)
    full = _zeros_state(torchvision_shapes["resnet18"])
    with pytest.raises(ConfigError, match="in_bands and weight_bands"):
        load_pretrained(build_backbone("resnet18", 10), full)  # conv1 has 3 bands, model 10
    with pytest.raises(ConfigError, match="both"):
        load_pretrained(build_backbone("resnet18", 3), full, in_bands=["B02"])


def test_adapt_first_conv_selects_bands_by_name():
    weight = torch.randn(8, 13, 3, 3)
    out = adapt_first_conv(weight, PASTIS_BANDS, EUROSAT_BANDS)
    assert out.shape == (8, 10, 3, 3)
    # PASTIS B02..B08 are EuroSAT channels 1..7, B8A is channel 12, B11/B12 are 10/11.
    assert torch.equal(out[:, :7], weight[:, 1:8])
    assert torch.equal(out[:, 7], weight[:, 12])
    assert torch.equal(out[:, 8:], weight[:, 10:12])
    # Aliases: case and the zero in B8 vs B08 do not matter.
    alias = adapt_first_conv(weight, ["b8", "B8A", "b4"], EUROSAT_BANDS)
    assert torch.equal(alias, weight[:, [7, 12, 3]])


def test_adapt_first_conv_fills_missing_bands_with_scaled_mean():
    weight = torch.randn(4, 3, 7, 7)
    out = adapt_first_conv(weight, ["B04", "B03", "B02", "B08"], ["B04", "B03", "B02"])
    assert torch.equal(out[:, :3], weight)
    torch.testing.assert_close(out[:, 3], weight.mean(dim=1) * 3 / 4)


def test_adapt_first_conv_errors():
    with pytest.raises(ConfigError, match="weight_bands"):
        adapt_first_conv(torch.zeros(4, 3, 3, 3), ["B02"], ["B02", "B03"])
    with pytest.raises(ConfigError, match="no band"):
        adapt_first_conv(torch.zeros(4, 2, 3, 3), ["B11"], ["B02", "B03"])
    with pytest.raises(ConfigError, match="duplicate"):
        adapt_first_conv(torch.zeros(4, 2, 3, 3), ["B02", "B2"], ["B02", "B03"])
    with pytest.raises(ConfigError, match="shape"):
        adapt_first_conv(torch.zeros(4, 2, 3), ["B02"], ["B02", "B03"])


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
