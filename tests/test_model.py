"""Tests for pimc.models.pimc (two-tower model) and pimc.models.heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pimc.core.errors import ConfigError
from pimc.models import PIMC, ProjectionHead
from pimc.training.losses import SymmetricInfoNCE

SMALL = {"embed_dim": 16, "hidden_dim": 32}


@pytest.fixture(scope="module")
def model() -> PIMC:
    torch.manual_seed(0)
    return PIMC(**SMALL)


def test_forward_shapes_and_unit_norm(model):
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 10, 9, 9))
    assert set(out) == {"pixel_features", "image_features", "logit_scale"}
    assert out["pixel_features"].shape == (4, 16)
    assert out["image_features"].shape == (4, 16)
    assert out["logit_scale"].shape == ()
    for key in ("pixel_features", "image_features"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(4))


def test_output_keys_are_loss_arguments(model):
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 10, 15, 15))
    loss = SymmetricInfoNCE()(**out)
    loss.backward()
    assert model.logit_scale.grad is not None
    assert model.rp_encoder.backbone.features[0].weight.grad is not None
    assert model.image_encoder.head.net[0].weight.grad is not None


def test_rp_view_replaces_the_image_and_leaves_the_image_tower_out(model):
    rp, view = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 24, 24)
    model.eval()
    with torch.no_grad():
        out = model(rp, rp_view=view)
        torch.testing.assert_close(out["image_features"], model.encode_pixel(view))
    model.train()
    model.zero_grad(set_to_none=True)
    SymmetricInfoNCE()(**model(rp, rp_view=view)).backward()
    assert model.rp_encoder.backbone.features[0].weight.grad is not None
    assert all(p.grad is None for p in model.image_encoder.parameters())
    with pytest.raises(ValueError, match="exactly one of image and rp_view"):
        model(rp)
    with pytest.raises(ValueError, match="exactly one of image and rp_view"):
        model(rp, torch.randn(4, 10, 9, 9), rp_view=view)


def test_encode_unnormalized_and_encoders_standalone(model):
    model.eval()
    rp = torch.randn(3, 3, 32, 32)
    raw = model.encode_pixel(rp, normalize=False)
    torch.testing.assert_close(model.rp_encoder(rp), raw)
    torch.testing.assert_close(model.encode_pixel(rp), raw / raw.norm(dim=-1, keepdim=True))
    feats = model.rp_encoder.backbone(rp)
    assert feats.shape == (3, model.rp_encoder.num_features)
    img = torch.randn(3, 10, 9, 9)
    assert model.image_encoder.backbone(img).shape == (3, model.image_encoder.num_features)
    assert model.encode_image(img, normalize=False).shape == (3, 16)
    model.train()


def test_input_shape_errors(model):
    with pytest.raises(ValueError, match=r"rp must have shape .* 3 channels"):
        model.encode_pixel(torch.randn(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"img must have shape"):
        model.encode_image(torch.randn(2, 10, 9))


def test_logit_scale_init_and_clamp():
    model = PIMC(**SMALL)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    rp, img = torch.randn(2, 3, 16, 16), torch.randn(2, 10, 9, 9)
    assert model(rp, img)["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(rp, img)["logit_scale"].item() == pytest.approx(100.0, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert model(rp, img)["logit_scale"].item() == pytest.approx(1.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == 0.0
    with pytest.raises(ConfigError, match="init_logit_scale"):
        PIMC(**SMALL, init_logit_scale=5.0)  # > log(100)
    with pytest.raises(ConfigError, match="max_logit_scale"):
        PIMC(**SMALL, max_logit_scale=float("inf"))


def test_config_round_trip(tmp_path):
    model = PIMC(
        rp_backbone="resnet18", image_backbone="small_cnn", image_channels=13, **SMALL
    ).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model_config": model.config, "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    rebuilt = PIMC(**ckpt["model_config"]).eval()
    rebuilt.load_state_dict(ckpt["state_dict"])
    assert rebuilt.config == model.config
    rp, img = torch.randn(2, 3, 16, 16), torch.randn(2, 13, 9, 9)
    torch.testing.assert_close(rebuilt(rp, img), model(rp, img))


def test_resnet_towers_small_input():
    model = PIMC(rp_backbone="resnet18", image_backbone="resnet18", **SMALL)
    assert model.rp_encoder.backbone.conv1.stride == (1, 1)
    out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 10, 9, 9))
    assert out["image_features"].shape == (2, 16)
    big = PIMC(rp_backbone="resnet18", small_input=False, **SMALL)
    assert big.rp_encoder.backbone.conv1.stride == (2, 2)
    with pytest.raises(ConfigError, match="unknown backbone"):
        PIMC(rp_backbone="vit")


def test_projection_head_layout():
    head = ProjectionHead(8, 32, 4, num_layers=3)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert head(torch.randn(5, 8)).shape == (5, 4)
    linear = ProjectionHead(8, 32, 4, num_layers=1)
    assert [type(m) for m in linear.net] == [nn.Linear]
    # The output can be negative: no ReLU after the last layer.
    assert (ProjectionHead(8, 32, 4).eval()(torch.randn(64, 8)) < 0).any()
    with pytest.raises(ConfigError, match="num_layers"):
        ProjectionHead(8, 32, 4, num_layers=0)
