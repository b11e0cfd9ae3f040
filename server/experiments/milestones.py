"""Steps to a validation-accuracy milestone: censored at the run's length, never dropped.

A run's time to a milestone is the first evaluated step at or above it. A run
that got there and diverged later still got there. A run that never got there
is censored at its length (the budget, the same in both arms of an
experiment): it took longer than the budget, by an unknown amount; a diverged
run that never got there never will, which the same "longer than the budget"
states without claiming more.

- The median is the first step by which at least half the runs had got there
  (the inverted-CDF median on the evaluation grid); None when more than half
  never did, and then the budget is a bound on it.
- The speed-up is no-BN's median over BN's, with a percentile bootstrap over
  seed pairs (`scipy.stats.bootstrap`, fixed seed). A resample where both
  medians are "never" has no ratio at all (not 1): it counts against both ends,
  by running the same resamples once with it at -inf (for the low end) and once
  at +inf (for the high end).
- The paired test is the sign-flip test (server/paired.py) on the times
  truncated at the budget: valid under censoring because both arms have the
  same budget, so a truncated time is a fair summary of each run (its mean is
  the restricted mean time to the milestone, Wang, Lagakos & Gray 2010).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

# scipy: imported where used (statistics.py says why).

BOOTSTRAP_SEED = 0
# 9,999 resamples put the 2.5 % and 97.5 % quantiles 0.95 and 0.05 of the way
# between two order statistics, so an interval end next to an unbounded
# resample (one arm "never" got there) lands far outside any finite log ratio.
BOOTSTRAP_RESAMPLES = 9_999
# |log speed-up| can be at most log(100,000) for two steps in 1..100,000: a
# resample with one arm "never" is this far out, i.e. unbounded.
_UNBOUNDED_LOG = 1e6
_FINITE_LOG_LIMIT = math.log(100_000) + 1


class HasAccuracy(Protocol):
    step: int
    val_acc: float | None


def first_step_reaching(points: Iterable[HasAccuracy], accuracy: float) -> int | None:
    """The first evaluated step whose validation accuracy is at least `accuracy`."""
    return next((p.step for p in points if p.val_acc is not None and p.val_acc >= accuracy), None)


def censored_median(steps: Sequence[int | None]) -> int | None:
    """First step by which at least half the runs reached a milestone; None
    (not reached) when more than half never did. `None` in `steps` is "never"."""
    if not steps:
        return None
    x = np.array([math.inf if s is None else s for s in steps], dtype=np.float64)
    median = float(np.quantile(x, 0.5, method="inverted_cdf"))
    return None if math.isinf(median) else int(median)


class Ratio(BaseModel):
    """A ratio with its bootstrap interval; an end is None when it is unbounded.
    When one arm's median was never reached there is no estimate, only a bound."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    at_least: float | None = Field(None, description="No-BN's median was never reached")
    at_most: float | None = Field(None, description="BN's median was never reached")


def _log_speedups(bn: np.ndarray, no_bn: np.ndarray, undefined: float) -> np.ndarray:
    """log(no-BN median / BN median) along the last axis ("never" is inf): ±
    _UNBOUNDED_LOG when one median is "never", `undefined` when both are."""
    median_bn = np.quantile(bn, 0.5, axis=-1, method="inverted_cdf")
    median_no_bn = np.quantile(no_bn, 0.5, axis=-1, method="inverted_cdf")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.log(median_no_bn / median_bn)
    return np.nan_to_num(log_ratio, nan=undefined, posinf=_UNBOUNDED_LOG, neginf=-_UNBOUNDED_LOG)


def _never(steps: Sequence[int | None]) -> np.ndarray:
    return np.array([math.inf if s is None else s for s in steps], dtype=np.float64)


def speedup(
    bn_steps: Sequence[int | None],
    no_bn_steps: Sequence[int | None],
    budget: int | None = None,
    confidence: float = 0.95,
) -> Ratio:
    """No-BN's over BN's median steps to the milestone, seed pairs aligned, with
    a percentile bootstrap interval over the pairs. `budget`: the runs' length,
    which bounds a median that was never reached."""
    from scipy import stats

    bn, no_bn = _never(bn_steps), _never(no_bn_steps)
    median_bn, median_no_bn = censored_median(bn_steps), censored_median(no_bn_steps)
    none = Ratio(estimate=None, ci_low=None, ci_high=None)
    if (median_bn is None and median_no_bn is None) or not len(bn) or median_bn == 0:
        return none  # (a median of step 0, before any training, has no ratio)
    if median_no_bn is None:  # no-BN takes longer than the budget: at least budget / BN's
        return none.model_copy(update={"at_least": budget / median_bn if budget else None})
    if median_bn is None:
        return none.model_copy(update={"at_most": median_no_bn / budget if budget else None})
    if median_no_bn == 0:
        return none
    estimate = median_no_bn / median_bn
    if len(bn) < 2:
        return Ratio(estimate=estimate, ci_low=None, ci_high=None)

    def interval(undefined: float) -> tuple[float, float]:
        def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
            # index: resampled seed-pair positions, (..., pairs); a pair moves as one
            return _log_speedups(bn[index], no_bn[index], undefined)

        with warnings.catch_warnings():
            # a resample of identical pairs has no spread; the percentile method is fine
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap(
                (np.arange(len(bn)),),
                statistic,
                n_resamples=BOOTSTRAP_RESAMPLES,
                vectorized=True,
                confidence_level=confidence,
                method="percentile",
                rng=np.random.default_rng(BOOTSTRAP_SEED),
            )
        return result.confidence_interval

    low, _ = interval(-_UNBOUNDED_LOG)
    _, high = interval(_UNBOUNDED_LOG)

    def bound(log_ratio: float) -> float | None:
        return math.exp(log_ratio) if abs(log_ratio) < _FINITE_LOG_LIMIT else None

    return Ratio(estimate=estimate, ci_low=bound(low), ci_high=bound(high))


def truncated(steps: Sequence[int | None], budget: int) -> np.ndarray:
    """Times to the milestone with "never" at the budget (restricted to it)."""
    return np.array([budget if s is None else min(s, budget) for s in steps], dtype=np.float64)
