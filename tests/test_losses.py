"""pimc.training.losses.SymmetricInfoNCE: hand-computed values, a slow reference, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pimc.training.losses import SymmetricInfoNCE


def _unit(b: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)


def _reference(pixel: torch.Tensor, image: torch.Tensor, scale: float) -> float:
    """Plain-python loops: mean over rows and columns of -log softmax at the diagonal."""
    p, q = pixel.tolist(), image.tolist()
    n = len(p)
    logits = [
        [scale * sum(a * b for a, b in zip(p[i], q[j], strict=True)) for j in range(n)]
        for i in range(n)
    ]

    def ce(row: list[float], target: int) -> float:
        top = max(row)
        return -(row[target] - top - math.log(sum(math.exp(v - top) for v in row)))

    per_pixel = sum(ce(logits[i], i) for i in range(n)) / n
    per_image = sum(ce([logits[i][j] for i in range(n)], j) for j in range(n)) / n
    return (per_pixel + per_image) / 2


def test_hand_computed_2x2():
    pixel = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * pixel @ image.T = [[2.0, 1.2], [0.0, 1.6]]
    rows = [
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2))),
        -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6))),
    ]
    cols = [
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0))),
        -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6))),
    ]
    expected = (sum(rows) / 2 + sum(cols) / 2) / 2
    loss = SymmetricInfoNCE()(pixel, image, torch.tensor(2.0))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("b", "d", "scale"), [(2, 3, 1.0), (7, 5, 14.3), (16, 8, 100.0)])
def test_matches_slow_reference(b, d, scale):
    pixel, image = _unit(b, d, 1), _unit(b, d, 2)
    loss = SymmetricInfoNCE()(pixel, image, torch.tensor(scale, dtype=torch.float64))
    assert loss.item() == pytest.approx(_reference(pixel, image, scale), abs=1e-6)
    # A plain float scale and float32 features give the same value.
    loss32 = SymmetricInfoNCE()(pixel.float(), image.float(), scale)
    assert loss32.item() == pytest.approx(loss.item(), abs=1e-4)


def test_symmetric_in_pixel_and_image():
    pixel, image = _unit(9, 6, 3), _unit(9, 6, 4)
    loss = SymmetricInfoNCE()
    torch.testing.assert_close(loss(pixel, image, 5.0), loss(image, pixel, 5.0))


def test_aligned_lower_than_shuffled():
    x = _unit(32, 16, 5)
    loss = SymmetricInfoNCE()
    aligned = loss(x, x + 0.05 * _unit(32, 16, 6), 10.0)
    shuffled = loss(x, x[torch.randperm(32, generator=torch.Generator().manual_seed(0))], 10.0)
    assert aligned < shuffled
    assert aligned < math.log(32) < shuffled


def test_gradients_reach_both_inputs_and_scale():
    pixel = _unit(4, 3, 7).requires_grad_()
    image = _unit(4, 3, 8).requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    SymmetricInfoNCE()(pixel, image, scale).backward()
    assert pixel.grad.abs().sum() > 0 and image.grad.abs().sum() > 0 and scale.grad != 0


def _fake_gather(full: dict[str, torch.Tensor], local: dict[str, torch.Tensor], rank: int, b: int):
    """Mimic an all-gather: every rank's rows, with this rank's slice being the local tensor."""

    def gather(t: torch.Tensor) -> torch.Tensor:
        key = next(k for k, v in local.items() if v is t)
        other = full[key]
        return torch.cat([other[: rank * b], t, other[(rank + 1) * b :]])

    return gather


def test_gather_fn_averaged_over_ranks_equals_global_loss():
    world, b, d, scale = 3, 4, 5, 7.0
    pixel, image = _unit(world * b, d, 9), _unit(world * b, d, 10)
    single = SymmetricInfoNCE()
    expected = single(pixel, image, scale)
    assert single.candidates == world * b
    per_rank = []
    for rank in range(world):
        local = {
            "pixel": pixel[rank * b : (rank + 1) * b].clone().requires_grad_(),
            "image": image[rank * b : (rank + 1) * b].clone().requires_grad_(),
        }
        loss_fn = SymmetricInfoNCE(
            gather_fn=_fake_gather({"pixel": pixel, "image": image}, local, rank, b), rank=rank
        )
        assert loss_fn.candidates is None
        loss = loss_fn(local["pixel"], local["image"], scale)
        loss.backward()
        assert local["pixel"].grad.abs().sum() > 0
        assert loss_fn.candidates == world * b  # every rank's pairs, not the local b
        per_rank.append(loss.item())
    assert sum(per_rank) / world == pytest.approx(expected.item(), abs=1e-9)


def test_gather_fn_default_rank_is_zero_without_process_group():
    pixel, image = _unit(4, 3, 11), _unit(4, 3, 12)
    loss = SymmetricInfoNCE(gather_fn=lambda t: t)(pixel, image, 2.0)
    torch.testing.assert_close(loss, SymmetricInfoNCE()(pixel, image, 2.0))


def test_gather_fn_wrong_output_is_reported():
    pixel, image = _unit(4, 3, 13), _unit(4, 3, 14)
    with pytest.raises(ValueError, match="gather_fn returned"):
        SymmetricInfoNCE(gather_fn=lambda t: t[:3])(pixel, image, 2.0)
    with pytest.raises(ValueError, match="gather_fn returned"):
        SymmetricInfoNCE(gather_fn=lambda t: t, rank=1)(pixel, image, 2.0)


@pytest.mark.parametrize(
    ("pixel_shape", "image_shape", "match"),
    [
        ((4, 3), (4, 5), "must have the same"),
        ((4, 3), (5, 3), "must have the same"),
        ((4, 3, 1), (4, 3, 1), "pixel_features must be 2-D"),
        ((4, 3), (12,), "image_features must be 2-D"),
        ((1, 3), (1, 3), "batch size 1"),
        ((0, 3), (0, 3), "empty"),
    ],
)
def test_shape_errors(pixel_shape, image_shape, match):
    with pytest.raises(ValueError, match=match):
        SymmetricInfoNCE()(torch.randn(pixel_shape), torch.randn(image_shape), 1.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 2.0])])
def test_logit_scale_errors(scale):
    with pytest.raises(ValueError, match="logit_scale"):
        SymmetricInfoNCE()(torch.randn(4, 3), torch.randn(4, 3), scale)


def _reference_grouped(pixel, image, scale, groups) -> float:
    """Slow loop: each query's candidates are its positive and the pairs of other groups."""
    b, total = len(pixel), 0.0
    for i in range(b):
        for q, k in ((pixel, image), (image, pixel)):
            keep = [j for j in range(b) if j == i or groups[j] != groups[i]]
            logits = [scale * float(q[i] @ k[j]) for j in keep]
            pos = logits[keep.index(i)]
            total += -(pos - math.log(sum(math.exp(v) for v in logits)))
    return total / (2 * b)


def test_same_group_pairs_are_not_negatives():
    pixel, image = _unit(6, 4, 0), _unit(6, 4, 1)
    groups = torch.tensor([7, 7, 3, -1, 3, 7])
    got = float(SymmetricInfoNCE()(pixel, image, 5.0, groups))
    assert got == pytest.approx(_reference_grouped(pixel, image, 5.0, groups.tolist()), rel=1e-5)
    # Unique groups change nothing; one group for all leaves only the positive (loss 0).
    unique = float(SymmetricInfoNCE()(pixel, image, 5.0, torch.arange(6)))
    assert unique == pytest.approx(float(SymmetricInfoNCE()(pixel, image, 5.0)), rel=1e-6)
    assert float(SymmetricInfoNCE()(pixel, image, 5.0, torch.zeros(6, dtype=torch.long))) == 0.0
