"""Irregular Sentinel-2 acquisition dates → regular time grids, padding and cloud despiking.

PASTIS patches have 38–61 irregular, sorted dates (``datetime64[D]``) and keep their cloudy
acquisitions. Recurrence plots need series of one common length, so each series is either
resampled onto a regular grid (:func:`resample_to_grid`) or zero-padded with a validity mask
(:func:`pad_to_length`); clouds, which show as sudden NDVI drops on dates with a very bright
blue band, can be removed first with :func:`despike`.

All tensor functions are pure torch, work on any device and keep the input's dtype (integer
inputs are promoted to the default float dtype). Time is always the LAST axis.

NaN policy: a NaN value is a missing observation. :func:`resample_to_grid` and
``despike(method="blue")`` interpolate over it from the nearest valid neighbours of the same
series, exactly as over a cloudy date; a series with no valid value at all stays NaN (resampling)
or unchanged (despiking). ``despike(method="median")`` ignores NaN inside each window.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pimc.core.errors import ConfigError, InputError

__all__ = ["DESPIKE_METHODS", "despike", "make_grid", "pad_to_length", "resample_to_grid"]

DESPIKE_METHODS = ("none", "median", "blue")


def _as_day(value: str | np.datetime64, name: str) -> np.datetime64:
    try:
        return np.datetime64(value, "D")
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"{name}={value!r} is not a date; give an ISO date such as '2018-09-01'"
        ) from err


def make_grid(start: str | np.datetime64, end: str | np.datetime64, step_days: int) -> np.ndarray:
    """Regular daily-resolution grid ``start, start + step, ...`` up to and including ``end``.

    Args:
        start: First date (ISO string or ``datetime64``), included.
        end: Last date; included when it falls on the grid (the grid stops before ``end + 1 day``).
        step_days: Grid spacing in days, ≥ 1.

    Returns:
        ``datetime64[D]`` array of shape ``(G,)``.

    Raises:
        ConfigError: unparsable date, ``end < start`` or ``step_days < 1``.
    """
    first, last = _as_day(start, "start"), _as_day(end, "end")
    if isinstance(step_days, bool) or int(step_days) != step_days or step_days < 1:
        raise ConfigError(f"step_days={step_days!r} must be an integer ≥ 1 (grid spacing in days)")
    if last < first:
        raise ConfigError(f"end={last} is before start={first}; swap them")
    return np.arange(first, last + np.timedelta64(1, "D"), np.timedelta64(int(step_days), "D"))


def _days(dates: np.ndarray, origin: np.ndarray, name: str) -> np.ndarray:
    """Dates as float64 days since ``origin`` (datetime64 of any unit, or plain day numbers)."""
    dates = np.asarray(dates)
    if dates.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {dates.shape}")
    if np.issubdtype(dates.dtype, np.datetime64) != np.issubdtype(origin.dtype, np.datetime64):
        raise InputError(
            f"{name} has dtype {dates.dtype} but dates has {origin.dtype}; give both as "
            "datetime64 or both as day numbers"
        )
    if np.issubdtype(dates.dtype, np.datetime64):
        return (dates - origin) / np.timedelta64(1, "D")
    return dates.astype(np.float64) - origin.astype(np.float64)


def _float(values: Tensor) -> Tensor:
    return values if values.is_floating_point() else values.to(torch.get_default_dtype())


def _interpolate(values: Tensor, t: Tensor, tq: Tensor) -> Tensor:
    """Linear interpolation of ``values (..., T)`` observed at ``t (T,)`` onto ``tq (G,)``.

    NaN entries are skipped: each query uses the nearest non-NaN observation on either side
    (per series), and outside the valid range the nearest valid value is repeated.
    """
    n_t = values.shape[-1]
    valid = ~torch.isnan(values)
    pos = torch.arange(n_t, device=values.device).expand_as(values)
    # Index of the last valid observation at or before i, and of the first at or after i;
    # -1 / n_t mean "none". cummax over reversed time gives the suffix minimum.
    prev_valid = torch.where(valid, pos, -1).cummax(dim=-1).values
    next_valid = n_t - 1 - torch.where(valid, n_t - 1 - pos, -1).flip(-1).cummax(-1).values.flip(-1)

    # idx: last observation with t <= query (-1 if the query precedes all observations).
    idx = torch.searchsorted(t, tq, right=True) - 1
    lead = values.shape[:-1]
    left_at = idx.clamp(min=0).expand(*lead, -1)
    right_at = (idx + 1).clamp(max=n_t - 1).expand(*lead, -1)
    left = torch.where(idx >= 0, prev_valid.gather(-1, left_at), -1)
    right = torch.where(idx + 1 <= n_t - 1, next_valid.gather(-1, right_at), n_t)

    has_left, has_right = left >= 0, right < n_t
    left_c, right_c = left.clamp(0, n_t - 1), right.clamp(0, n_t - 1)
    v_left, v_right = values.gather(-1, left_c), values.gather(-1, right_c)
    t_left, t_right = t[left_c], t[right_c]
    # Guard the division where left == right (exact hit or one-sided): the weight is unused there.
    span = torch.where(has_left & has_right, t_right - t_left, torch.ones_like(t_left))
    w = ((tq - t_left) / span).clamp(0, 1)
    both = v_left + w * (v_right - v_left)
    out = torch.where(has_left & has_right, both, torch.where(has_left, v_left, v_right))
    # No valid observation at all: v_right was gathered from a NaN, so out is already NaN.
    return out


def resample_to_grid(values: Tensor, dates: np.ndarray, grid: np.ndarray) -> Tensor:
    """Linearly interpolate series observed on irregular ``dates`` onto ``grid``.

    Interpolation is in days; outside ``[dates[0], dates[-1]]`` the nearest edge value is
    repeated (constant extrapolation). NaN observations are interpolated over per series (see
    the module docstring). Pure torch; one ``dates`` array is shared by every leading index.

    Args:
        values: ``(..., T)`` series, time last.
        dates: ``(T,)`` strictly increasing ``datetime64`` (any unit) or day numbers.
        grid: ``(G,)`` query dates, same kind as ``dates``; need not be sorted.

    Returns:
        ``(..., G)`` tensor of ``values``' float dtype on ``values``' device.

    Raises:
        InputError: shape mismatch, mixed date kinds, empty series, or dates not strictly
            increasing.
    """
    values = _float(values)
    dates = np.asarray(dates)
    if dates.ndim != 1 or dates.shape[0] != values.shape[-1]:
        raise InputError(
            f"dates has shape {dates.shape} but values has {values.shape[-1]} time steps on its "
            "last axis; pass one date per time step, with time as the last axis of values"
        )
    if dates.shape[0] == 0:
        raise InputError("values has no time steps (T=0); nothing to resample")
    t_np = _days(dates, dates[0], "dates")
    if np.any(np.diff(t_np) <= 0):
        raise InputError(
            "dates must be strictly increasing (sorted, no duplicates); sort values and dates "
            "together and merge same-day acquisitions first"
        )
    tq_np = _days(np.asarray(grid), dates[0], "grid")
    # Days since dates[0] are small integers, exact in float32; avoid float64 (absent on MPS).
    dtype = torch.promote_types(values.dtype, torch.float32)
    t = torch.as_tensor(t_np, dtype=dtype, device=values.device)
    tq = torch.as_tensor(tq_np, dtype=dtype, device=values.device)
    return _interpolate(values.to(dtype), t, tq).to(values.dtype)


def pad_to_length(values: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Zero-pad series at the end of the time axis to a fixed length.

    Args:
        values: ``(..., T)`` series, time last.
        length: Target length ``L`` ≥ T (the ``max_length`` parameter).

    Returns:
        ``(padded, observed)``: ``(..., L)`` tensor of ``values``' dtype and ``(..., L)`` bool
        mask, True on the first T (observed) steps.

    Raises:
        ConfigError: ``length < 1`` or ``T > length``.
    """
    if length < 1:
        raise ConfigError(f"max_length={length} must be ≥ 1")
    n_t = values.shape[-1]
    if n_t > length:
        raise ConfigError(
            f"series has {n_t} dates but max_length={length}; raise the `max_length` parameter "
            f"to at least {n_t} (PASTIS has up to 61 dates)"
        )
    padded = values.new_zeros((*values.shape[:-1], length))
    padded[..., :n_t] = values
    observed = torch.zeros(padded.shape, dtype=torch.bool, device=values.device)
    observed[..., :n_t] = True
    return padded, observed


def despike(
    values: Tensor,
    method: str = "median",
    window: int = 3,
    blue: Tensor | None = None,
    blue_threshold: float = 0.2,
) -> Tensor:
    """Remove cloud spikes from series along the (last) time axis.

    Methods:
        ``"none"``: return ``values`` unchanged.
        ``"median"``: running median of odd ``window`` dates; edges use replicate padding; NaN is
            ignored inside a window (an all-NaN window gives NaN); with an even number of valid
            values the lower median is taken, so outputs are always observed values.
        ``"blue"``: dates whose blue reflectance ``blue * 1e-4`` exceeds ``blue_threshold`` are
            cloudy and are replaced by linear interpolation (in time steps) between the nearest
            clear dates; edge clouds take the nearest clear value; a series with no clear date is
            returned unchanged. NaN in ``blue`` counts as clear.

    Args:
        values: ``(..., T)`` series (e.g. NDVI), time last.
        method: One of :data:`DESPIKE_METHODS`.
        window: Odd median window ≥ 1 (``"median"`` only).
        blue: ``(..., T)`` B02 reflectance ×1e4, broadcastable to ``values`` (``"blue"`` only).
        blue_threshold: Cloud threshold on the ×1e-4-scaled blue band (``"blue"`` only).

    Returns:
        ``(..., T)`` tensor shaped like ``values``.

    Raises:
        ConfigError: unknown method or bad window.
        InputError: missing or mis-shaped ``blue``.
    """
    if method not in DESPIKE_METHODS:
        raise ConfigError(f"despike method={method!r} is unknown; choose one of {DESPIKE_METHODS}")
    if method == "none":
        return values
    if method == "median":
        return _running_median(_float(values), window)
    return _fill_blue_clouds(_float(values), blue, blue_threshold)


def _running_median(values: Tensor, window: int) -> Tensor:
    """``despike(method="median")`` of float ``values`` ``(..., T)``."""
    if isinstance(window, bool) or int(window) != window or window < 1 or window % 2 == 0:
        raise ConfigError(f"despike window={window!r} must be an odd integer ≥ 1 (e.g. 3, 5)")
    n_t = values.shape[-1]
    if n_t == 0:
        return values
    half = int(window) // 2
    # Gather (..., T, window) neighbourhoods with clamped indices = replicate padding.
    offsets = torch.arange(-half, half + 1, device=values.device)
    idx = (torch.arange(n_t, device=values.device)[:, None] + offsets).clamp(0, n_t - 1)
    return values[..., idx].nanmedian(dim=-1).values


def _fill_blue_clouds(values: Tensor, blue: Tensor | None, blue_threshold: float) -> Tensor:
    """``despike(method="blue")`` of float ``values`` ``(..., T)``."""
    if blue is None:
        raise InputError("despike method='blue' needs `blue`, the (..., T) B02 reflectance x1e4")
    try:
        values_b, blue_b = torch.broadcast_tensors(values, blue.to(values.device))
    except RuntimeError as err:
        raise InputError(
            f"blue has shape {tuple(blue.shape)}, not broadcastable to values "
            f"{tuple(values.shape)}; give one blue value per date of each series"
        ) from err
    if values_b.shape != values.shape:
        raise InputError(
            f"blue shape {tuple(blue.shape)} would broadcast values {tuple(values.shape)} to "
            f"{tuple(values_b.shape)}; give blue with at most the shape of values"
        )
    cloudy = blue_b * 1e-4 > blue_threshold
    masked = values.masked_fill(cloudy, float("nan"))
    t = torch.arange(
        values.shape[-1],
        device=values.device,
        dtype=torch.promote_types(values.dtype, torch.float32),
    )
    filled = _interpolate(masked.to(t.dtype), t, t).to(values.dtype)
    no_clear = (~cloudy & ~torch.isnan(values)).sum(-1, keepdim=True) == 0
    # Keep NaN inputs that had no valid neighbour, and fully cloudy series, as they were.
    return torch.where(no_clear | torch.isnan(filled), values, filled)
