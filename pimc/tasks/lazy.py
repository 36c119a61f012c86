"""Recurrence plots built per batch, so fine-tuning memory does not grow with the pixel count.

A float32 plot of three 32×32 channels is 12 KB, its series 0.6 KB: holding every split's plots
in RAM took ~4.6 GB at 311k pixels and would not fit at 2M. :class:`PlotRows` keeps the series
and builds a batch's plots when the batch is read, with the same :func:`build_rps` every stage
uses, so the numbers are those of plots built up front. Building costs ~27 µs per plot on one
CPU core (3.5 ms per batch of 128, a few % of a training step), which is also why fine-tuning
never reads the ``recurrence`` stage's stored plots (see the README, "Scale").
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from pimc.core.config import RecurrenceConfig
from pimc.transforms.recurrence import build_rps

__all__ = ["PlotRows"]


class PlotRows:
    """The recurrence plots ``(N, I, S, S)`` float32 of ``N`` series, built when indexed.

    Supports the tensor operations the task loops use on their inputs: ``len``, indexing by an
    int64 index tensor or a slice (returns a plain tensor) and :meth:`split`.

    Args:
        series: ``(N, I, L)`` float32 series (CPU).
        valid: ``(N, L)`` bool observed mask, or None when every date is observed.
        cfg: The recurrence config the plots are built with.
    """

    def __init__(self, series: Tensor, valid: Tensor | None, cfg: RecurrenceConfig) -> None:
        if valid is not None and valid.shape != (series.shape[0], series.shape[-1]):
            raise ValueError(f"valid {tuple(valid.shape)} does not match series {series.shape}")
        self.series, self.valid, self.cfg = series, valid, cfg

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, idx: Tensor | slice) -> Tensor:
        valid = None if self.valid is None else self.valid[idx]
        return build_rps(self.series[idx], valid, self.cfg)

    def split(self, size: int) -> Iterator[Tensor]:
        """Consecutive chunks of ``size`` plots (the last may be shorter), like Tensor.split."""
        for start in range(0, len(self), size):
            yield self[start : start + size]
