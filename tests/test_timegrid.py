"""Tests for pimc.transforms.timegrid: grids, resampling, padding and despiking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pimc.core.errors import ConfigError, InputError
from pimc.transforms.timegrid import despike, make_grid, pad_to_length, resample_to_grid

D0 = np.datetime64("2018-09-01", "D")


def _days(*offsets: int) -> np.ndarray:
    return D0 + np.array(offsets, dtype="timedelta64[D]")


# --- make_grid ------------------------------------------------------------------------------


def test_make_grid_inclusive_end_and_dtype():
    grid = make_grid("2018-09-01", "2018-09-11", 5)
    assert grid.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(grid, _days(0, 5, 10))


def test_make_grid_end_off_grid_is_excluded():
    grid = make_grid(np.datetime64("2018-09-01"), "2018-09-10", 5)
    np.testing.assert_array_equal(grid, _days(0, 5))


def test_make_grid_single_day():
    np.testing.assert_array_equal(
        make_grid("2019-01-01", "2019-01-01", 7), [np.datetime64("2019-01-01")]
    )


@pytest.mark.parametrize(
    ("start", "end", "step", "word"),
    [
        ("2019-01-02", "2019-01-01", 1, "end"),
        ("2019-01-01", "2019-02-01", 0, "step_days"),
        ("2019-01-01", "2019-02-01", 2.5, "step_days"),
        ("not a date", "2019-02-01", 1, "start"),
    ],
)
def test_make_grid_errors(start, end, step, word):
    with pytest.raises(ConfigError, match=word):
        make_grid(start, end, step)


# --- resample_to_grid -----------------------------------------------------------------------


def test_resample_hand_computed():
    values = torch.tensor([0.0, 1.0, 3.0])
    out = resample_to_grid(values, _days(0, 10, 30), _days(0, 5, 20, 40))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 2.0, 3.0]))


def test_resample_extrapolates_constant_both_sides():
    values = torch.tensor([2.0, 4.0])
    out = resample_to_grid(values, _days(10, 20), _days(-100, 0, 10, 15, 20, 999))
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, 2.0, 3.0, 4.0, 4.0]))


def test_resample_accepts_other_datetime_units_and_unsorted_grid():
    values = torch.tensor([0.0, 1.0, 3.0])
    dates = _days(0, 10, 30).astype("datetime64[s]")
    out = resample_to_grid(values, dates, _days(20, 5))
    torch.testing.assert_close(out, torch.tensor([2.0, 0.5]))


def test_resample_shape_and_per_series_values():
    n, t = 4, 7
    dates = _days(0, 3, 4, 10, 17, 20, 31)
    grid = make_grid(D0, D0 + 40, 2)
    slope = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3, 1)
    days = torch.tensor((dates - D0).astype(np.float32))
    values = slope * days  # each series is linear in time, so interpolation is exact
    out = resample_to_grid(values, dates, grid)
    assert out.shape == (n, 3, len(grid))
    assert out.dtype == torch.float32
    gdays = torch.tensor((grid - D0).astype(np.float32)).clamp(max=31.0)
    torch.testing.assert_close(out, slope * gdays)
    assert values.shape[-1] == t


def test_resample_float64_and_integer_input():
    dates, grid = _days(0, 10), _days(5)
    assert resample_to_grid(torch.tensor([0.0, 1.0], dtype=torch.float64), dates, grid).dtype == (
        torch.float64
    )
    out = resample_to_grid(torch.tensor([0, 1]), dates, grid)
    assert out.dtype == torch.get_default_dtype()
    assert out.item() == pytest.approx(0.5)


def test_resample_interpolates_over_nan():
    values = torch.tensor([[0.0, math.nan, 3.0], [math.nan, 1.0, math.nan]])
    out = resample_to_grid(values, _days(0, 10, 30), _days(0, 10, 15, 40))
    # Row 0: the NaN at day 10 is bridged by days 0 and 30. Row 1: only day 10 is valid.
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 1.5, 3.0], [1.0, 1.0, 1.0, 1.0]]))


def test_resample_all_nan_series_stays_nan():
    values = torch.tensor([[math.nan, math.nan], [1.0, 2.0]])
    out = resample_to_grid(values, _days(0, 1), _days(0, 1))
    assert torch.isnan(out[0]).all()
    torch.testing.assert_close(out[1], torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    ("dates", "word"),
    [(_days(0, 10, 10), "strictly increasing"), (_days(10, 0, 20), "strictly increasing"),
     (_days(0, 10), "time step")],
)  # fmt: skip
def test_resample_errors(dates, word):
    with pytest.raises(InputError, match=word):
        resample_to_grid(torch.zeros(2, 3), dates, _days(0))


def test_resample_rejects_mixed_date_kinds():
    with pytest.raises(InputError, match="datetime64"):
        resample_to_grid(torch.zeros(2), _days(0, 1), np.array([0.5]))


def test_resample_plain_day_numbers():
    out = resample_to_grid(torch.tensor([0.0, 1.0, 3.0]), np.array([0, 10, 30]), np.array([20]))
    torch.testing.assert_close(out, torch.tensor([2.0]))


# --- pad_to_length --------------------------------------------------------------------------


def test_pad_to_length_values_and_mask():
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3) + 1
    padded, observed = pad_to_length(values, 5)
    assert padded.shape == observed.shape == (2, 5)
    assert observed.dtype == torch.bool
    torch.testing.assert_close(padded, torch.tensor([[1.0, 2, 3, 0, 0], [4.0, 5, 6, 0, 0]]))
    assert observed.tolist() == [[True] * 3 + [False] * 2] * 2


def test_pad_to_length_exact_length_is_identity():
    values = torch.randn(3, 4)
    padded, observed = pad_to_length(values, 4)
    torch.testing.assert_close(padded, values)
    assert observed.all()


def test_pad_to_length_too_long():
    with pytest.raises(ConfigError, match="max_length"):
        pad_to_length(torch.zeros(61), 40)


# --- despike --------------------------------------------------------------------------------


def test_despike_none_is_identity():
    values = torch.randn(2, 5)
    assert despike(values, "none") is values


def test_despike_median_removes_single_spike():
    ndvi = torch.tensor([0.2, 0.3, 0.4, -0.1, 0.6, 0.7, 0.8])  # cloud drop at index 3
    out = despike(ndvi, "median", window=3)
    torch.testing.assert_close(out, torch.tensor([0.2, 0.3, 0.3, 0.4, 0.6, 0.7, 0.8]))
    assert out.shape == ndvi.shape


def test_despike_median_window_one_and_batch_shape():
    values = torch.randn(4, 2, 9)
    torch.testing.assert_close(despike(values, "median", window=1), values)
    out = despike(values, "median", window=5)
    assert out.shape == values.shape
    # Replicate padding: the first output is the median of [v0, v0, v0, v1, v2].
    ref = torch.stack([values[..., 0]] * 3 + [values[..., 1], values[..., 2]], -1).median(-1)
    torch.testing.assert_close(out[..., 0], ref.values)


def test_despike_median_ignores_nan():
    out = despike(torch.tensor([1.0, math.nan, 3.0, 5.0]), "median", window=3)
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0, 3.0, 5.0]))


def test_despike_blue_repairs_cloudy_date():
    ndvi = torch.tensor([[0.2, 0.4, -0.3, 0.8, 0.9], [0.5, 0.5, 0.5, 0.5, 0.5]])
    blue = torch.tensor([[500.0, 600, 4000, 700, 650], [500.0, 500, 500, 500, 500]])
    out = despike(ndvi, "blue", blue=blue, blue_threshold=0.2)
    torch.testing.assert_close(out, torch.tensor([[0.2, 0.4, 0.6, 0.8, 0.9], [0.5] * 5]))


def test_despike_blue_edges_and_all_cloudy():
    ndvi = torch.tensor([[-0.5, 0.4, 0.6, -0.2], [0.1, 0.2, 0.3, 0.4]])
    blue = torch.tensor([[3000.0, 500, 500, 3000], [3000.0] * 4])
    out = despike(ndvi, "blue", blue=blue)
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.4, 0.6, 0.6], [0.1, 0.2, 0.3, 0.4]]))


def test_despike_blue_broadcasts_blue_over_leading_dims():
    values = torch.tensor([[1.0, 9.0, 3.0], [2.0, 9.0, 4.0]])
    out = despike(values, "blue", blue=torch.tensor([0.0, 5000.0, 0.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]))


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"method": "mean"}, ConfigError, "none"),
        ({"method": "median", "window": 4}, ConfigError, "odd"),
        ({"method": "median", "window": 0}, ConfigError, "odd"),
        ({"method": "blue"}, InputError, "blue"),
        ({"method": "blue", "blue": torch.zeros(3, 2, 5)}, InputError, "blue"),
        ({"method": "blue", "blue": torch.zeros(4)}, InputError, "blue"),
    ],
)
def test_despike_errors(kwargs, error, word):
    with pytest.raises(error, match=word):
        despike(torch.zeros(2, 5), **kwargs)
