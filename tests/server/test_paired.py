"""The sign-flip test, its interval and its companions against scipy's own computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bnlab.server.experiments.design import smallest_nonzero_pairs
from bnlab.server.experiments.paired import (
    EXACT_PAIRS,
    SignFlip,
    effect_size,
    share_ahead,
    sign_flip,
)

# Differences in correct test images (out of 10,000): ties and zeros are real.
CASES = [
    [12, -3, 7, 25, 4, -1, 9],
    [5, 5, 5, 0, 10, 5, -5],  # ties and a zero
    [12, 12, -3, 5, 12, 7, 0, 9],
    [-40, -12, -30, -60, -22, -51],
    [3, -3, 0, 0, 6, -6],  # symmetric: nothing to see
    [50] * 11 + [-8700],  # a diverged BN twin among small gains
]


def scipy_p(d, alternative="two-sided"):
    """scipy's paired permutation test of the mean: every sign pattern."""
    return stats.permutation_test(
        (np.asarray(d, dtype=float),),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative=alternative,
        vectorized=True,
    ).pvalue


@pytest.mark.parametrize("d", CASES)
def test_p_is_scipys_permutation_test(d):
    flip = SignFlip(np.array(d))
    assert flip.p() == pytest.approx(scipy_p(d), abs=1e-12)
    assert flip.p_greater() == pytest.approx(scipy_p(d, "greater"), abs=1e-12)
    assert flip.p_less() == pytest.approx(scipy_p(d, "less"), abs=1e-12)


@pytest.mark.parametrize("d", CASES[:5])
def test_interval_is_scipys_test_inverted(d):
    """Every shift inside the interval is kept by scipy's test of d - shift, and a
    shift just outside either end is rejected: the interval is the test's."""
    flip = SignFlip(np.array(d))
    for alpha in (0.05, 0.2):
        b = flip.bounds(alpha)
        assert b.low is not None and b.high is not None
        d = np.asarray(d, dtype=float)
        step = 1e-6
        for inside in (b.low, b.high, (b.low + b.high) / 2, float(d.mean())):
            assert scipy_p(d - inside) >= alpha
        assert scipy_p(d - (b.low - step)) < alpha
        assert scipy_p(d - (b.high + step)) < alpha


def test_interval_excludes_zero_exactly_when_p_is_below_alpha():
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(1500):
        n = int(rng.integers(1, 13))
        # small integers: many ties and zeros
        d = rng.integers(-4, 7, size=n)
        flip = SignFlip(d)
        for alpha in (0.05, 0.05 / 16, 0.1):
            b = flip.bounds(alpha)
            assert b.excludes(0.0) == (flip.p() < alpha), (d, alpha)
            if b.low is not None:  # the estimate is always inside
                assert b.low <= d.mean() <= b.high
            checked += b.excludes(0.0)
    assert checked > 100  # the property was tested on both sides


def test_smallest_p_with_zero_differences():
    # k zeros among n: every nonzero on one side gives 2 / 2**(n - k), no lower
    d = np.array([3, 5, 0, 8, 2, 0, 4])
    flip = SignFlip(d)
    assert flip.p() == pytest.approx(2 / 2**5) == flip.min_p()
    assert flip.p() == pytest.approx(scipy_p(d))
    assert SignFlip(np.zeros(4)).p() == 1.0 and SignFlip(np.zeros(4)).min_p() == 1.0
    assert smallest_nonzero_pairs(0.05) == 6  # 2/64 < 0.05 <= 2/32
    assert smallest_nonzero_pairs(0.05 / 16) == 10  # 2/1024 < 0.003125 <= 2/512


def test_too_few_pairs_give_an_unbounded_interval():
    b = SignFlip(np.array([10, 11, 12, 13, 14])).bounds(0.05)
    assert b.low is None and b.high is None


@pytest.mark.parametrize("d", CASES[:5])
def test_tost_is_two_of_scipys_one_sided_tests(d):
    margin = 6
    d = np.asarray(d, dtype=float)
    expected = max(scipy_p(d + margin, "greater"), scipy_p(d - margin, "less"))
    assert SignFlip(d).tost(margin) == pytest.approx(expected, abs=1e-12)


def test_equivalence_exactly_when_the_1_minus_2_alpha_interval_is_inside_the_margin():
    rng = np.random.default_rng(2)
    shown = 0
    for _ in range(800):
        n = int(rng.integers(4, 13))
        d = rng.integers(-6, 7, size=n)
        flip = SignFlip(d)
        for margin in (3, 5, 10):
            b = flip.bounds(2 * 0.05)
            inside = b.low is not None and -margin < b.low and b.high < margin
            assert (flip.tost(margin) < 0.05) == inside
            shown += inside
    assert shown > 50


def test_beyond_exact_pairs_a_fixed_monte_carlo_sample_agrees_with_scipy():
    rng = np.random.default_rng(3)
    d = rng.normal(4, 20, size=EXACT_PAIRS + 4).round()
    flip = SignFlip(d)
    assert not flip.exact
    reference = stats.permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        n_resamples=99_999,
        vectorized=True,
        rng=np.random.default_rng(0),
    ).pvalue
    assert flip.p() == pytest.approx(reference, abs=0.01)
    assert flip.bounds(0.05).excludes(0.0) == (flip.p() < 0.05)
    assert sign_flip(list(d)).p() == flip.p()  # fixed seed: same pairs, same p


def test_share_ahead_is_clopper_pearson_and_ties_count_half():
    d = np.array([3, 5, -1, 8, 2, 4, -2, 6])
    got = share_ahead(d)
    ci = stats.binomtest(6, 8).proportion_ci(0.95)
    assert got.estimate == 6 / 8
    assert (got.low, got.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    tied = share_ahead(np.array([3, 0, 0, 8, 2, -4]))
    assert tied.estimate == pytest.approx((3 + 1) / 6)
    assert tied.low == pytest.approx(stats.binomtest(3, 6).proportion_ci(0.95).low)
    assert tied.high == pytest.approx(stats.binomtest(5, 6).proportion_ci(0.95).high)
    assert tied.low <= tied.estimate <= tied.high


def test_effect_size_is_dz_with_the_noncentral_t_interval():
    d = np.array([12.0, -3, 7, 25, 4, -1, 9])
    got = effect_size(d)
    n = len(d)
    assert got.estimate == pytest.approx(d.mean() / d.std(ddof=1))
    t = got.estimate * math.sqrt(n)
    # the ends are the noncentralities that put the observed t at 97.5 % and 2.5 %
    assert stats.nct.cdf(t, n - 1, got.low * math.sqrt(n)) == pytest.approx(0.975)
    assert stats.nct.cdf(t, n - 1, got.high * math.sqrt(n)) == pytest.approx(0.025)
    assert effect_size(np.array([5.0, 5, 5])).estimate is None
