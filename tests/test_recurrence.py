"""pimc.transforms.recurrence: exact agreement with pyts, analytic properties, options, errors."""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pimc.core.errors import ConfigError, InputError
from pimc.transforms.recurrence import recurrence_plot, resolve_embedding

TOL = 1e-6

# A reused buffer of the wrong shape makes torch warn (and resize it): treat that as a bug.
pytestmark = pytest.mark.filterwarnings("error")


def _load_pyts_recurrence_plot() -> type:
    """pyts' RecurrencePlot class, imported in ~4 s instead of ~35 s.

    ``import pyts.image`` eagerly numba-compiles every image transform (GAF, MTF, ...), which
    dominates the runtime of this file. Executing only ``pyts/image/_recurrence.py`` runs exactly
    the same class with just its own kernels compiled; fall back to the public import if the
    file layout ever changes.
    """
    pyts = pytest.importorskip("pyts")
    path = Path(pyts.__file__).parent / "image" / "_recurrence.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("_pyts_image_recurrence", path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.RecurrencePlot
    return pytest.importorskip("pyts.image").RecurrencePlot


@pytest.fixture(scope="module")
def pyts_rp() -> type:
    return _load_pyts_recurrence_plot()


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    """Random float64 series, shape (40, 37); 37 so fractions of T round non-trivially."""
    return np.random.default_rng(0).normal(size=(40, 37))


def _pimc(x: np.ndarray, **kw) -> np.ndarray:
    return recurrence_plot(torch.from_numpy(x), **kw).numpy()


# --- agreement with pyts -------------------------------------------------------------------

EMBEDDINGS = [(1, 1), (3, 2), (2, 5), (0.1, 1), (0.2, 0.1), (1, 0.3), (0.05, 0.05), (1.0, 1)]


@pytest.mark.parametrize(("dimension", "time_delay"), EMBEDDINGS)
@pytest.mark.parametrize("threshold", [None, 0.7, 2, "point", "distance"])
def test_matches_pyts(pyts_rp, series, dimension, time_delay, threshold):
    percentages = (10,) if threshold is None or not isinstance(threshold, str) else (0, 7.5, 50)
    for percentage in percentages:
        kw = dict(
            dimension=dimension, time_delay=time_delay, threshold=threshold, percentage=percentage
        )
        ref = pyts_rp(**kw).transform(series)
        got = _pimc(series, **kw, chunk_size=16)  # several chunks, last one partial
        assert got.shape == ref.shape
        assert got.dtype == np.float64
        assert np.abs(got - ref).max() <= TOL, kw


@pytest.mark.parametrize("percentage", [0, 1, 10, 33.3, 90, 100])
def test_point_threshold_matches_pyts_percentiles(pyts_rp, series, percentage):
    """Exact per-plot numpy percentile, including the interpolated and the end cases."""
    ref = pyts_rp(threshold="point", percentage=percentage).transform(series)
    got = _pimc(series, threshold="point", percentage=percentage)
    np.testing.assert_array_equal(got, ref)
    if percentage == 0:  # strict "<" against the minimum (0 on the diagonal): nothing recurs
        assert not got.any()


def test_point_threshold_counts_ties_like_pyts(pyts_rp):
    """Integer-valued series: many distances tie with the percentile; strict < must agree."""
    x = np.random.default_rng(3).integers(0, 4, size=(30, 25)).astype(np.float64)
    for percentage in (5, 10, 25, 60):
        ref = pyts_rp(threshold="point", percentage=percentage).transform(x)
        np.testing.assert_array_equal(_pimc(x, threshold="point", percentage=percentage), ref)


def test_channels_match_flattened_pyts(pyts_rp, series):
    x = series[:12].reshape(4, 3, 37)
    got = _pimc(x, dimension=2, time_delay=3)
    ref = pyts_rp(dimension=2, time_delay=3).transform(series[:12]).reshape(4, 3, 34, 34)
    assert got.shape == (4, 3, 34, 34)
    assert np.abs(got - ref).max() <= TOL


def test_resolve_embedding_follows_pyts_fraction_rule():
    assert resolve_embedding(37, 0.1, 0.05) == (4, 2, 37 - 3 * 2)  # ceil(3.7), ceil(1.85)
    assert resolve_embedding(37, 1, 1) == (1, 1, 37)
    assert resolve_embedding(37, 1.0, 1) == (37, 1, 1)  # float 1.0 is all of T, not m=1
    assert resolve_embedding(10, 10, 1) == (10, 1, 1)
    assert resolve_embedding(10, 1, 10) == (1, 10, 10)  # tau is irrelevant when m = 1


# --- analytic properties -------------------------------------------------------------------


def test_three_point_hand_computed():
    x = torch.tensor([[0.0, 1.0, 3.0]])
    expected = torch.tensor([[[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]]])
    torch.testing.assert_close(recurrence_plot(x), expected)
    # m=2, tau=1: trajectories (0,1), (1,3) -> distance sqrt(1 + 4).
    two = recurrence_plot(x, dimension=2)
    torch.testing.assert_close(two, torch.tensor([[[0.0, math.sqrt(5)], [math.sqrt(5), 0.0]]]))
    # eps = 2: strictly below, so the distance-2 pair is not recurrent.
    binary = recurrence_plot(x, threshold=2.0)
    torch.testing.assert_close(binary, (expected < 2).float())
    assert binary[0, 1, 2] == 0


@pytest.mark.parametrize("dimension", [1, 3])
def test_symmetric_zero_diagonal(dimension):
    x = torch.randn(5, 2, 30, dtype=torch.float64)
    rp = recurrence_plot(x, dimension=dimension, time_delay=2)
    torch.testing.assert_close(rp, rp.transpose(-1, -2), rtol=0, atol=0)
    assert (rp.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (rp >= 0).all()


@pytest.mark.parametrize("threshold", [None, "point", "distance", 0.5])
def test_constant_series_gives_all_zeros(threshold):
    x = torch.full((3, 20), 0.42)
    for normalize in (False, True):
        rp = recurrence_plot(x, dimension=2, threshold=threshold, normalize=normalize)
        assert torch.isfinite(rp).all()
        # 0 < eps is False for 'point'/'distance' (eps = 0); a positive eps marks everything.
        assert (rp == (1.0 if threshold == 0.5 else 0.0)).all()


# --- options -------------------------------------------------------------------------------


def test_normalize_scales_each_plot_to_unit_max():
    x = torch.randn(6, 3, 25) * torch.arange(1, 19).reshape(6, 3, 1)
    rp = recurrence_plot(x, normalize=True, chunk_size=4)
    peaks = rp.amax(dim=(-2, -1))
    torch.testing.assert_close(peaks, torch.ones_like(peaks))
    assert rp.min() >= 0
    torch.testing.assert_close(rp, recurrence_plot(x) / recurrence_plot(x).amax((-2, -1), True))


@pytest.mark.parametrize("threshold", [0.3, "point", "distance"])
def test_normalize_leaves_binary_plots_unchanged(threshold):
    x = torch.randn(4, 30)
    x[0] = 1.0  # constant: all-zero binary plot for 'point'/'distance'
    plain = recurrence_plot(x, threshold=threshold)
    torch.testing.assert_close(recurrence_plot(x, threshold=threshold, normalize=True), plain)


@pytest.mark.parametrize(("size", "antialias"), [(16, True), (64, False), (25, None)])
def test_size_resizes_each_plot(size, antialias):
    x = torch.randn(5, 2, 25)
    rp = recurrence_plot(x, size=size, chunk_size=3)
    assert rp.shape == (5, 2, size, size)
    full = recurrence_plot(x).reshape(10, 1, 25, 25)
    if antialias is None:  # same size: no interpolation at all
        expected = full
    else:
        expected = torch.nn.functional.interpolate(
            full, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
        )
    torch.testing.assert_close(rp, expected.reshape(5, 2, size, size))


def test_float16_output_dtype():
    x = torch.rand(7, 3, 20)
    rp = recurrence_plot(x, dtype=torch.float16, chunk_size=5)
    assert rp.dtype == torch.float16
    torch.testing.assert_close(rp, recurrence_plot(x).half())
    binary = recurrence_plot(x, threshold="point", dtype=torch.float16)
    assert binary.dtype == torch.float16 and set(binary.unique().tolist()) <= {0.0, 1.0}


def test_compute_dtype_follows_input():
    assert recurrence_plot(torch.rand(2, 9, dtype=torch.float64)).dtype == torch.float64
    assert recurrence_plot(torch.rand(2, 9)).dtype == torch.float32
    assert recurrence_plot(torch.rand(2, 9).half()).dtype == torch.float32
    ints = recurrence_plot(torch.tensor([[1, 4, 2]], dtype=torch.int16))
    assert ints.dtype == torch.float32 and ints[0, 0].tolist() == [0.0, 3.0, 1.0]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"dimension": 3, "time_delay": 2},
        {"threshold": "point", "percentage": 20},
        {"threshold": "distance", "normalize": True, "size": 12},
        {"dimension": 2, "time_delay": 3, "threshold": "point", "dtype": torch.float16},
        {"dimension": 0.1, "normalize": True, "size": 40},
    ],
)
def test_chunking_is_exact(kw):
    x = torch.randn(23, 2, 30)
    whole = recurrence_plot(x, **kw, chunk_size=1000)
    for chunk_size in (1, 5, 46):
        torch.testing.assert_close(recurrence_plot(x, **kw, chunk_size=chunk_size), whole)


def test_empty_batch():
    assert recurrence_plot(torch.empty(0, 3, 10), dimension=2).shape == (0, 3, 9, 9)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dimension": 5, "time_delay": 3}, r"too short.*dimension=5.*time_delay=3"),
        ({"dimension": 11}, r"dimension=11 must be in \[1, T=10\]"),
        ({"dimension": 0}, r"dimension=0 must be in"),
        ({"time_delay": 1.5}, r"time_delay=1.5 is a float.*\(0, 1\]"),
        ({"dimension": "3"}, r"dimension must be an int"),
        ({"dimension": True}, r"dimension must be an int"),
        ({"threshold": "points"}, r"threshold='points' is not a known mode"),
        ({"threshold": 0.0}, r"threshold=0.0 must be"),
        ({"threshold": -1}, r"threshold=-1 must be"),
        ({"threshold": "point", "percentage": 101}, r"percentage=101 must be a number in"),
        ({"percentage": -0.5}, r"percentage=-0.5"),
        ({"size": 0}, r"size=0 must be"),
        ({"chunk_size": 0}, r"chunk_size=0 must be"),
    ],
)
def test_parameter_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        recurrence_plot(torch.rand(2, 10), **kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_rejected(bad):
    x = torch.rand(3, 2, 10)
    x[1, 1, 4] = bad
    with pytest.raises(InputError, match="series contains NaN/inf; clean or interpolate"):
        recurrence_plot(x)


def test_bad_rank_is_rejected():
    with pytest.raises(InputError, match=r"\(B, T\) or \(B, C, T\)"):
        recurrence_plot(torch.rand(10))
    with pytest.raises(InputError, match=r"\(B, T\) or \(B, C, T\)"):
        recurrence_plot(torch.rand(2, 3, 4, 10))


def test_grid_of_embeddings_all_valid_or_clear_error():
    """Every (m, tau) either gives S = T - (m-1)tau >= 1 plots or the documented error."""
    x = torch.rand(2, 8)
    for m, tau in itertools.product(range(1, 9), range(1, 9)):
        side = 8 - (m - 1) * tau
        if side >= 1:
            assert recurrence_plot(x, m, tau).shape == (2, side, side)
        else:
            with pytest.raises(ConfigError, match="too short"):
                recurrence_plot(x, m, tau)


# --- benchmark script ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--threshold", "point", "--dimension", "2", "--normalize", "--size", "8"],
        ["--threshold", "0.1", "--out-dtype", "float16", "--chunk-size", "7"],
    ],
)
def test_benchmark_script_runs_and_agrees_with_pyts(pyts_rp, monkeypatch, capsys, extra):
    """A tiny run of benchmarks/recurrence.py, so the script cannot silently rot."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recurrence.py"
    spec = importlib.util.spec_from_file_location("_bench_recurrence", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "load_pyts_recurrence_plot", lambda: pyts_rp)
    args = ["--n", "30", "--t", "20", "--channels", "2", "--pyts-n", "40", "--check-n", "25"]
    bench.main([*args, "--repeats", "1", *extra])
    out = capsys.readouterr().out
    assert "speed ratio pimc/pyts on the subset" in out
    diff = re.search(r"max \|pimc float64 - pyts\| = (\S+)", out)
    assert diff is not None and float(diff.group(1)) <= TOL


@pytest.mark.parametrize("kw", [{}, {"normalize": True, "size": 8}, {"threshold": "point"}])
def test_valid_mask_zeroes_padded_dates_before_normalising(kw):
    # The padded path must equal: plot of the observed prefix only, embedded in zeros, then
    # normalised/resized as the unpadded path would do it.
    torch.manual_seed(0)
    x = torch.rand(3, 2, 12)
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[1, 8:] = False
    plain = recurrence_plot(x, threshold=kw.get("threshold"))
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    ref = plain * mask
    if kw.get("normalize"):
        ref = ref / ref.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    if kw.get("size"):
        ref = torch.nn.functional.interpolate(ref, size=(8, 8), mode="bilinear", antialias=True)
    got = recurrence_plot(x, valid=valid, **kw)
    torch.testing.assert_close(got, ref)
    assert torch.equal(
        recurrence_plot(x, valid=torch.ones_like(valid), **kw), recurrence_plot(x, **kw)
    )


def test_valid_mask_shape_is_checked():
    with pytest.raises(InputError, match="valid must be a bool tensor"):
        recurrence_plot(torch.rand(3, 2, 12), valid=torch.zeros(3, 11, dtype=torch.bool))
