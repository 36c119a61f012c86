"""Baselines that do not use PIMC: closed-form forecasters and a small 1-D CNN on raw series."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pimc.core.errors import ConfigError

__all__ = ["CNN1d", "climatology", "linear_extrapolation", "persistence"]


def persistence(series: Tensor, horizon: int) -> Tensor:
    """The last observed value, repeated: ``(B, I, T)`` -> ``(B, I, horizon)``."""
    return series[..., -1:].expand(*series.shape[:-1], horizon).clone()


def linear_extrapolation(series: Tensor, horizon: int, window: int = 4) -> Tensor:
    """Least-squares line through the last ``window`` values, extended ``horizon`` steps.

    Args:
        series: ``(B, I, T)`` on a regular time grid, ``T >= 2``.
        horizon: Steps to predict.
        window: Points the line is fitted to (the last ``min(window, T)``).

    Returns:
        ``(B, I, horizon)``: the line at steps ``T, ..., T + horizon - 1``.
    """
    w = min(window, series.shape[-1])
    if w < 2:
        raise ConfigError(f"linear extrapolation needs >= 2 input steps, got {series.shape[-1]}")
    y = series[..., -w:].double()
    t = torch.arange(w, dtype=torch.float64, device=series.device)
    tc = t - t.mean()
    slope = (y * tc).sum(-1, keepdim=True) / tc.square().sum()
    intercept = y.mean(-1, keepdim=True) - slope * t.mean()
    future = torch.arange(w, w + horizon, dtype=torch.float64, device=series.device)
    return (intercept + slope * future).to(series.dtype)


def climatology(train_targets: Tensor) -> Tensor:
    """Mean target curve of the training pixels: ``(N, I, H)`` -> ``(I, H)``.

    Every pixel then gets the same forecast: the seasonal mean of each index at each future
    step, without any class information.
    """
    return train_targets.double().mean(0).to(train_targets.dtype)


class CNN1d(nn.Module):
    """Small 1-D CNN on raw index series: three conv-BN-ReLU blocks, then adaptive pooling.

    Pooling to ``pooled`` time bins (not one global average) keeps coarse timing, which is
    what separates crops with similar curves shifted in the season.

    Args:
        in_channels: Indices I.
        width: Channels of the first block (doubled by the second and third).
        pooled: Time bins kept by the final adaptive average pooling.

    Shapes:
        ``(B, I, T)`` -> ``(B, num_features)`` with ``num_features = 4 * width * pooled``.
    """

    def __init__(self, in_channels: int, width: int = 32, pooled: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, stride in enumerate((1, 2, 2)):
            out = width * 2 ** min(i, 2)
            layers += [
                nn.Conv1d(channels, out, 5, stride=stride, padding=2, bias=False),
                nn.BatchNorm1d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(pooled), nn.Flatten())
        self.num_features = channels * pooled

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, I, T)`` to ``(B, num_features)``."""
        return self.features(x)
