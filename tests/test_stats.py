"""Paired comparisons against hand-computed values (lightly style: small cases by hand)."""

from __future__ import annotations

import math

import pytest

from pimc.core.errors import InputError
from pimc.stats import mean_sd, paired_comparison


def _p_two_sided_df2(t: float) -> float:
    # Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2)).
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def test_three_seeds_by_hand():
    a, b = [1.0, 2.0, 3.0], [0.5, 1.0, 2.9]  # differences 0.5, 1.0, 0.1
    got = paired_comparison(a, b, higher_is_better=True)
    mean = 1.6 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 + (1.0 - mean) ** 2 + (0.1 - mean) ** 2) / 2)
    t = mean / (sd / math.sqrt(3))
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert got["n"] == 3 and got["wins"] == 3
    assert got["diff_mean"] == pytest.approx(mean)
    assert got["diff_sd"] == pytest.approx(sd)
    assert got["p"] == pytest.approx(_p_two_sided_df2(t))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert got["verdict"] == "no evidence"  # p ~ 0.18: three wins are not enough here


def test_direction_and_significance():
    a = [0.30, 0.31, 0.29, 0.30]  # an error metric: lower is better
    b = [0.40, 0.42, 0.39, 0.41]
    got = paired_comparison(a, b, higher_is_better=False)
    assert got["diff_mean"] == pytest.approx(-0.105)
    assert got["wins"] == 4 and got["p"] < 0.001 and got["verdict"] == "better"
    assert paired_comparison(b, a, higher_is_better=False)["verdict"] == "worse"
    assert paired_comparison(a, b, higher_is_better=True)["verdict"] == "worse"


def test_zero_spread():
    same = paired_comparison([0.5, 0.6], [0.5, 0.6], True)
    assert same["p"] == 1.0 and same["verdict"] == "no evidence" and same["wins"] == 0
    shifted = paired_comparison([0.6, 0.7], [0.5, 0.6], True)
    assert shifted["p"] == 0.0 and shifted["verdict"] == "better"
    assert shifted["ci_low"] == pytest.approx(0.1) == shifted["ci_high"]


@pytest.mark.parametrize(
    "a, b", [([1.0], [2.0]), ([1.0, 2.0], [1.0]), ([1.0, math.nan], [1.0, 2.0])]
)
def test_bad_input_is_one_clear_error(a, b):
    with pytest.raises(InputError, match="paired_comparison"):
        paired_comparison(a, b, True)


def test_mean_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    mean, sd = mean_sd([4.0])
    assert mean == 4.0 and math.isnan(sd)
