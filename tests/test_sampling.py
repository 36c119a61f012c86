"""pimc.transforms.sampling: Hilbert curve, pixel samplers, window extraction, composites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pimc.core.errors import ConfigError, InputError
from pimc.transforms.sampling import (
    composite,
    extract_patches,
    hilbert_coords,
    hilbert_index,
    sample_pixels,
)

# --- Hilbert curve --------------------------------------------------------------------------


def _index_grid(order: int) -> np.ndarray:
    side = 1 << order
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return hilbert_index(rows, cols, order)


def test_hilbert_order1_by_hand():
    # (row, col): (0,0)->0, (1,0)->1, (1,1)->2, (0,1)->3 — a "U" opening to the top.
    np.testing.assert_array_equal(_index_grid(1), [[0, 3], [1, 2]])


def test_hilbert_order2_by_hand():
    # Classic 4×4 curve with x = col, y = row (row 0 printed first).
    expected = [
        [0, 1, 14, 15],
        [3, 2, 13, 12],
        [4, 7, 8, 11],
        [5, 6, 9, 10],
    ]
    np.testing.assert_array_equal(_index_grid(2), expected)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_hilbert_bijection_and_adjacency(order):
    grid = _index_grid(order)
    side = 1 << order
    assert sorted(grid.ravel().tolist()) == list(range(4**order))
    rows, cols = np.divmod(np.argsort(grid.ravel()), side)  # pixels in curve order
    steps = np.abs(np.diff(rows)) + np.abs(np.diff(cols))
    assert np.all(steps == 1)
    back_rows, back_cols = hilbert_coords(np.arange(4**order), order)
    np.testing.assert_array_equal(back_rows, rows)
    np.testing.assert_array_equal(back_cols, cols)


def test_hilbert_rejects_out_of_range():
    with pytest.raises(InputError, match="order"):
        hilbert_index(np.array([4]), np.array([0]), 2)


# --- sample_pixels --------------------------------------------------------------------------


def _mask(h: int = 16, w: int = 16, classes: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=(h, w))


@pytest.mark.parametrize("method", ["random", "stratified", "hilbert"])
def test_sample_deterministic_distinct_and_in_bounds(method):
    mask = _mask()
    a = sample_pixels(mask, 50, method, seed=3)
    b = sample_pixels(torch.as_tensor(mask), 50, method, seed=3)
    assert a.dtype == np.int64 and a.shape == (50, 2)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(p) for p in a.tolist()}) == 50
    assert a[:, 0].min() >= 0 and a[:, 0].max() < 16 and a[:, 1].max() < 16
    assert not np.array_equal(a, sample_pixels(mask, 50, method, seed=4))


@pytest.mark.parametrize("method", ["random", "stratified", "hilbert"])
def test_sample_excluded_never_and_k_le_n(method):
    mask = np.full((10, 10), 19)
    mask[2:4, 3:6] = 5  # 6 eligible pixels
    mask[7, 7] = 0
    out = sample_pixels(mask, 100, method, seed=0)
    assert out.shape == (7, 2)
    assert 19 not in mask[out[:, 0], out[:, 1]]
    out = sample_pixels(mask, 100, method, seed=0, exclude=(19, 0))
    assert out.shape == (6, 2) and set(mask[out[:, 0], out[:, 1]].tolist()) == {5}
    assert sample_pixels(mask, 3, method, seed=0).shape == (3, 2)
    assert sample_pixels(mask, 0, method, seed=0).shape == (0, 2)
    assert sample_pixels(np.full((4, 4), 19), 5, method, seed=0).shape == (0, 2)


def test_stratified_balances_classes():
    mask = np.zeros((20, 20), dtype=np.int64)
    mask[:, 10:] = 1  # 200 px
    mask[:5, :5] = 2  # 25 px
    mask[-2:, -2:] = 3  # 4 px: too small for its share
    for seed in range(5):
        out = sample_pixels(mask, 43, "stratified", seed=seed)
        counts = np.bincount(mask[out[:, 0], out[:, 1]], minlength=4)
        assert counts.sum() == 43 and counts[3] == 4  # shortfall of class 3 goes to the others
        assert counts[:3].max() - counts[:3].min() <= 1
    # Random sampling would follow the class areas instead.
    rand = sample_pixels(mask, 43, "random", seed=0)
    assert np.bincount(mask[rand[:, 0], rand[:, 1]], minlength=4)[1] > 15


def test_stratified_per_class_caps_each_class():
    mask = np.repeat(np.arange(3), 30).reshape(9, 10)
    out = sample_pixels(mask, 100, "stratified", seed=1, per_class=5)
    assert np.bincount(mask[out[:, 0], out[:, 1]]).tolist() == [5, 5, 5]


def test_hilbert_sampling_is_spread():
    mask = np.zeros((32, 32), dtype=np.int64)
    for seed in range(3):
        out = sample_pixels(mask, 16, "hilbert", seed=seed)
        quadrants = {(r // 16, c // 16) for r, c in out.tolist()}
        assert quadrants == {(0, 0), (0, 1), (1, 0), (1, 1)}
        # Each 8×8 block is 64 consecutive curve positions, so it gets exactly one sample.
        blocks = np.bincount((out[:, 0] // 8) * 4 + out[:, 1] // 8, minlength=16)
        assert blocks.tolist() == [1] * 16


def test_hilbert_sampling_non_square_mask():
    out = sample_pixels(np.zeros((5, 12)), 60, "hilbert", seed=0)
    assert out.shape == (60, 2) and len({tuple(p) for p in out.tolist()}) == 60


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"method": "grid"}, "stratified"),
        ({"n": -1}, "n="),
        ({"per_class": 3}, "per_class"),
        ({"method": "stratified", "per_class": 0}, "per_class"),
    ],
)
def test_sample_errors(kwargs, word):
    args = {"n": 4, "method": "random", "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=word):
        sample_pixels(np.zeros((4, 4)), **args)


def test_sample_rejects_non_2d_mask():
    with pytest.raises(InputError, match="H, W"):
        sample_pixels(np.zeros((2, 4, 4)), 4, "random", 0)


# --- extract_patches ------------------------------------------------------------------------


def test_extract_patches_centre_and_shape_with_time_dim():
    image = torch.randn(3, 10, 12, 9)  # (T, C, H, W)
    rows, cols = np.array([0, 5, 11, 6]), np.array([0, 4, 8, 2])
    out = extract_patches(image, rows, cols, 5)
    assert out.shape == (4, 3, 10, 5, 5)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        torch.testing.assert_close(out[i, ..., 2, 2], image[..., r, c])


def test_extract_patches_matches_numpy_reflect_pad():
    image = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(2, 6, 7)
    size, half = 7, 3
    ref = np.pad(image.numpy(), ((0, 0), (half, half), (half, half)), mode="reflect")
    rows, cols = [0, 5, 2, 0, 5], [0, 6, 3, 6, 0]
    out = extract_patches(image, torch.tensor(rows), cols, size)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        np.testing.assert_array_equal(out[i].numpy(), ref[:, r : r + size, c : c + size])


def test_extract_patches_integer_image_and_no_pixels():
    image = torch.arange(25).reshape(1, 5, 5)
    out = extract_patches(image, [2], [2], 3)
    assert out.dtype == torch.int64
    torch.testing.assert_close(out[0, 0], image[0, 1:4, 1:4])
    assert extract_patches(image, [], [], 3).shape == (0, 1, 3, 3)


@pytest.mark.parametrize(
    ("size", "rows", "error", "word"),
    [
        (4, [0], ConfigError, "odd"),
        (0, [0], ConfigError, "odd"),
        (11, [0], ConfigError, "larger than the patch"),
        (3, [9], InputError, "inside"),
        (3, [[0]], InputError, "equal 1-D"),
    ],
)
def test_extract_patches_errors(size, rows, error, word):
    with pytest.raises(error, match=word):
        extract_patches(torch.zeros(2, 5, 8), rows, [0], size)


# --- composite ------------------------------------------------------------------------------


def test_composite_fixed():
    image = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(composite(image, "fixed", index=2), image[2])
    torch.testing.assert_close(composite(image, "fixed", index=-1), image[5])
    for bad in (6, -7):
        with pytest.raises(ConfigError, match="index"):
            composite(image, "fixed", index=bad)


def test_composite_median_ignores_cloudy_date():
    clear = torch.full((5, 2, 3, 3), 1000.0)
    clear[:, 1] = 2000.0
    clear[2] = 9000.0  # one bright cloudy date
    out = composite(clear, "median")
    assert out.shape == (2, 3, 3)
    assert torch.all(out[0] == 1000.0) and torch.all(out[1] == 2000.0)


def test_composite_random():
    image = torch.arange(5.0).reshape(5, 1, 1, 1).expand(5, 2, 3, 3)
    out = composite(image, "random", seed=0, n=3)
    assert out.shape == (3, 2, 3, 3)
    dates = out[:, 0, 0, 0].tolist()
    assert len(set(dates)) == 3  # without replacement
    torch.testing.assert_close(out, composite(image, "random", seed=0, n=3))
    assert composite(image, "random", seed=1, n=8).shape == (8, 2, 3, 3)  # with replacement


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "word"),
    [
        (torch.zeros(3, 2, 4, 4), {"mode": "mean"}, ConfigError, "median"),
        (torch.zeros(2, 4, 4), {"mode": "median"}, InputError, "T, C, H, W"),
        (torch.zeros(3, 2, 4, 4), {"mode": "random", "n": 0}, ConfigError, "n="),
    ],
)
def test_composite_errors(image, kwargs, error, word):
    with pytest.raises(error, match=word):
        composite(image, **kwargs)
