"""Recurrence plots of (index) time series, in batched pure torch.

Reproduces ``pyts.image.RecurrencePlot`` (pyts 0.14.1) on any device, in chunks of series so the
working memory stays bounded, plus the options the training pipeline needs (per-plot
normalisation, resizing, low-precision output).

For a series ``x_1..x_T``, embedding dimension ``m`` and time delay ``tau``, the
``S = T - (m-1)tau`` trajectories are ``v_i = (x_i, x_{i+tau}, ..., x_{i+(m-1)tau})`` and the
plot is ``R_ij = ||v_i - v_j||_2`` (``|x_i - x_j|`` when ``m = 1``), optionally binarised as
``R_ij = 1[R_ij < eps]``.

pyts semantics reproduced exactly (checked against its source and tests):

* ``dimension`` / ``time_delay``: an ``int`` must lie in ``[1, T]``; a ``float`` must lie in
  ``(0, 1]`` and means ``ceil(value * T)``. ``1`` (int) and ``1.0`` (float) therefore differ:
  the latter is ``T``.
* Binarisation is a *strict* ``<``: a distance equal to the threshold is 0.
* ``threshold='point'``: ``eps`` is ``np.percentile(R.ravel(), percentage)`` per plot with
  numpy's default ``'linear'`` method over all ``S*S`` entries (zero diagonal and both
  triangles included). Because of the strict ``<`` and ties, the fraction of ones is close to,
  not exactly, ``percentage`` %; ``percentage=0`` gives an all-zero plot.
* ``threshold='distance'``: ``eps = percentage / 100 * max(R)`` per plot.
* A numeric ``threshold`` must be ``> 0``; ``percentage`` must be in ``[0, 100]``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pimc.core.config import RecurrenceConfig
from pimc.core.errors import ConfigError, InputError
from pimc.transforms.percentile import point_threshold

__all__ = ["build_rps", "recurrence_plot", "resolve_embedding"]

#: Series per chunk: per-op overhead is negligible, and the buffers of the thresholded /
#: normalised / resized / cast paths stay at a few tens of MB each for T ~ 60.
DEFAULT_CHUNK_SIZE = 4096

_THRESHOLD_MODES = ("point", "distance")


def _is_real_number(value: object) -> bool:
    # bool is an int subclass; True as a dimension is almost certainly a config mistake.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _resolve_length(name: str, value: int | float, n_timestamps: int) -> int:
    """Turn an int-or-fraction ``dimension``/``time_delay`` into a number of steps, as pyts."""
    if not _is_real_number(value):
        raise ConfigError(f"{name} must be an int >= 1 or a float in (0, 1]; got {value!r}.")
    if isinstance(value, numbers.Integral):
        if not 1 <= value <= n_timestamps:
            raise ConfigError(
                f"{name}={value} must be in [1, T={n_timestamps}] for series of length "
                f"{n_timestamps}; use a smaller {name} or a float fraction of T."
            )
        return int(value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"{name}={value} is a float, so it is a fraction of T and must be in (0, 1]; "
            f"pass a fraction or an int number of steps."
        )
    return math.ceil(value * n_timestamps)


def resolve_embedding(
    n_timestamps: int, dimension: int | float = 1, time_delay: int | float = 1
) -> tuple[int, int, int]:
    """Resolve ``dimension`` and ``time_delay`` for series of length ``T`` as pyts does.

    Args:
        n_timestamps: Series length ``T``.
        dimension: Embedding dimension ``m``: an int in ``[1, T]`` or a float fraction of ``T``
            in ``(0, 1]`` (``m = ceil(dimension * T)``).
        time_delay: Delay ``tau``, same int-or-fraction rule.

    Returns:
        ``(m, tau, S)`` with ``S = T - (m - 1) * tau`` the side of the recurrence plot.

    Raises:
        ConfigError: If a parameter is out of range or ``S < 1``.
    """
    m = _resolve_length("dimension", dimension, n_timestamps)
    tau = _resolve_length("time_delay", time_delay, n_timestamps)
    side = n_timestamps - (m - 1) * tau
    if side < 1:
        raise ConfigError(
            f"series of length T={n_timestamps} are too short for dimension={dimension} (m={m}) "
            f"and time_delay={time_delay} (tau={tau}): T - (m-1)*tau = {side} < 1 trajectories; "
            "use a smaller dimension or time_delay."
        )
    return m, tau, side


def _check_options(
    threshold: float | str | None, percentage: float, size: int | None, chunk_size: int
) -> None:
    """Validate the parameters that do not depend on the input (raises ConfigError)."""
    if isinstance(threshold, str):
        if threshold not in _THRESHOLD_MODES:
            raise ConfigError(
                f"threshold={threshold!r} is not a known mode; use None, a float > 0, "
                f"'point' or 'distance'."
            )
    elif threshold is not None:
        if not _is_real_number(threshold) or not threshold > 0:
            raise ConfigError(
                f"threshold={threshold!r} must be None, 'point', 'distance' or a number > 0."
            )
    if not _is_real_number(percentage) or not 0 <= percentage <= 100:
        raise ConfigError(f"percentage={percentage!r} must be a number in [0, 100].")
    if size is not None and (not isinstance(size, numbers.Integral) or size < 1):
        raise ConfigError(f"size={size!r} must be None (keep S x S) or an int >= 1.")
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} must be an int >= 1.")


def _distances(
    xc: Tensor, m: int, tau: int, side: int, out: Tensor, scratch: Tensor | None
) -> Tensor:
    """Write the distance plots of series ``xc`` ``(b, T)`` into ``out`` ``(b, S, S)``.

    ``scratch`` is a buffer like ``out`` for ``m > 1`` (None when ``m = 1``). Returns ``out``.
    """
    if m == 1:
        torch.sub(xc[:, :, None], xc[:, None, :], out=out)
        return out.abs_()
    assert scratch is not None
    # Accumulate squared differences one delay coordinate at a time, in the same order as
    # pyts' scalar loop, instead of materialising a (b, S, S, m) tensor (m times the memory).
    for k in range(m):
        seg = xc[:, k * tau : k * tau + side]
        dest = out if k == 0 else scratch
        torch.sub(seg[:, :, None], seg[:, None, :], out=dest)
        dest.square_()
        if k > 0:
            out.add_(scratch)
    return out.sqrt_()


def recurrence_plot(
    x: Tensor,
    dimension: int | float = 1,
    time_delay: int | float = 1,
    threshold: float | str | None = None,
    percentage: float = 10.0,
    *,
    normalize: bool = False,
    size: int | None = None,
    dtype: torch.dtype | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    valid: Tensor | None = None,
) -> Tensor:
    """Recurrence plots of a batch of series, matching ``pyts.image.RecurrencePlot``.

    Args:
        x: Series, shape ``(B, T)`` or ``(B, C, T)`` (e.g. C vegetation indices), any real
            dtype, any device. Must be finite.
        dimension: Embedding dimension ``m``: int in ``[1, T]`` or float fraction of ``T`` in
            ``(0, 1]``.
        time_delay: Time delay ``tau``, same int-or-fraction rule.
        threshold: ``None`` for distances; a float ``eps > 0`` for ``1[R < eps]``; ``'point'``
            for a per-plot ``eps`` at the ``percentage``-th percentile of its distances;
            ``'distance'`` for ``eps = percentage % of the plot's max distance``.
        percentage: Percentage in [0, 100] used by ``'point'`` and ``'distance'``.
        normalize: Divide each plot by its max so it lies in [0, 1] (an all-zero plot, e.g.
            of a constant series, stays all zeros).
        size: If set, resize each ``S x S`` plot to ``size x size`` (bilinear,
            ``align_corners=False``, antialiased when shrinking).
        dtype: Output dtype (e.g. ``torch.float16``); default is the compute dtype.
        chunk_size: Series processed at once; bounds the temporary memory beyond the output
            to a few ``chunk_size * S * S`` compute-dtype buffers. Plain ``m = 1`` distance plots
            in the compute dtype need no temporaries and are written in one sweep.
        valid: ``(B, T)`` bool, True where observed (padded series, ``time_axis: pad``); plot
            entries involving an unobserved date are set to 0 after thresholding and before
            normalising/resizing. A delay vector counts as observed when its last element is
            (padding only ever sits at the end). None: every date is observed.

    Returns:
        Plots, shape ``(B, S', S')`` or ``(B, C, S', S')`` with ``S' = size or S``, on
        ``x.device``. Computation runs in ``float64`` for ``float64`` input and ``float32``
        otherwise; binarised plots hold 0.0 / 1.0.

    Raises:
        ConfigError: If a parameter is invalid or the series are too short for
            ``dimension``/``time_delay``.
        InputError: If ``x`` has the wrong rank or dtype or is not finite, or ``valid`` has
            the wrong shape or dtype.
    """
    _check_options(threshold, percentage, size, chunk_size)
    m, tau, side = _check_series(x, dimension, time_delay)
    rows = _valid_rows(valid, x.shape, side)
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out_side = side if size is None else int(size)
    series = x.reshape(-1, x.shape[-1])
    out_dtype = compute_dtype if dtype is None else dtype
    out = series.new_empty((series.shape[0], out_side, out_side), dtype=out_dtype)
    post = _Postprocess(threshold, percentage, normalize, size)
    _fill_plots(series, out, (m, tau, side), compute_dtype, chunk_size, post, rows)
    return out.reshape(*x.shape[:-1], out_side, out_side)


def _check_series(
    x: Tensor, dimension: int | float, time_delay: int | float
) -> tuple[int, int, int]:
    """Check ``x`` (rank, dtype, finiteness) and resolve its embedding ``(m, tau, S)``."""
    if x.ndim not in (2, 3) or x.dtype == torch.bool or x.is_complex():
        raise InputError(
            f"x must be a real tensor of shape (B, T) or (B, C, T), time last; got shape "
            f"{tuple(x.shape)}, dtype {x.dtype}."
        )
    embedding = resolve_embedding(x.shape[-1], dimension, time_delay)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InputError("x: series contains NaN/inf; clean or interpolate the index series first.")
    return embedding


@dataclass(frozen=True)
class _Postprocess:
    """What follows the distances: threshold, mask, normalise, resize (see recurrence_plot)."""

    threshold: float | str | None
    percentage: float
    normalize: bool
    size: int | None

    @property
    def is_identity(self) -> bool:
        return self.threshold is None and not self.normalize and self.size is None

    def __call__(self, dist: Tensor, out: Tensor, keep: Tensor | None) -> None:
        """Threshold, mask, normalise and resize a chunk of distance plots into the output.

        Args:
            dist: Distance plots, shape ``(b, S, S)``, compute dtype; overwritten.
            out: Destination, shape ``(b, S', S')``, output dtype.
            keep: ``(b, S)`` bool observed delay vectors, or None.
        """
        threshold, size = self.threshold, self.size
        plots = dist
        if threshold is not None:
            if isinstance(threshold, str) and threshold == "point":
                eps = point_threshold(dist, self.percentage)[:, None, None]
            elif isinstance(threshold, str):  # "distance"
                # Same operation order as pyts: (percentage / 100) * max.
                eps = (self.percentage / 100) * dist.amax(dim=(1, 2), keepdim=True)
            else:
                eps = float(threshold)
            if keep is None and (size is None or size == dist.shape[-1]):
                # A 0/1 plot already has max 1 (or is all zeros): normalising would not change it.
                torch.lt(dist, eps, out=out)
                return
            plots = torch.lt(dist, eps, out=dist)  # element-wise, so writing in place is safe
        if keep is not None:
            plots = plots.mul_(keep[:, :, None] & keep[:, None, :])
        if threshold is None and self.normalize:
            peak = dist.amax(dim=(1, 2), keepdim=True)
            # An all-zero plot (constant series) has peak 0: divide by 1 to keep zeros, not NaN.
            plots = dist.div_(peak.masked_fill_(peak == 0, 1))
        if size is not None and size != plots.shape[-1]:
            plots = F.interpolate(
                plots[:, None],
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=size < plots.shape[-1],
            )[:, 0]
        out.copy_(plots)


def _fill_plots(
    series: Tensor,
    out: Tensor,
    embedding: tuple[int, int, int],
    compute_dtype: torch.dtype,
    chunk_size: int,
    post: _Postprocess,
    rows: Tensor | None,
) -> None:
    """Write the plots of ``series`` ``(N, T)`` into ``out`` ``(N, S', S')``, chunk by chunk.

    ``embedding`` is ``(m, tau, S)``, ``rows`` the ``(N, S)`` observed delay vectors or None.
    """
    m, tau, side = embedding
    n_series, device = series.shape[0], series.device
    # Write distances straight into the output when nothing follows that needs a separate
    # buffer: the common m=1 float32 path then makes a single sweep over the output memory.
    direct = post.is_identity and rows is None and out.dtype == compute_dtype
    # Buffers are allocated once per call and reused by every chunk: fresh large allocations
    # are page-faulted in on every touch, which costs more than computing the plots.
    buffer_shape = (min(chunk_size, n_series), side, side)
    workspace = None if direct else torch.empty(buffer_shape, dtype=compute_dtype, device=device)
    scratch = None if m == 1 else torch.empty(buffer_shape, dtype=compute_dtype, device=device)
    # With no buffer to bound (m = 1 written straight into the output) one sweep over the whole
    # batch is best: on CPU every parallel op pays a thread wake-up, ms each on a busy machine.
    step = max(n_series, 1) if workspace is None and scratch is None else chunk_size
    for start in range(0, n_series, step):
        stop = min(start + step, n_series)
        xc = series[start:stop].to(compute_dtype)
        scratch_c = None if scratch is None else scratch[: stop - start]
        if workspace is None:
            _distances(xc, m, tau, side, out[start:stop], scratch_c)
        else:
            dist = _distances(xc, m, tau, side, workspace[: stop - start], scratch_c)
            post(dist, out[start:stop], None if rows is None else rows[start:stop])


def _valid_rows(valid: Tensor | None, shape: torch.Size, side: int) -> Tensor | None:
    """``(B*C, S)`` observed delay vectors of every flattened series, or None if all are."""
    if valid is None or bool(valid.all()):
        return None
    lead, length = tuple(shape[:-1]), shape[-1]
    if valid.dtype != torch.bool or tuple(valid.shape) != (lead[0], length):
        raise InputError(
            f"valid must be a bool tensor of shape {(lead[0], length)} (series x dates); got "
            f"shape {tuple(valid.shape)}, dtype {valid.dtype}."
        )
    rows = valid[:, length - side :]
    channels = math.prod(lead[1:])
    return rows[:, None, :].expand(lead[0], channels, side).reshape(-1, side)


def build_rps(
    series: Tensor,
    valid: Tensor | None,
    cfg: RecurrenceConfig,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Recurrence plots of prepared series as the ``recurrence`` config asks, honouring padding.

    The one entry point every stage, task and prediction uses, so all see the same plots.

    Args:
        series: ``(B, I, L)`` index series (time last), finite.
        valid: ``(B, L)`` bool, True where observed (``time_axis: pad``), or None if all are.
        cfg: The ``recurrence`` config (pyts semantics, normalisation, resize).
        dtype: Output dtype.

    Returns:
        ``(B, I, S', S')`` plots; entries involving padded dates are 0.
    """
    return recurrence_plot(
        series,
        dimension=cfg.dimension,
        time_delay=cfg.time_delay,
        threshold=cfg.threshold,
        percentage=cfg.percentage,
        normalize=cfg.normalize,
        size=cfg.size,
        dtype=dtype,
        valid=valid,
    )
