"""Pixel time series of a patch: indices, despiking and the stage's time axis, in one place.

``prepare`` (sampled pixels) and ``pimc predict`` (every pixel of a patch) both call
:func:`pixel_series`, so a deployed model sees exactly the preprocessing it was trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pimc.core.bands import PASTIS_BANDS
from pimc.core.config import PrepareConfig
from pimc.transforms.indices import compute_indices
from pimc.transforms.timegrid import despike, make_grid, pad_to_length, resample_to_grid

__all__ = ["date_grid", "pixel_series"]


def date_grid(cfg: PrepareConfig) -> np.ndarray | None:
    """The common date grid of ``time_axis: grid``; ``None`` for ``pad``."""
    if cfg.time_axis != "grid":
        return None
    return make_grid(cfg.grid_start, cfg.grid_end, cfg.grid_step_days)


def pixel_series(
    image: torch.Tensor,
    dates: Any,
    rows: torch.Tensor,
    cols: torch.Tensor,
    cfg: PrepareConfig,
    grid: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cleaned index series of chosen pixels, on the stage's time axis.

    The one place series are made: ``prepare`` and ``pimc predict`` (every pixel of a patch)
    both call it, so a deployed model sees exactly the preprocessing it was trained on.

    Args:
        image: ``(T, 10, H, W)`` reflectance of one patch, bands in PASTIS order.
        dates: The T acquisition dates.
        rows: ``(N,)`` pixel rows.
        cols: ``(N,)`` pixel columns.
        cfg: The ``prepare`` config (indices, despike, time axis).
        grid: The common date grid (``time_axis: grid``) or ``None`` (``pad``).

    Returns:
        ``series`` ``(N, I, L)`` float32 and ``valid`` ``(N, L)`` bool.
    """
    pixels = image[:, :, rows, cols]  # (T, 10, N)
    series = compute_indices(pixels, PASTIS_BANDS, cfg.indices, band_dim=-2)  # (T, I, N)
    series = series.permute(2, 1, 0).contiguous()  # (N, I, T): time last
    blue = pixels[:, PASTIS_BANDS.index("B02")].T[:, None, :]  # (N, 1, T)
    series = despike(
        series, cfg.despike, cfg.despike_window, blue=blue, blue_threshold=cfg.blue_threshold
    )
    if grid is not None:
        series = resample_to_grid(series, dates, grid)
        valid = torch.ones(series.shape[0], series.shape[-1], dtype=torch.bool)
    else:
        series, observed = pad_to_length(series, cfg.max_length)
        valid = observed[:, 0]
    return series.float(), valid
