"""Paired comparisons across seeds: is method A better than method B, or is it noise?

Each seed is one full replicate (new synthetic data, pixel sample, pretraining, fine-tuning),
and both methods of a pair see the same replicate, so the per-seed differences are what vary.
With few seeds the honest summary is the mean difference, its spread, a 95 % t-interval and
the two-sided paired t-test (:func:`scipy.stats.ttest_rel`); a claim needs the interval to
exclude 0 (``p < 0.05``), and a margin inside it is reported as "no evidence".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _scipy

from pimc.core.errors import InputError

__all__ = ["ALPHA", "mean_sd", "paired_comparison"]

ALPHA = 0.05


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def paired_comparison(
    a: Sequence[float], b: Sequence[float], higher_is_better: bool
) -> dict[str, float | str]:
    """Compare method ``a`` with method ``b`` over paired replicates (same order).

    Args:
        a: ``(n,)`` metric of A, one per seed.
        b: ``(n,)`` metric of B on the same seeds.
        higher_is_better: The metric's direction.

    Returns:
        ``n``, ``diff_mean`` (A − B), ``diff_sd``, ``ci_low``/``ci_high`` (95 % t-interval of
        the mean difference), ``p`` (paired t-test, two-sided; 1.0 when every difference is
        0, 0.0 when they are equal and non-zero), ``wins`` (seeds where A is strictly better)
        and ``verdict``: ``better``, ``worse`` or ``no evidence`` (at ``p < 0.05``).

    Raises:
        InputError: lengths differ, fewer than 2 pairs, or a value is not finite.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise InputError(
            f"paired_comparison needs two equal-length lists of >= 2 values; got {x.shape} "
            f"and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(
            f"paired_comparison got a non-finite value: a={x.tolist()}, b={y.tolist()}"
        )
    d = x - y
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:  # the t statistic is undefined; the data still say something
        p, half = (1.0 if mean == 0.0 else 0.0), 0.0
    else:
        p = float(_scipy.ttest_rel(x, y).pvalue)
        half = float(_scipy.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    sign = 1.0 if higher_is_better else -1.0
    verdict = "no evidence"
    if p < ALPHA and mean != 0.0:
        verdict = "better" if sign * mean > 0 else "worse"
    return {
        "n": n,
        "diff_mean": mean,
        "diff_sd": sd,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "p": p,
        "wins": int((sign * d > 0).sum()),
        "verdict": verdict,
    }
