"""The claim an experiment tests: a statement and the contrasts that test it.

"Significant in one cell, not in another" is not evidence of a difference
between cells (Gelman & Stern 2006): each contrast is one paired test on one
number per seed, built from the runs of that seed:

- `effect`: BN - no-BN test accuracy in one cell.
- `interaction`: the effect at `level` minus the effect at `reference` of one
  factor (the difference in differences, per seed).
- `sensitivity`: how much an arm's test accuracy varies across a factor's
  levels: per seed, the SD across the levels with BN minus the SD without.
- `cross_cell`: one arm in one cell minus the other arm in another.
- `milestone`: BN - no-BN steps to a validation accuracy, truncated at the
  run's length (same budget in both arms, so the paired test is valid under
  the censoring; server/milestones.py), with the speed-up (ratio of medians)
  and the share of runs that got there in each arm.
- `divergence`: the share of the seeds where exactly one twin diverged in which
  it was the BN one (0.5: no difference), with the exact binomial test on those
  discordant pairs (`scipy.stats.binomtest`; McNemar's exact test) and its
  Clopper-Pearson interval.

Every accuracy contrast uses the sign-flip test of server/paired.py, whose
interval excludes the null exactly when p < alpha; the binomial test is made
equal-tailed (twice the smaller one-sided p) for the same reason. A claim's
contrasts are one family, Holm-corrected. The claim's verdict: `supported`
(every contrast, or any with `holds_if: any`, shown in the expected direction),
`contradicted` (shown in the other), `not_enough_seeds` (the seeds could not
show it whatever they gave), else `inconclusive`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field

from .contrasts import (
    Cell,
    Claim,
    Contrast,
    CrossCellContrast,
    DivergenceContrast,
    EffectContrast,
    InteractionContrast,
    MilestoneContrast,
    Scalar,
    SensitivityContrast,
)
from .milestones import Ratio, speedup, truncated
from .multiplicity import holm
from .paired import Bounds, Proportion, sign_flip
from .significance import ALPHA, smallest_nonzero_pairs
from .statistics import TEST_IMAGES, ArmName, RunResult, run_length

# scipy: imported where used (statistics.py says why).

# --- outcomes ---------------------------------------------------------------------


class ClaimVerdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    NOT_ENOUGH_SEEDS = "not_enough_seeds"


class MilestoneDetail(BaseModel):
    budget: int | None = Field(description="The runs' length: where a time is censored")
    speedup: Ratio = Field(description="No-BN / BN median steps")
    reached: dict[ArmName, Proportion] = Field(description="Share of runs that got there")


class DivergenceDetail(BaseModel):
    diverged: dict[ArmName, int]
    bn_only: int = Field(description="Seeds where only the BN twin diverged")
    no_bn_only: int = Field(description="Seeds where only the no-BN twin diverged")


class ContrastResult(BaseModel):
    contrast: Contrast
    unit: str = Field(description="What the estimate is in")
    null: float = Field(description="The estimate under 'no difference'")
    n_pairs: int = Field(description="Seeds the contrast could use")
    estimate: float | None
    interval: Bounds = Field(description="At the level the verdict is decided at (Holm)")
    raw_interval: Bounds
    p_value: float | None
    p_adjusted: float | None
    min_p: float | None
    verdict: ClaimVerdict
    sentence: str
    milestone: MilestoneDetail | None = None
    divergence: DivergenceDetail | None = None


class ClaimResult(BaseModel):
    statement: str
    verdict: ClaimVerdict
    contrasts: list[ContrastResult]
    provisional: bool = False
    sentence: str


# --- per-seed values ------------------------------------------------------------------


def _finished(runs: Sequence[RunResult]) -> dict[tuple, RunResult]:
    """(cell key, arm, seed) -> run with a result."""
    return {(_key(r.factors), r.arm, r.seed): r for r in runs if r.scored_correct() is not None}


def _key(cell: Cell) -> tuple:
    return tuple(sorted(cell.items()))


def _per_seed(
    table: dict[tuple, RunResult],
    places: list[tuple[Cell, ArmName]],
    value: Callable[[list[RunResult]], float],
) -> tuple[list[int], list[float]]:
    """The seeds where every place has a finished run, and `value` of those runs."""
    seeds = sorted(
        set.intersection(
            *({s for (k, a, s) in table if k == _key(c) and a == arm} for c, arm in places)
        )
    )
    return seeds, [value([table[(_key(c), arm, s)] for c, arm in places]) for s in seeds]


def _levels(contrast: InteractionContrast | SensitivityContrast, runs) -> list[Scalar]:
    seen: list[Scalar] = []
    for r in runs:
        level = r.factors.get(contrast.factor)
        if level not in seen and all(r.factors.get(k) == v for k, v in contrast.at.items()):
            seen.append(level)
    return seen


def _values(contrast: Contrast, runs: Sequence[RunResult]) -> tuple[list[int], list[float]]:
    table = _finished(runs)
    correct = RunResult.scored_correct
    match contrast:
        case EffectContrast():
            places = [(contrast.cell, "bn"), (contrast.cell, "no_bn")]
            return _per_seed(table, places, lambda r: correct(r[0]) - correct(r[1]))
        case InteractionContrast():
            level = {**contrast.at, contrast.factor: contrast.level}
            reference = {**contrast.at, contrast.factor: contrast.reference}
            places = [(level, "bn"), (level, "no_bn"), (reference, "bn"), (reference, "no_bn")]
            return _per_seed(
                table,
                places,
                lambda r: (correct(r[0]) - correct(r[1])) - (correct(r[2]) - correct(r[3])),
            )
        case SensitivityContrast():
            cells = [{**contrast.at, contrast.factor: lv} for lv in _levels(contrast, runs)]
            places = [(c, "bn") for c in cells] + [(c, "no_bn") for c in cells]
            half = len(cells)

            def spread(r: list[RunResult]) -> float:
                bn = [correct(x) for x in r[:half]]
                no_bn = [correct(x) for x in r[half:]]
                return float(np.std(bn, ddof=1) - np.std(no_bn, ddof=1))

            return _per_seed(table, places, spread)
        case CrossCellContrast():
            places = [
                (contrast.minuend.cell, contrast.minuend.arm),
                (contrast.subtrahend.cell, contrast.subtrahend.arm),
            ]
            return _per_seed(table, places, lambda r: correct(r[0]) - correct(r[1]))
        case MilestoneContrast():
            places = [(contrast.cell, "bn"), (contrast.cell, "no_bn")]
            budget = run_length(runs) or 0

            def sooner(r: list[RunResult]) -> float:
                bn, no_bn = truncated([x.steps_to(contrast.accuracy) for x in r], budget)
                return float(bn - no_bn)

            return _per_seed(table, places, sooner)
    raise TypeError(contrast)


_UNITS = {
    "effect": "accuracy",
    "interaction": "accuracy",
    "sensitivity": "accuracy SD",
    "cross_cell": "accuracy",
    "milestone": "steps",
    "divergence": "share of discordant pairs",
}


@dataclass(frozen=True)
class _Tested:
    n: int
    estimate: float | None
    p: float
    min_p: float
    bounds: Callable[[float], Bounds]
    null: float
    milestone: MilestoneDetail | None = None
    divergence: DivergenceDetail | None = None


def _test(contrast: Contrast, runs: Sequence[RunResult]) -> _Tested:
    if isinstance(contrast, DivergenceContrast):
        return _divergence(contrast, runs)
    seeds, values = _values(contrast, runs)
    flip = sign_flip(values)
    scale = 1 if isinstance(contrast, MilestoneContrast) else TEST_IMAGES

    def bounds(alpha: float) -> Bounds:
        b = flip.bounds(alpha)
        return Bounds(
            level=b.level,
            low=None if b.low is None else b.low / scale,
            high=None if b.high is None else b.high / scale,
        )

    return _Tested(
        n=len(seeds),
        estimate=float(np.mean(values)) / scale if values else None,
        p=flip.p(),
        min_p=flip.min_p(),
        bounds=bounds,
        null=0.0,
        milestone=_milestone(contrast, runs) if isinstance(contrast, MilestoneContrast) else None,
    )


def _milestone(contrast: MilestoneContrast, runs: Sequence[RunResult]) -> MilestoneDetail:
    from scipy import stats

    table = _finished(runs)
    places = [(contrast.cell, "bn"), (contrast.cell, "no_bn")]
    seeds, _ = _per_seed(table, places, lambda r: 0.0)
    cell = _key(contrast.cell)
    steps = {
        arm: [table[(cell, arm, s)].steps_to(contrast.accuracy) for s in seeds]
        for arm in ("bn", "no_bn")
    }
    budget = run_length(runs)
    reached = {}
    for arm, arm_steps in steps.items():
        k, n = sum(s is not None for s in arm_steps), len(arm_steps)
        ci = stats.binomtest(k, n).proportion_ci(1 - ALPHA) if n else None
        reached[arm] = Proportion(
            estimate=k / n if n else None,
            low=ci.low if ci else None,
            high=ci.high if ci else None,
        )
    return MilestoneDetail(
        budget=budget,
        speedup=speedup(steps["bn"], steps["no_bn"], budget),
        reached=reached,
    )


def _divergence(contrast: DivergenceContrast, runs: Sequence[RunResult]) -> _Tested:
    from scipy import stats

    table = _finished(runs)
    places = [(contrast.cell, "bn"), (contrast.cell, "no_bn")]
    seeds, pairs = _per_seed(table, places, lambda r: (r[0].diverged, r[1].diverged))
    bn_only = sum(1 for b, n in pairs if b and not n)
    no_bn_only = sum(1 for b, n in pairs if n and not b)
    discordant = bn_only + no_bn_only
    if discordant:
        less = stats.binomtest(bn_only, discordant, 0.5, alternative="less").pvalue
        greater = stats.binomtest(bn_only, discordant, 0.5, alternative="greater").pvalue
        p = min(1.0, 2 * min(less, greater))
    else:
        p = 1.0

    def bounds(alpha: float) -> Bounds:
        if not discordant:
            return Bounds(level=1 - alpha, low=None, high=None)
        # Clopper-Pearson: the inversion of the two one-sided tests, each at alpha / 2
        ci = stats.binomtest(bn_only, discordant).proportion_ci(1 - alpha, method="exact")
        return Bounds(level=1 - alpha, low=float(ci.low), high=float(ci.high))

    return _Tested(
        n=len(seeds),
        estimate=bn_only / discordant if discordant else None,
        p=p,
        min_p=min(1.0, 2 * 0.5**discordant),
        bounds=bounds,
        null=0.5,
        divergence=DivergenceDetail(
            diverged={
                "bn": sum(b for b, _ in pairs),
                "no_bn": sum(n for _, n in pairs),
            },
            bn_only=bn_only,
            no_bn_only=no_bn_only,
        ),
    )


# --- the verdict ----------------------------------------------------------------------


def _describe(contrast: Contrast) -> str:
    def cell(c: Cell) -> str:
        return ", ".join(f"{k}={v}" for k, v in c.items()) or "the base"

    match contrast:
        case EffectContrast():
            return f"BN - no-BN test accuracy at {cell(contrast.cell)}"
        case InteractionContrast():
            at = f" ({cell(contrast.at)})" if contrast.at else ""
            return (
                f"BN's gain at {contrast.factor}={contrast.level} minus at "
                f"{contrast.factor}={contrast.reference}{at}"
            )
        case SensitivityContrast():
            return f"SD of test accuracy across {contrast.factor}, BN minus no-BN"
        case CrossCellContrast():
            return (
                f"{contrast.minuend.arm} at {cell(contrast.minuend.cell)} minus "
                f"{contrast.subtrahend.arm} at {cell(contrast.subtrahend.cell)}"
            )
        case MilestoneContrast():
            return (
                f"BN - no-BN steps to {contrast.accuracy:.0%} validation accuracy at "
                f"{cell(contrast.cell)}"
            )
        case DivergenceContrast():
            return f"share of one-sided divergences that were BN's at {cell(contrast.cell)}"
    raise TypeError(contrast)


def _number(x: float | None, unit: str) -> str:
    if x is None:
        return "?"
    if unit.startswith("accuracy"):
        return f"{x * 100:+.2f} points"
    if unit == "steps":
        return f"{x:+.0f} steps"
    return f"{x:.2f}"


def evaluate_claim(
    claim: Claim, runs: Sequence[RunResult], *, alpha: float = ALPHA, live: bool = False
) -> ClaimResult:
    """The claim's verdict from the experiment's runs, its contrasts one family."""
    tested = [_test(c, runs) for c in claim.contrasts]
    family = holm([t.p for t in tested], alpha)
    reachable = holm([t.min_p for t in tested], alpha)
    results = []
    for i, (contrast, t) in enumerate(zip(claim.contrasts, tested, strict=True)):
        unit = _UNITS[contrast.kind]
        interval = t.bounds(family.alphas[i])
        # No run of either arm reached the milestone: every pair is tied at the budget,
        # which measures nothing (not "+0 steps"), and more seeds would tie again.
        unreached = (
            t.milestone is not None
            and t.n > 0
            and not any(share.estimate for share in t.milestone.reached.values())
        )
        raw_interval = t.bounds(alpha)
        if unreached:  # ties at the budget bound nothing: no "+0 to +0 steps" either
            interval = Bounds(level=interval.level, low=None, high=None)
            raw_interval = Bounds(level=raw_interval.level, low=None, high=None)
            verdict = ClaimVerdict.INCONCLUSIVE
        elif t.n and family.rejected[i] and t.estimate is not None:
            above = t.estimate > t.null
            shown = above == (contrast.expect == "greater")
            verdict = ClaimVerdict.SUPPORTED if shown else ClaimVerdict.CONTRADICTED
        elif not t.n or not reachable.rejected[i]:
            verdict = ClaimVerdict.NOT_ENOUGH_SEEDS
        else:
            verdict = ClaimVerdict.INCONCLUSIVE
        if interval.low is None and interval.high is None:
            shown = f"no bounded {interval.level * 100:.4g} % interval"
        else:
            low = "-inf" if interval.low is None else _number(interval.low, unit)
            high = "+inf" if interval.high is None else _number(interval.high, unit)
            shown = f"{interval.level * 100:.4g} % CI {low} to {high}"
        p_text = f"p = {t.p:.3g}" + (
            f" ({family.adjusted[i]:.3g} after Holm over {len(tested)})" if len(tested) > 1 else ""
        )
        sentence = (
            f"{_describe(contrast)}: {_number(t.estimate, unit)} ({shown}), {p_text}, "
            f"n = {t.n} seeds."
        )
        if not t.n:
            sentence = f"{_describe(contrast)}: no seed has both twins finished yet."
        elif unreached:
            sentence = (
                f"{_describe(contrast)}: no run of either arm reached it in "
                f"{t.milestone.budget} steps, n = {t.n} seeds; longer runs can tell, more "
                "seeds cannot."
            )
        elif verdict == ClaimVerdict.NOT_ENOUGH_SEEDS:
            needed = smallest_nonzero_pairs(alpha / len(tested))
            which = (
                "where exactly one twin diverged"
                if isinstance(contrast, DivergenceContrast)
                else "whose values differ from the null"
            )
            sentence += (
                f" These seeds can never reach the threshold; it takes at least {needed} "
                f"seeds {which}."
            )
        results.append(
            ContrastResult(
                contrast=contrast,
                unit=unit,
                null=t.null,
                n_pairs=t.n,
                estimate=None if unreached else t.estimate,
                interval=interval,
                raw_interval=raw_interval,
                p_value=t.p if t.n else None,
                p_adjusted=family.adjusted[i] if t.n else None,
                min_p=t.min_p if t.n else None,
                verdict=verdict,
                sentence=sentence,
                milestone=t.milestone,
                divergence=t.divergence,
            )
        )
    verdict = _combine([r.verdict for r in results], claim.holds_if)
    words = {
        ClaimVerdict.SUPPORTED: "Supported",
        ClaimVerdict.CONTRADICTED: "Contradicted",
        ClaimVerdict.INCONCLUSIVE: "Inconclusive",
        ClaimVerdict.NOT_ENOUGH_SEEDS: "Not enough seeds to tell",
    }
    statement = claim.statement if claim.statement[-1] in ".!?" else f"{claim.statement}."
    sentence = f"{words[verdict]}: {statement} " + " ".join(r.sentence for r in results)
    if live:
        sentence = f"Provisional, runs still going. {sentence}"
    return ClaimResult(
        statement=claim.statement,
        verdict=verdict,
        contrasts=results,
        provisional=live,
        sentence=sentence,
    )


def _combine(verdicts: list[ClaimVerdict], holds_if: str) -> ClaimVerdict:
    V = ClaimVerdict
    if holds_if == "any":
        if V.SUPPORTED in verdicts:
            return V.SUPPORTED
        if all(v == V.CONTRADICTED for v in verdicts):
            return V.CONTRADICTED
        if all(v == V.NOT_ENOUGH_SEEDS for v in verdicts):
            return V.NOT_ENOUGH_SEEDS
        return V.INCONCLUSIVE
    if V.CONTRADICTED in verdicts:
        return V.CONTRADICTED
    if all(v == V.SUPPORTED for v in verdicts):
        return V.SUPPORTED
    if V.NOT_ENOUGH_SEEDS in verdicts:
        return V.NOT_ENOUGH_SEEDS
    return V.INCONCLUSIVE
