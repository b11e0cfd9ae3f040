"""What an experiment's runs say, with honest uncertainty: per arm and per cell.

Pure NumPy + scipy; it knows runs only as `RunResult`s, so it has no server
imports and is tested on hand-built data. The rules, each one a promise the API
makes:

- A *finished* run is one that ended with a result: completed, or diverged.
  A diverged run is a failure of its arm, never dropped: its test accuracy
  counts as chance (1,000 of the 10,000 test images) in the arm's mean and in
  the paired difference.
- Test accuracies are counts of correct test images (`test_correct`, else the
  accuracy times 10,000, rounded), so real ties stay ties and a difference of
  zero is zero.
- Each cell's effect is BN - no-BN paired by seed, over the seeds where both
  twins finished: the mean difference, the sign-flip permutation test of it and
  the interval that test keeps (server/paired.py says why this test). A
  verdict's direction is the mean's sign, and its interval excludes 0 exactly
  when its p is below the level it is decided at.
- The cells of an experiment are one family: each p is corrected by Holm's
  method (server/multiplicity.py), and the interval beside a verdict is at the
  level Holm decided it at. Raw and adjusted p are both shown.
- `no_difference` is said only when the equivalence test (TOST, against a
  margin, ±0.5 accuracy points by default) shows the difference is within the
  margin, also corrected over the cells; otherwise the verdict is
  `inconclusive`, with the interval. `not_enough_seeds` when the pairs could not
  reach the threshold whatever they showed (too few pairs, too many zero
  differences, too many cells), with the number of seeds that could.
- A live experiment's cells are `provisional`.
- Curves ("bands") per arm: a diverged run stays in its arm's accuracy curve at
  chance from the step it diverged (its loss is not finite there and leaves the
  loss band, which counts it apart); runs without a result (cancelled, failed,
  still running) are never in a band: a live experiment's bands hold the runs
  finished so far (the cells say `provisional`). Every step says how many runs
  it holds; one run has no interval, and intervals are clipped to what the
  quantity can be (a mean within bounds is still covered by the clipped interval).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...model.config import ArmName
from ..status import FINISHED, RunStatus
from .milestones import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    Ratio,
    censored_median,
    first_step_reaching,
    speedup,
)
from .multiplicity import holm
from .paired import (
    Bounds,
    EffectSize,
    Proportion,
    SignFlip,
    effect_size,
    share_ahead,
    sign_flip,
)
from .significance import ALPHA, DEFAULT_MARGIN, MIN_PAIRS, smallest_nonzero_pairs

# scipy is imported inside the functions that use it: scipy.stats alone takes about
# 2 s to import, which every server start would pay before any experiment is analysed.

__all__ = [  # the names other modules import from here
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MILESTONES",
    "MIN_PAIRS",
    "SPEEDUP_AT",
    "ArmName",
    "Cell",
    "CurvePoint",
    "Interval",
    "Ratio",
    "RunResult",
    "censored_median",
    "first_step_reaching",
    "speedup",
    "summarize_cells",
]

CONFIDENCE = 1 - ALPHA
TEST_IMAGES = 10_000  # MNIST's test set: every accuracy is a count of these
CHANCE = 0.1  # a diverged run's test accuracy: ten classes
CHANCE_CORRECT = round(CHANCE * TEST_IMAGES)
MILESTONES = (0.97, 0.98, 0.99)
SPEEDUP_AT = "0.98"
TEST_NAME = "sign-flip permutation"


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
    test_correct: int | None = Field(
        None, ge=0, le=TEST_IMAGES, description="Correct test images; else from test_accuracy"
    )
    steps: int | None = Field(None, description="The run's length: where a milestone is censored")
    curve: list[CurvePoint] = []

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def diverged(self) -> bool:
        return self.status == RunStatus.DIVERGED

    def scored_correct(self) -> int | None:
        """Correct test images as the arm counts them: chance for a diverged run."""
        if self.diverged:
            return CHANCE_CORRECT
        if not self.finished:
            return None
        if self.test_correct is not None:
            return self.test_correct
        if self.test_accuracy is None or not math.isfinite(self.test_accuracy):
            return None
        return round(self.test_accuracy * TEST_IMAGES)

    def scored_accuracy(self) -> float | None:
        correct = self.scored_correct()
        return None if correct is None else correct / TEST_IMAGES

    def steps_to(self, accuracy: float) -> int | None:
        """First step at the milestone, diverged or not: reaching it before a blow-up counts."""
        return first_step_reaching(self.curve, accuracy)


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
    n: int = Field(description="Runs in the accuracy band at this step, diverged ones included")
    n_diverged: int = Field(0, description="Of them, diverged before this step: at chance")
    n_loss: int = Field(0, description="Runs in the loss band: a diverged run's loss is not finite")
    val_acc: Interval
    val_loss: Interval


class Arm(BaseModel):
    n: int = Field(description="Runs in the arm, whatever their state")
    n_finished: int = Field(description="Runs that completed or diverged")
    n_diverged: int
    test_accuracy: Interval = Field(description="Over finished runs; diverged ones at chance")
    steps_to: dict[str, StepsTo]
    curve: list[CurveSummary]


class Verdict(StrEnum):
    BN_BETTER = "bn_better"
    BN_WORSE = "bn_worse"
    NO_DIFFERENCE = "no_difference"  # shown equivalent within the margin, not "not detected"
    INCONCLUSIVE = "inconclusive"
    NOT_ENOUGH_SEEDS = "not_enough_seeds"


class Equivalence(BaseModel):
    """TOST: is the mean difference within ±margin?"""

    margin: float = Field(description="In accuracy (0.005 = 0.5 points)")
    p_value: float | None
    p_adjusted: float | None = Field(description="Holm over the experiment's cells")
    interval: Bounds = Field(description="At 1 - 2 alpha: inside ±margin exactly when shown")
    equivalent: bool


class Effect(BaseModel):
    n_pairs: int = Field(description="Seeds where both twins finished")
    n_zero: int = Field(0, description="Of them, pairs whose twins scored the same")
    difference: Interval = Field(
        description="BN - no-BN test accuracy, paired by seed: the mean, and the interval "
        "at `confidence` (the level the verdict is decided at)"
    )
    confidence: float = Field(CONFIDENCE, description="Level of `difference`'s interval")
    raw_interval: Bounds = Field(description="The test's own 95 % interval, uncorrected")
    test: str = Field(description="The paired test behind p_value")
    p_value: float | None
    p_adjusted: float | None = Field(None, description="Holm-adjusted over the cells")
    cells: int = Field(1, description="Cells in the family Holm corrects over")
    min_p: float | None = Field(None, description="The smallest p these pairs could give")
    seeds_needed: int | None = Field(
        None, description="With not_enough_seeds: the fewest seed pairs that could tell"
    )
    equivalence: Equivalence
    effect_size: EffectSize = Field(description="d_z: mean over SD of the differences")
    p_bn_ahead: Proportion = Field(description="P(BN beats no-BN on a seed), ties half")
    speedup: Ratio = Field(description="no-BN / BN median steps to 98 % validation accuracy")
    provisional: bool = Field(False, description="The experiment is still running")
    verdict: Verdict
    sentence: str


class Cell(BaseModel):
    factors: dict[str, object]
    provisional: bool = False
    arms: dict[ArmName, Arm]
    effect: Effect


# --- arms ----------------------------------------------------------------------------


def mean_interval(
    values: Sequence[float], low: float = -math.inf, high: float = math.inf
) -> Interval:
    """Mean and 95 % t interval (scipy), clipped to [low, high]: the quantity's
    range, so the clipped interval covers its mean as often as the whole one."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return Interval(mean=None, ci_low=None, ci_high=None)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean=mean, ci_low=None, ci_high=None)
    if np.all(x == x[0]):  # zero spread: the t interval is a point, scipy says nan
        return Interval(mean=mean, ci_low=mean, ci_high=mean)
    ci_low, ci_high = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return Interval(mean=mean, ci_low=float(max(ci_low, low)), ci_high=float(min(ci_high, high)))


def summarize_arm(runs: Sequence[RunResult]) -> Arm:
    finished = [r for r in runs if r.finished]
    steps_to = {}
    for milestone in MILESTONES:
        reached = [r.steps_to(milestone) for r in finished]
        steps_to[f"{milestone:.2f}"] = StepsTo(
            median=censored_median(reached),
            reached=sum(s is not None for s in reached),
            n=len(finished),
        )
    return Arm(
        n=len(runs),
        n_finished=len(finished),
        n_diverged=sum(r.diverged for r in runs),
        test_accuracy=mean_interval([r.scored_accuracy() for r in finished], 0.0, 1.0),
        steps_to=steps_to,
        curve=curve_bands(finished),
    )


def _diverged_from(run: RunResult) -> int | None:
    """The step from which a diverged run counts at chance: its first evaluation
    without a finite accuracy, else just after its last one."""
    if not run.diverged:
        return None
    for p in run.curve:
        if p.val_acc is None or not math.isfinite(p.val_acc):
            return p.step
    return run.curve[-1].step + 1 if run.curve else 0


def curve_bands(runs: Sequence[RunResult]) -> list[CurveSummary]:
    """Per evaluation step (of any of the runs): mean and 95 % band of validation
    accuracy and loss, a diverged run at chance accuracy from where it diverged."""
    steps = sorted({p.step for r in runs for p in r.curve})
    accs: dict[int, list[float]] = {s: [] for s in steps}
    losses: dict[int, list[float]] = {s: [] for s in steps}
    diverged: dict[int, int] = dict.fromkeys(steps, 0)
    for run in runs:
        since = _diverged_from(run)
        points = {p.step: p for p in run.curve}
        for step in steps:
            if since is not None and step >= since:
                accs[step].append(CHANCE)
                diverged[step] += 1
                continue
            p = points.get(step)
            if p is None:
                continue
            if p.val_acc is not None and math.isfinite(p.val_acc):
                accs[step].append(p.val_acc)
            if p.val_loss is not None and math.isfinite(p.val_loss):
                losses[step].append(p.val_loss)
    return [
        CurveSummary(
            step=step,
            n=len(accs[step]),
            n_diverged=diverged[step],
            n_loss=len(losses[step]),
            val_acc=mean_interval(accs[step], 0.0, 1.0),
            val_loss=mean_interval(losses[step], 0.0),
        )
        for step in steps
    ]


# --- the paired effect -----------------------------------------------------------------


class Pairs(BaseModel):
    """Seeds where both twins finished, and BN - no-BN in correct test images."""

    seeds: list[int]
    differences: list[int]
    bn: list[RunResult]
    no_bn: list[RunResult]


def pair_by_seed(bn: Sequence[RunResult], no_bn: Sequence[RunResult]) -> Pairs:
    bn_by_seed = {r.seed: r for r in bn if r.scored_correct() is not None}
    no_bn_by_seed = {r.seed: r for r in no_bn if r.scored_correct() is not None}
    seeds = sorted(bn_by_seed.keys() & no_bn_by_seed.keys())
    return Pairs(
        seeds=seeds,
        differences=[
            bn_by_seed[s].scored_correct() - no_bn_by_seed[s].scored_correct() for s in seeds
        ],
        bn=[bn_by_seed[s] for s in seeds],
        no_bn=[no_bn_by_seed[s] for s in seeds],
    )


def seeds_needed(n_zero: int, cells: int, alpha: float = ALPHA) -> int:
    """The fewest seed pairs (keeping the zero differences seen) whose smallest p
    can pass Holm's first threshold, alpha / cells."""
    return n_zero + smallest_nonzero_pairs(alpha / cells)


@dataclass(frozen=True)
class _Tested:
    """One cell's numbers before the family is corrected."""

    pairs: Pairs
    flip: SignFlip
    p: float
    tost_p: float
    min_p: float


def _test(pairs: Pairs, margin_correct: int) -> _Tested:
    flip = sign_flip(pairs.differences)
    return _Tested(pairs, flip, flip.p(), flip.tost(margin_correct), flip.min_p())


def _points(x: float | None) -> str:
    return "?" if x is None else f"{x * 100:+.2f}"


def _bounds_text(b: Bounds, per: float = 1.0) -> str:
    if b.low is None and b.high is None:
        return f"no bounded {b.level * 100:.4g} % interval with so few pairs"
    low = "-inf" if b.low is None else _points(b.low / per)
    high = "+inf" if b.high is None else _points(b.high / per)
    return f"{b.level * 100:.4g} % CI {low} to {high} points"


def _p_text(p: float, adjusted: float, cells: int) -> str:
    if cells == 1:
        return f"p = {p:.3g}"
    return f"p = {p:.3g}, {adjusted:.3g} after Holm's correction over {cells} cells"


def _sentence(
    verdict: Verdict,
    tested: _Tested,
    estimate: float,
    interval: Bounds,
    raw: Bounds,
    p_adjusted: float,
    cells: int,
    equivalence: Equivalence,
    needed: int | None,
) -> str:
    pairs = tested.pairs
    n = len(pairs.seeds)
    if n == 0:
        return "Not enough seeds to tell: no seed has finished with and without BN yet."
    zeros = int(np.sum(np.asarray(pairs.differences) == 0))
    figures = (
        f"test accuracy {_points(estimate)} points (mean of n = {n} seed pair"
        f"{'s' * (n != 1)}; {_bounds_text(interval, TEST_IMAGES)}), "
        f"{_p_text(tested.p, p_adjusted, cells)}"
    )
    margin = f"±{equivalence.margin * 100:.2f} points"
    match verdict:
        case Verdict.BN_BETTER | Verdict.BN_WORSE:
            better = verdict == Verdict.BN_BETTER
            ahead = sum(1 for d in pairs.differences if (d > 0 if better else d < 0))
            side = "ahead" if better else "behind"
            text = (
                f"BN {'better' if better else 'worse'}: {figures}. "
                f"BN {side} in {ahead} of {n} seed pairs."
            )
        case Verdict.NO_DIFFERENCE:
            text = (
                f"No difference beyond {margin}: {figures}; the equivalence test puts the "
                f"difference within the margin ({_bounds_text(equivalence.interval)}, "
                f"p = {equivalence.p_value:.3g})."
            )
        case Verdict.NOT_ENOUGH_SEEDS:
            why = (f"{zeros} of them with no difference, " if zeros else "") + (
                f"over {cells} cells, " if cells > 1 else ""
            )
            text = (
                f"Not enough seeds to tell: {figures}. With {n} seed pair{'s' * (n != 1)} "
                f"({why.rstrip(', ')}) the {TEST_NAME} test can never reach its threshold; "
                f"it needs at least {needed} seed pairs to be able to tell."
            ).replace(" ()", "")
        case _:
            text = (
                f"Inconclusive: {figures}. Neither a difference nor equivalence within "
                f"{margin} is shown."
            )
            if raw.excludes(0.0):
                text += (
                    f" The uncorrected {_bounds_text(raw, TEST_IMAGES)} excludes 0, "
                    "but the test corrected for the experiment's cells does not."
                )
    diverged = (sum(r.diverged for r in pairs.bn), sum(r.diverged for r in pairs.no_bn))
    if any(diverged):
        text += f" Diverged (counted at chance): BN {diverged[0]}, no-BN {diverged[1]} of {n}."
    return text


def _effects(tested: list[_Tested], margin: float, alpha: float, provisional: bool) -> list[Effect]:
    """Every cell's effect, corrected as one family."""
    cells = len(tested)
    if not cells:
        return []
    difference = holm([t.p for t in tested], alpha)
    equivalent = holm([t.tost_p for t in tested], alpha)
    reachable = holm([t.min_p for t in tested], alpha)  # the best the pairs could do
    effects = []
    for i, t in enumerate(tested):
        pairs, flip = t.pairs, t.flip
        n = len(pairs.seeds)
        d = np.asarray(pairs.differences, dtype=np.float64)
        per = TEST_IMAGES
        level_alpha = difference.alphas[i]
        interval = flip.bounds(level_alpha)
        raw = flip.bounds(alpha)
        eq_interval = flip.bounds(2 * equivalent.alphas[i])
        eq = Equivalence(
            margin=margin,
            p_value=t.tost_p if n else None,
            p_adjusted=equivalent.adjusted[i] if n else None,
            interval=_scaled(eq_interval, per),
            equivalent=bool(n and equivalent.rejected[i]),
        )
        estimate = float(d.mean()) / per if n else None
        needed = None
        if n and difference.rejected[i]:
            verdict = Verdict.BN_BETTER if estimate > 0 else Verdict.BN_WORSE
        elif eq.equivalent:
            verdict = Verdict.NO_DIFFERENCE
        elif not n or not reachable.rejected[i]:
            verdict = Verdict.NOT_ENOUGH_SEEDS
            needed = seeds_needed(n - int(np.count_nonzero(d)), cells, alpha)
        else:
            verdict = Verdict.INCONCLUSIVE
        sentence = _sentence(
            verdict,
            t,
            estimate or 0.0,
            interval,
            raw,
            difference.adjusted[i],
            cells,
            eq,
            needed,
        )
        if provisional:
            sentence = f"Provisional, runs still going: {sentence}"
        effects.append(
            Effect(
                n_pairs=n,
                n_zero=n - int(np.count_nonzero(d)),
                difference=Interval(
                    mean=estimate,
                    ci_low=None if interval.low is None or not n else interval.low / per,
                    ci_high=None if interval.high is None or not n else interval.high / per,
                ),
                confidence=1 - level_alpha,
                raw_interval=_scaled(raw, per),
                test=TEST_NAME,
                p_value=t.p if n else None,
                p_adjusted=difference.adjusted[i] if n else None,
                cells=cells,
                min_p=t.min_p if n else None,
                seeds_needed=needed,
                equivalence=eq,
                effect_size=effect_size(d, alpha),
                p_bn_ahead=share_ahead(d, alpha),
                speedup=_speedup(pairs),
                provisional=provisional,
                verdict=verdict,
                sentence=sentence,
            )
        )
    return effects


def _scaled(b: Bounds, per: float) -> Bounds:
    return Bounds(
        level=b.level,
        low=None if b.low is None else b.low / per,
        high=None if b.high is None else b.high / per,
    )


def run_length(runs: Iterable[RunResult]) -> int | None:
    """The runs' length: given, else the last step any of them evaluated."""
    lengths = [r.steps for r in runs if r.steps is not None]
    if lengths:
        return max(lengths)
    return max((p.step for r in runs for p in r.curve), default=None)


def _speedup(pairs: Pairs) -> Ratio:
    milestone = float(SPEEDUP_AT)
    return speedup(
        [r.steps_to(milestone) for r in pairs.bn],
        [r.steps_to(milestone) for r in pairs.no_bn],
        run_length([*pairs.bn, *pairs.no_bn]),
        CONFIDENCE,
    )


def _margin_correct(margin: float) -> int:
    return round(margin * TEST_IMAGES)


def compare_arms(
    bn: Sequence[RunResult],
    no_bn: Sequence[RunResult],
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
) -> Effect:
    """The paired BN - no-BN effect of one cell on its own (a family of one)."""
    [effect] = _effects(
        [_test(pair_by_seed(bn, no_bn), _margin_correct(margin))], margin, alpha, False
    )
    return effect


def _cell_key(factors: dict[str, object]) -> tuple:
    return tuple(sorted(factors.items()))


def group_cells(runs: Iterable[RunResult]) -> list[list[RunResult]]:
    """The runs of each distinct set of factors, in the order cells first appear."""
    cells: dict[tuple, list[RunResult]] = {}
    for run in runs:
        cells.setdefault(_cell_key(run.factors), []).append(run)
    return list(cells.values())


def summarize_cells(
    runs: Iterable[RunResult],
    *,
    live: bool = False,
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
) -> list[Cell]:
    """One Cell per distinct set of factors, in the order the cells first appear,
    their effects corrected as one family. `live`: the experiment is still running."""
    groups = group_cells(runs)
    arms = [
        ([r for r in members if r.arm == "bn"], [r for r in members if r.arm == "no_bn"])
        for members in groups
    ]
    tested = [_test(pair_by_seed(bn, no_bn), _margin_correct(margin)) for bn, no_bn in arms]
    effects = _effects(tested, margin, alpha, live)
    return [
        Cell(
            factors=members[0].factors,
            provisional=live,
            arms={"bn": summarize_arm(bn), "no_bn": summarize_arm(no_bn)},
            effect=effect,
        )
        for members, (bn, no_bn), effect in zip(groups, arms, effects, strict=True)
    ]
