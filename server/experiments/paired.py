"""A paired difference (one value per seed), tested and estimated by flipping signs.

The estimate is the mean difference; the test is the paired sign-flip permutation
test of that mean (Fisher's: under "no difference" each seed's difference is as
likely to have either sign); the interval is the set of shifts the same test does
not reject. Why this and not the Hodges-Lehmann estimate with a signed-rank
interval:

- The interval and the test cannot disagree. With the equal-tailed two-sided p
  (twice the smaller one-sided p, as `scipy.stats.permutation_test` computes it),
  the shifts the test keeps are exactly the values between two order statistics
  of the means of every subset of the differences (Hartigan 1969): an interval,
  it always holds the mean, and it excludes 0 exactly when p < alpha, ties and
  zeros included. Inverting the signed-rank test with tied differences (common:
  accuracies are counts of images) gives a set that is not even an interval,
  because the ranks change with the shift.
- The mean is what "BN gains x points" means to a reader, and a diverged twin
  costs its full weight instead of one rank. The price is power when one twin
  diverges: the test then says "inconclusive", and the divergence is reported as
  an outcome of its own.
- The same subset means give the equivalence test (TOST: both one-sided tests at
  the margins reject exactly when the 1 - 2 alpha interval lies inside them).
- With k zero differences among n, the smallest p is 2 / 2**(n - k): the zeros'
  signs never move the mean.

The permutation distribution is enumerated exactly up to `EXACT_PAIRS` pairs
(every one of the 2**n sign patterns, as subset sums: milliseconds, where
`scipy.stats.permutation_test`'s own enumeration takes 13 s at 20 pairs), and by
a fixed-seed Monte Carlo sample beyond. tests/server/test_paired.py checks every
p against `scipy.stats.permutation_test` and every interval against scipy's
test inverted numerically.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, Field

from .significance import ALPHA

# scipy: imported where used (statistics.py says why).

EXACT_PAIRS = 20
MONTE_CARLO_RESAMPLES = 2**17 - 1
MONTE_CARLO_SEED = 0


class Bounds(BaseModel):
    """An interval at a stated confidence level; an end is None when unbounded."""

    level: float = Field(description="Confidence level, e.g. 0.95")
    low: float | None
    high: float | None

    def excludes(self, value: float) -> bool:
        return (self.low is not None and self.low > value) or (
            self.high is not None and self.high < value
        )


class SignFlip:
    """The sign-flip permutation distribution of one set of paired differences.

    Every sign pattern is a set F of flipped pairs. For a shift delta, the pattern
    is at least as extreme as the data on the high side exactly when F is empty or
    the mean of the differences in F is at most delta; that turns every p and
    interval into counting subset means (sorted once)."""

    def __init__(self, differences: np.ndarray) -> None:
        d = np.asarray(differences, dtype=np.float64)
        self.n = len(d)
        self.differences = d
        if self.n <= EXACT_PAIRS:
            sums, sizes = np.zeros(1), np.zeros(1, dtype=np.int64)
            for value in d:  # all 2**n subsets, by doubling
                sums = np.concatenate([sums, sums + value])
                sizes = np.concatenate([sizes, sizes + 1])
            self.total = 2**self.n
        else:
            rng = np.random.default_rng(MONTE_CARLO_SEED)
            flips = rng.integers(0, 2, size=(MONTE_CARLO_RESAMPLES, self.n), dtype=np.int8)
            sums = flips.astype(np.float64) @ d
            sizes = flips.sum(axis=1, dtype=np.int64)
            # the data's own pattern counts once more, as scipy's Monte Carlo p does
            self.total = MONTE_CARLO_RESAMPLES + 1
            sums, sizes = np.concatenate([[0.0], sums]), np.concatenate([[0], sizes])
        nonempty = sizes > 0
        self.always = int(self.total - nonempty.sum())  # empty sets: as extreme as the data
        # Only the sorted subset means are kept: p and the interval both count in
        # this one array, so they cannot disagree. (For whole-image differences and
        # whole-image shifts the division is exact enough: a mean that is not the
        # shift differs from it by at least 1 / n, far beyond rounding.)
        self.means = np.sort(sums[nonempty] / sizes[nonempty])

    @property
    def exact(self) -> bool:
        return self.n <= EXACT_PAIRS

    def p_greater(self, delta: float = 0.0) -> float:
        """One-sided p against "the mean difference is at most delta"."""
        at_or_below = int(np.searchsorted(self.means, delta, side="right"))
        return (self.always + at_or_below) / self.total

    def p_less(self, delta: float = 0.0) -> float:
        at_or_above = len(self.means) - int(np.searchsorted(self.means, delta, side="left"))
        return (self.always + at_or_above) / self.total

    def p(self, delta: float = 0.0) -> float:
        """Two-sided p: twice the smaller one-sided p, at most 1."""
        if self.n == 0:
            return 1.0
        return min(1.0, 2 * min(self.p_greater(delta), self.p_less(delta)))

    def min_p(self) -> float:
        """The smallest two-sided p these pairs could ever give: every nonzero
        difference on one side (the zeros' signs never count)."""
        nonzero = int(np.count_nonzero(self.differences))
        return min(1.0, 2 / 2**nonzero)

    def bounds(self, alpha: float) -> Bounds:
        """Every shift the two-sided test at `alpha` keeps: [M_(k+1), M_(N-k)] of the
        sorted subset means, where k is the most that may lie beyond an end."""
        level = 1 - alpha
        if self.n == 0:
            return Bounds(level=level, low=None, high=None)
        # p_greater(delta) < alpha/2  <=>  always + #{M <= delta} < alpha/2 * total
        k = math.ceil(alpha / 2 * self.total - self.always) - 1
        if k < 0:
            return Bounds(level=level, low=None, high=None)
        return Bounds(level=level, low=float(self.means[k]), high=float(self.means[-1 - k]))

    def tost(self, margin: float) -> float:
        """p of the two one-sided tests that the mean lies within (-margin, +margin)."""
        if self.n == 0:
            return 1.0
        return max(self.p_greater(-margin), self.p_less(margin))


@lru_cache(maxsize=48)  # 8 MB each at 20 pairs
def _sign_flip(differences: tuple[float, ...]) -> SignFlip:
    # A live experiment recomputes every cell each time one run ends; the
    # unchanged cells hit this cache.
    return SignFlip(np.array(differences))


def sign_flip(differences: np.ndarray | list[float]) -> SignFlip:
    return _sign_flip(tuple(float(x) for x in differences))


# --- beside p: how big, and how often ------------------------------------------------


class Proportion(BaseModel):
    estimate: float | None
    low: float | None
    high: float | None


def share_ahead(differences: np.ndarray, alpha: float = ALPHA) -> Proportion:
    """P(BN beats no-BN on a seed): the share of positive differences, ties half.

    Its interval: the Clopper-Pearson lower end for P(d > 0) and upper end for
    P(d >= 0), each a 1 - alpha/2 one-sided bound, so the pair covers
    P(d > 0) + P(d = 0)/2, which lies between them, with at least 1 - alpha;
    without ties it is the Clopper-Pearson interval itself. (The ends are beta
    quantiles, `scipy.stats.beta.ppf`: what `binomtest(...).proportion_ci()`
    finds by root-finding, 100 times slower; the tests check they agree.)"""
    from scipy import stats

    d = np.asarray(differences)
    n = len(d)
    if n == 0:
        return Proportion(estimate=None, low=None, high=None)
    ahead, ties = int(np.sum(d > 0)), int(np.sum(d == 0))
    below = ahead + ties
    low = stats.beta.ppf(alpha / 2, ahead, n - ahead + 1) if ahead else 0.0
    high = stats.beta.ppf(1 - alpha / 2, below + 1, n - below) if below < n else 1.0
    return Proportion(estimate=(ahead + ties / 2) / n, low=float(low), high=float(high))


class EffectSize(BaseModel):
    """d_z: the mean paired difference over its standard deviation."""

    estimate: float | None
    low: float | None
    high: float | None


def effect_size(differences: np.ndarray, alpha: float = ALPHA) -> EffectSize:
    """d_z with the interval of the noncentral t (`scipy.stats.nct`) inverted: exact
    when the differences are normal, a yardstick otherwise (it is not the test)."""
    from scipy import optimize, stats

    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n < 2 or np.std(d) == 0:
        return EffectSize(estimate=None, low=None, high=None)
    dz = float(d.mean() / d.std(ddof=1))
    t = dz * math.sqrt(n)
    df = n - 1

    def noncentrality(q: float) -> float:
        # the noncentrality at which the observed t sits at quantile q (the cdf
        # falls as the noncentrality grows); widen the bracket until it holds
        def f(nc: float) -> float:
            cdf = stats.nct.cdf(t, df, nc)
            if math.isnan(cdf):  # scipy 1.17 gives nan far in a tail: 1 or 0 there
                cdf = 1.0 if nc < t else 0.0
            return cdf - q

        span = abs(t) + 10
        while f(t - span) < 0 or f(t + span) > 0:
            span *= 2
        return optimize.brentq(f, t - span, t + span, xtol=1e-9)

    high = noncentrality(alpha / 2) / math.sqrt(n)
    low = noncentrality(1 - alpha / 2) / math.sqrt(n)
    return EffectSize(estimate=dz, low=low, high=high)
