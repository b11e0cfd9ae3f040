"""What an experiment's runs say, with honest uncertainty: per arm and per cell.

Pure NumPy + scipy; it knows runs only as `RunResult`s, so it has no server
imports and is tested on hand-built data. Every test and interval is scipy's.

The rules, each one a promise the API makes:

- A *finished* run is one that ended with a result: completed, or diverged.
  A diverged run is a failure of its arm, never dropped: its test accuracy
  counts as chance (0.1) in the arm's mean and in the paired difference, and
  it never reaches an accuracy milestone.
- The paired test is the Wilcoxon signed-rank test on the BN - no-BN test
  accuracy differences of the seeds where both twins finished (`scipy.stats.
  wilcoxon`, Pratt's treatment of zero differences so no pair is dropped;
  exact or exhaustive-permutation p below 14 pairs). It assumes no normality,
  which matters here: one diverged run makes a difference of ~0.9 beside
  differences of ~0.001. The smallest two-sided p it can give with n pairs is
  2 / 2**n, so below `MIN_PAIRS` (6) pairs it can never reach 0.05 and the
  verdict is `not_enough_seeds`, never a guess.
- The difference's 95 % interval is the t interval of the mean paired
  difference (scipy's `ttest_1samp(...).confidence_interval`).
- Steps to a milestone is censored, not dropped: a run that never reached it
  counts as "never". The median is the first step by which at least half the
  runs had reached it (the inverted-CDF median, on the evaluation grid), and
  "not reached" (None) when more than half never did.
- The speed-up to 98 % is no-BN's median steps over BN's, with a percentile
  bootstrap interval over seed pairs (`scipy.stats.bootstrap`, fixed seed: the
  same runs always give the same numbers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from ...model.config import ArmName
from ..status import FINISHED, RunStatus
from .design import ALPHA, MIN_PAIRS

CONFIDENCE = 1 - ALPHA
CHANCE = 0.1  # a diverged run's test accuracy: ten classes
MILESTONES = (0.97, 0.98, 0.99)
SPEEDUP_AT = "0.98"
BOOTSTRAP_SEED = 0
# 9,999 resamples put the 2.5 % and 97.5 % quantiles 0.95 and 0.05 of the way
# between two order statistics, so an interval end next to an unbounded
# resample (one arm "never" got there) lands far outside any finite log ratio.
BOOTSTRAP_RESAMPLES = 9_999
# |log speed-up| can be at most log(100,000) for two steps in 1..100,000: a
# resample with one arm "never" at 98 % is this far out, i.e. unbounded.
_UNBOUNDED_LOG = 1e6
_FINITE_LOG_LIMIT = math.log(100_000) + 1


class HasAccuracy(Protocol):
    step: int
    val_acc: float | None


def first_step_reaching(points: Iterable[HasAccuracy], accuracy: float) -> int | None:
    """The first evaluated step whose validation accuracy is at least `accuracy`."""
    return next((p.step for p in points if p.val_acc is not None and p.val_acc >= accuracy), None)


# --- inputs -------------------------------------------------------------------------


class CurvePoint(BaseModel):
    """One evaluation of a run (None: not finite, a diverged run)."""

    model_config = ConfigDict(frozen=True)

    step: int
    val_acc: float | None
    val_loss: float | None


class RunResult(BaseModel):
    """One run of an experiment as far as the statistics care."""

    model_config = ConfigDict(frozen=True)

    factors: dict[str, object] = Field(description="The cell: varied field -> value")
    seed: int
    arm: ArmName
    status: RunStatus
    test_accuracy: float | None = None
    curve: list[CurvePoint] = []

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def diverged(self) -> bool:
        return self.status == RunStatus.DIVERGED

    def scored_accuracy(self) -> float | None:
        """Test accuracy as the arm counts it: chance for a diverged run."""
        if self.diverged:
            return CHANCE
        return self.test_accuracy if self.finished else None


# --- outputs (API schemas) ----------------------------------------------------------


class Interval(BaseModel):
    """A mean with its 95 % interval; the interval is None with fewer than two values."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None


class StepsTo(BaseModel):
    median: int | None = Field(description="Median step to the milestone; None: not reached")
    reached: int = Field(description="Finished runs that reached it")
    n: int = Field(description="Finished runs (the rest never reached it)")


class CurveSummary(BaseModel):
    step: int
    n: int = Field(description="Runs with a finite value at this step")
    val_acc: Interval
    val_loss: Interval


class Arm(BaseModel):
    n: int = Field(description="Runs in the arm, whatever their state")
    n_finished: int = Field(description="Runs that completed or diverged")
    n_diverged: int
    test_accuracy: Interval = Field(description="Over finished runs; diverged ones at chance")
    steps_to: dict[str, StepsTo]
    curve: list[CurveSummary]


class Ratio(BaseModel):
    """A ratio with its bootstrap interval; an end is None when it is unbounded."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None


class Verdict(StrEnum):
    BN_BETTER = "bn_better"
    BN_WORSE = "bn_worse"
    NO_DIFFERENCE = "no_difference"
    NOT_ENOUGH_SEEDS = "not_enough_seeds"


class Effect(BaseModel):
    n_pairs: int = Field(description="Seeds where both twins finished")
    difference: Interval = Field(description="BN - no-BN test accuracy, paired by seed")
    test: str = Field(description="The paired test behind p_value")
    p_value: float | None
    speedup: Ratio = Field(description="no-BN / BN median steps to 98 % validation accuracy")
    verdict: Verdict
    sentence: str


class Cell(BaseModel):
    factors: dict[str, object]
    arms: dict[ArmName, Arm]
    effect: Effect


# --- the figures ----------------------------------------------------------------------


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95 % t interval (scipy); the interval collapses when all values agree."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return Interval(mean=None, ci_low=None, ci_high=None)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean=mean, ci_low=None, ci_high=None)
    if np.all(x == x[0]):  # zero spread: the t interval is a point, scipy says nan
        return Interval(mean=mean, ci_low=mean, ci_high=mean)
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return Interval(mean=mean, ci_low=float(low), ci_high=float(high))


def censored_median(steps: Sequence[int | None]) -> int | None:
    """First step by which at least half the runs reached a milestone; None
    (not reached) when more than half never did. `None` in `steps` is "never"."""
    if not steps:
        return None
    x = np.array([math.inf if s is None else s for s in steps], dtype=np.float64)
    median = float(np.quantile(x, 0.5, method="inverted_cdf"))
    return None if math.isinf(median) else int(median)


def _steps_to(runs: list[RunResult], milestone: float) -> list[int | None]:
    return [None if r.diverged else first_step_reaching(r.curve, milestone) for r in runs]


def summarize_arm(runs: Sequence[RunResult]) -> Arm:
    finished = [r for r in runs if r.finished]
    steps_to = {}
    for milestone in MILESTONES:
        reached = _steps_to(finished, milestone)
        steps_to[f"{milestone:.2f}"] = StepsTo(
            median=censored_median(reached),
            reached=sum(s is not None for s in reached),
            n=len(finished),
        )
    return Arm(
        n=len(runs),
        n_finished=len(finished),
        n_diverged=sum(r.diverged for r in runs),
        test_accuracy=mean_interval([r.scored_accuracy() for r in finished]),
        steps_to=steps_to,
        curve=_curve(runs),
    )


def _curve(runs: Sequence[RunResult]) -> list[CurveSummary]:
    """Per evaluation step, over the runs with a finite value there: a diverged
    run's curve ends where it diverged (the arm's n_diverged says so)."""
    by_step: dict[int, tuple[list[float], list[float]]] = {}
    for run in runs:
        for p in run.curve:
            accs, losses = by_step.setdefault(p.step, ([], []))
            if p.val_acc is not None and math.isfinite(p.val_acc):
                accs.append(p.val_acc)
            if p.val_loss is not None and math.isfinite(p.val_loss):
                losses.append(p.val_loss)
    return [
        CurveSummary(
            step=step,
            n=len(accs),
            val_acc=mean_interval(accs),
            val_loss=mean_interval(losses),
        )
        for step, (accs, losses) in sorted(by_step.items())
    ]


def paired_test(differences: Sequence[float]) -> float | None:
    """Two-sided p of the Wilcoxon signed-rank test; None without pairs."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        return None
    if np.all(d == 0):  # no pair moved either way: nothing against the null
        return 1.0
    return float(stats.wilcoxon(d, zero_method="pratt").pvalue)


def _log_speedups(bn: np.ndarray, no_bn: np.ndarray) -> np.ndarray:
    """log(no-BN median / BN median steps) along the last axis ("never" is inf):
    ±_UNBOUNDED_LOG when one arm's median is "never", 0 (no speed-up seen)
    when both are."""
    median_bn = np.quantile(bn, 0.5, axis=-1, method="inverted_cdf")
    median_no_bn = np.quantile(no_bn, 0.5, axis=-1, method="inverted_cdf")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.log(median_no_bn / median_bn)
    return np.nan_to_num(log_ratio, nan=0.0, posinf=_UNBOUNDED_LOG, neginf=-_UNBOUNDED_LOG)


def speedup(bn_steps: Sequence[int | None], no_bn_steps: Sequence[int | None]) -> Ratio:
    """No-BN's over BN's median steps to the milestone, seed pairs aligned, with
    a percentile bootstrap interval over the pairs. None where unbounded or unknown."""
    bn = np.array([math.inf if s is None else s for s in bn_steps], dtype=np.float64)
    no_bn = np.array([math.inf if s is None else s for s in no_bn_steps], dtype=np.float64)
    median_bn, median_no_bn = censored_median(bn_steps), censored_median(no_bn_steps)
    if median_bn is None or median_no_bn is None or median_bn == 0:
        return Ratio(estimate=None, ci_low=None, ci_high=None)
    estimate = median_no_bn / median_bn
    if len(bn) < 2:
        return Ratio(estimate=estimate, ci_low=None, ci_high=None)

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        # index: resampled seed-pair positions, (..., pairs); a pair moves as one
        return _log_speedups(bn[index], no_bn[index])

    with warnings.catch_warnings():
        # a resample of identical pairs has no spread; the percentile method is fine with it
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.arange(len(bn)),),
            statistic,
            n_resamples=BOOTSTRAP_RESAMPLES,
            vectorized=True,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
    low, high = result.confidence_interval

    def bound(log_ratio: float) -> float | None:
        return math.exp(log_ratio) if abs(log_ratio) < _FINITE_LOG_LIMIT else None

    return Ratio(estimate=estimate, ci_low=bound(low), ci_high=bound(high))


def _percent(x: float) -> str:
    return f"{x * 100:+.2f} %"


def _sentence(
    verdict: Verdict, differences: Sequence[float], difference: Interval, p: float | None, test: str
) -> str:
    n = len(differences)
    pairs = f"n = {n} seed pair{'s' * (n != 1)}"
    if difference.mean is None:
        return "Not enough seeds to tell: no seed has finished with and without BN yet."
    interval = (
        f" (95 % CI {_percent(difference.ci_low)} to {_percent(difference.ci_high)})"
        if difference.ci_low is not None and difference.ci_high is not None
        else ""
    )
    figures = f"{_percent(difference.mean)}{interval}, p = {p:.3g}, {pairs}"
    match verdict:
        case Verdict.NOT_ENOUGH_SEEDS:
            return (
                f"Not enough seeds to tell: test accuracy {figures}; the {test} test needs "
                f"at least {MIN_PAIRS} pairs to ever reach p < {ALPHA}."
            )
        case Verdict.BN_BETTER | Verdict.BN_WORSE:
            better = verdict == Verdict.BN_BETTER
            ahead = sum(1 for d in differences if (d > 0 if better else d < 0))
            sentence = (
                f"BN {'better' if better else 'worse'} in {ahead} of {n} seed pairs: "
                f"test accuracy {figures}."
            )
            if difference.ci_low is not None and difference.ci_low <= 0 <= difference.ci_high:
                # The rank test weighs each pair's side; the mean's t interval also its
                # size. Pairs that agree in sign but not in size (a diverged twin beside
                # a small gain) leave the mean's interval across 0: say so, not hide it.
                sentence += (
                    " The size of the difference varies so much between seeds that the "
                    "mean's interval includes 0."
                )
            return sentence
    return f"No difference shown: test accuracy {figures}."


TEST_NAME = "Wilcoxon signed-rank"


def _direction(differences: Sequence[float]) -> float:
    """The side the differences lean to: the signed-rank test is about the
    median difference, so its sign decides (the mean's when the median is 0)."""
    return float(np.median(differences)) or float(np.mean(differences))


def compare_arms(bn: Sequence[RunResult], no_bn: Sequence[RunResult]) -> Effect:
    """The paired BN - no-BN effect over the seeds where both twins finished."""
    bn_by_seed = {r.seed: r for r in bn if r.finished}
    no_bn_by_seed = {r.seed: r for r in no_bn if r.finished}
    seeds = sorted(bn_by_seed.keys() & no_bn_by_seed.keys())
    differences = [
        bn_by_seed[s].scored_accuracy() - no_bn_by_seed[s].scored_accuracy() for s in seeds
    ]
    difference = mean_interval(differences)
    p = paired_test(differences)
    if len(seeds) < MIN_PAIRS:
        verdict = Verdict.NOT_ENOUGH_SEEDS
    elif p is not None and p < ALPHA and (direction := _direction(differences)):
        verdict = Verdict.BN_BETTER if direction > 0 else Verdict.BN_WORSE
    else:
        verdict = Verdict.NO_DIFFERENCE
    milestone = float(SPEEDUP_AT)
    return Effect(
        n_pairs=len(seeds),
        difference=difference,
        test=TEST_NAME,
        p_value=p,
        speedup=speedup(
            _steps_to([bn_by_seed[s] for s in seeds], milestone),
            _steps_to([no_bn_by_seed[s] for s in seeds], milestone),
        ),
        verdict=verdict,
        sentence=_sentence(verdict, differences, difference, p, TEST_NAME),
    )


def _cell_key(factors: dict[str, object]) -> tuple:
    return tuple(sorted(factors.items()))


def summarize_cells(runs: Iterable[RunResult]) -> list[Cell]:
    """One Cell per distinct set of factors, in the order the cells first appear."""
    cells: dict[tuple, list[RunResult]] = {}
    for run in runs:
        cells.setdefault(_cell_key(run.factors), []).append(run)
    result = []
    for members in cells.values():
        bn = [r for r in members if r.arm == "bn"]
        no_bn = [r for r in members if r.arm == "no_bn"]
        result.append(
            Cell(
                factors=members[0].factors,
                arms={"bn": summarize_arm(bn), "no_bn": summarize_arm(no_bn)},
                effect=compare_arms(bn, no_bn),
            )
        )
    return result
