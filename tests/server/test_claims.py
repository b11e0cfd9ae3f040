"""Claims and their contrasts against hand computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError
from scipy import stats

from bnlab.server.experiments.claims import Claim, ClaimVerdict, Contrast, evaluate_claim
from bnlab.server.experiments.paired import SignFlip
from bnlab.server.experiments.statistics import (
    TEST_IMAGES,
    CurvePoint,
    RunResult,
    Verdict,
    summarize_cells,
)

VARY = {"activation": ["relu", "sigmoid", "tanh"]}


def scipy_p(values):
    return stats.permutation_test(
        (np.asarray(values, dtype=float),),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    ).pvalue


def runs_from(correct: dict[tuple[str, str], list[int]], status=None, curves=None):
    """Runs from {(activation, arm): correct images per seed}."""
    out = []
    for (activation, arm), counts in correct.items():
        for seed, count in enumerate(counts):
            key = (activation, arm, seed)
            out.append(
                RunResult(
                    factors={"activation": activation},
                    seed=seed,
                    arm=arm,
                    status=(status or {}).get(key, "completed"),
                    test_correct=count,
                    steps=1000,
                    curve=(curves or {}).get(key, []),
                )
            )
    return out


def claim(*contrasts, **kwargs):
    return Claim.model_validate({"statement": "a claim", "contrasts": list(contrasts), **kwargs})


# --- the model ------------------------------------------------------------------------


def test_a_claim_round_trips_through_json():
    c = claim(
        {"kind": "interaction", "factor": "activation", "level": "sigmoid", "reference": "relu"},
        {"kind": "milestone", "accuracy": 0.98, "cell": {"activation": "relu"}},
        holds_if="any",
    )
    again = Claim.model_validate_json(c.model_dump_json())
    assert again == c
    assert again.contrasts[1].expect == "less"  # BN's steps below no-BN's by default


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"statement": "x", "contrasts": []}, ("contrasts",)),
        ({"statement": " ", "contrasts": [{"kind": "effect"}]}, ("statement",)),
        ({"statement": "x", "contrasts": [{"kind": "median"}]}, ("contrasts", 0)),
        (
            {"statement": "x", "contrasts": [{"kind": "milestone", "accuracy": 1.5}]},
            ("contrasts", 0, "milestone", "accuracy"),
        ),
        (
            {
                "statement": "x",
                "contrasts": [{"kind": "interaction", "factor": "a", "level": 1, "reference": 1}],
            },
            ("contrasts", 0, "interaction"),
        ),
        (
            {"statement": "x", "contrasts": [{"kind": "effect", "cells": {}}]},
            ("contrasts", 0, "effect", "cells"),
        ),
    ],
)
def test_bad_claims_name_the_field(body, where):
    with pytest.raises(ValidationError) as caught:
        Claim.model_validate(body)
    assert caught.value.errors()[0]["loc"][: len(where)] == where


@pytest.mark.parametrize(
    ("contrast", "words"),
    [
        ({"kind": "effect", "cell": {"activation": "gelu"}}, "contrasts.0.cell.activation"),
        ({"kind": "effect", "cell": {}}, "contrasts.0.cell: give a value for activation"),
        (
            {"kind": "interaction", "factor": "lr", "level": 1, "reference": 2},
            "contrasts.0.factor",
        ),
        (
            {"kind": "interaction", "factor": "activation", "level": "gelu", "reference": "relu"},
            "contrasts.0.level",
        ),
        ({"kind": "sensitivity", "factor": "activation", "at": {"lr": 1}}, "contrasts.0.at"),
    ],
)
def test_a_claim_that_does_not_fit_the_design_is_refused_naming_the_field(contrast, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        claim(contrast).check(VARY)
    claim({"kind": "effect", "cell": {"activation": "relu"}}).check(VARY)  # fits


def test_cross_cell_compares_one_arm_with_the_other():
    with pytest.raises(ValidationError, match="the other arm"):
        TypeAdapter(Contrast).validate_python(
            {
                "kind": "cross_cell",
                "minuend": {"cell": {"activation": "relu"}, "arm": "bn"},
                "subtrahend": {"cell": {"activation": "tanh"}, "arm": "bn"},
            }
        )


# --- contrasts ------------------------------------------------------------------------

BASE = [9700, 9710, 9690, 9705, 9695, 9702, 9698, 9708, 9693, 9701]


def test_an_effect_contrast_is_the_cells_effect():
    bn = [b + g for b, g in zip(BASE, [40, 50, 45, 60, 55, 48, 52, 47, 51, -60], strict=True)]
    runs = runs_from({("relu", "bn"): bn, ("relu", "no_bn"): BASE})
    result = evaluate_claim(claim({"kind": "effect", "cell": {"activation": "relu"}}), runs)
    [cell] = summarize_cells(runs)
    [contrast] = result.contrasts
    assert contrast.p_value == pytest.approx(cell.effect.p_value)
    assert contrast.estimate == pytest.approx(cell.effect.difference.mean)
    assert contrast.interval.low == pytest.approx(cell.effect.difference.ci_low)
    assert result.verdict == ClaimVerdict.SUPPORTED and cell.effect.verdict == Verdict.BN_BETTER
    # the same data against the opposite claim
    against = evaluate_claim(
        claim({"kind": "effect", "cell": {"activation": "relu"}, "expect": "less"}), runs
    )
    assert against.verdict == ClaimVerdict.CONTRADICTED
    assert result.sentence.startswith("Supported: a claim")


def test_an_interaction_significant_in_each_cell_but_not_as_a_contrast():
    # BN gains about 0.5 points with sigmoid and about 0.45 with ReLU, in every
    # seed: each cell alone is clear, the difference between them is not.
    sigmoid_gain = [50, 42, 61, 38, 55, 47, 52, 44, 58, 49]
    relu_gain = [45, 50, 40, 52, 41, 49, 43, 50, 39, 47]
    runs = runs_from(
        {
            ("relu", "bn"): [b + g for b, g in zip(BASE, relu_gain, strict=True)],
            ("relu", "no_bn"): BASE,
            ("sigmoid", "bn"): [b - 300 + g for b, g in zip(BASE, sigmoid_gain, strict=True)],
            ("sigmoid", "no_bn"): [b - 300 for b in BASE],
        }
    )
    cells = summarize_cells(runs)
    assert [c.effect.verdict for c in cells] == [Verdict.BN_BETTER, Verdict.BN_BETTER]
    result = evaluate_claim(
        claim(
            {
                "kind": "interaction",
                "factor": "activation",
                "level": "sigmoid",
                "reference": "relu",
            }
        ),
        runs,
    )
    did = [s - r for s, r in zip(sigmoid_gain, relu_gain, strict=True)]
    [contrast] = result.contrasts
    assert contrast.estimate == pytest.approx(np.mean(did) / TEST_IMAGES)
    assert contrast.p_value == pytest.approx(scipy_p(did))
    assert contrast.p_value > 0.05 and contrast.interval.low < 0 < contrast.interval.high
    assert result.verdict == ClaimVerdict.INCONCLUSIVE


def test_sensitivity_is_the_per_seed_spread_across_levels_bn_minus_no_bn():
    rng = np.random.default_rng(9)
    table, spreads = {}, []
    for activation, shift in (("relu", 0), ("sigmoid", -400), ("tanh", -150)):
        table[(activation, "no_bn")] = [b + shift for b in BASE]
        # with BN the levels move far less
        table[(activation, "bn")] = [b + shift // 8 + int(rng.integers(0, 20)) for b in BASE]
    for seed in range(len(BASE)):
        bn = [table[(a, "bn")][seed] for a in VARY["activation"]]
        no_bn = [table[(a, "no_bn")][seed] for a in VARY["activation"]]
        spreads.append(np.std(bn, ddof=1) - np.std(no_bn, ddof=1))
    result = evaluate_claim(
        claim({"kind": "sensitivity", "factor": "activation"}), runs_from(table)
    )
    [contrast] = result.contrasts
    assert contrast.estimate == pytest.approx(np.mean(spreads) / TEST_IMAGES)
    assert contrast.p_value == pytest.approx(scipy_p(spreads))
    assert result.verdict == ClaimVerdict.SUPPORTED  # varies less with BN


def test_cross_cell_pairs_one_arm_in_one_cell_with_the_other_arm_in_another():
    bn_relu = [b + 10 for b in BASE]
    no_bn_tanh = [b + d for b, d in zip(BASE, [5, 20, -3, 12, 8, 15, 2, 11, 9, 14], strict=True)]
    runs = runs_from(
        {
            ("relu", "bn"): bn_relu,
            ("relu", "no_bn"): BASE,
            ("tanh", "bn"): BASE,
            ("tanh", "no_bn"): no_bn_tanh,
        }
    )
    result = evaluate_claim(
        claim(
            {
                "kind": "cross_cell",
                "minuend": {"cell": {"activation": "relu"}, "arm": "bn"},
                "subtrahend": {"cell": {"activation": "tanh"}, "arm": "no_bn"},
            }
        ),
        runs,
    )
    d = [a - b for a, b in zip(bn_relu, no_bn_tanh, strict=True)]
    [contrast] = result.contrasts
    assert contrast.estimate == pytest.approx(np.mean(d) / TEST_IMAGES)
    assert contrast.p_value == pytest.approx(scipy_p(d))


def curve_reaching(step: int | None, budget: int = 1000):
    """A validation curve every 100 steps that reaches 98 % at `step` (None: never)."""
    return [
        CurvePoint(step=s, val_acc=0.985 if step is not None and s >= step else 0.95, val_loss=0.1)
        for s in range(0, budget + 1, 100)
    ]


def test_a_milestone_with_a_censored_arm():
    bn_steps = [200, 300, 200, 400, 300, 200, 300, 200]
    no_bn_steps = [600, None, 800, None, None, 700, None, None]  # never: censored at 1000
    n = len(bn_steps)
    curves = {("relu", "bn", s): curve_reaching(x) for s, x in enumerate(bn_steps)}
    curves |= {("relu", "no_bn", s): curve_reaching(x) for s, x in enumerate(no_bn_steps)}
    runs = runs_from({("relu", "bn"): [9800] * n, ("relu", "no_bn"): [9750] * n}, curves=curves)
    result = evaluate_claim(
        claim({"kind": "milestone", "accuracy": 0.98, "cell": {"activation": "relu"}}), runs
    )
    [contrast] = result.contrasts
    truncated = [b - (1000 if x is None else x) for b, x in zip(bn_steps, no_bn_steps, strict=True)]
    assert contrast.unit == "steps"
    assert contrast.estimate == pytest.approx(np.mean(truncated))
    assert contrast.p_value == pytest.approx(scipy_p(truncated))
    assert result.verdict == ClaimVerdict.SUPPORTED  # BN gets there sooner
    detail = contrast.milestone
    assert detail.budget == 1000
    # no-BN's median was never reached (5 of 8 never): only a bound, 1000 / 200
    assert detail.speedup.estimate is None
    assert detail.speedup.at_least == pytest.approx(1000 / 200)
    ci = stats.binomtest(3, 8).proportion_ci(0.95)
    assert detail.reached["no_bn"].estimate == 3 / 8
    assert detail.reached["no_bn"].low == pytest.approx(ci.low)
    assert detail.reached["bn"].estimate == 1.0


def test_a_milestone_no_run_reached_is_inconclusive_not_a_tie():
    """Every pair tied at the budget measures nothing: no '+0 steps', and no advice to
    add seeds, which would tie again."""
    n = 8
    curves = {("relu", arm, s): curve_reaching(None) for arm in ("bn", "no_bn") for s in range(n)}
    runs = runs_from({("relu", "bn"): [9500] * n, ("relu", "no_bn"): [9400] * n}, curves=curves)
    result = evaluate_claim(
        claim({"kind": "milestone", "accuracy": 0.98, "cell": {"activation": "relu"}}), runs
    )
    [contrast] = result.contrasts
    assert contrast.estimate is None and contrast.verdict == ClaimVerdict.INCONCLUSIVE
    for bounds in (contrast.interval, contrast.raw_interval):
        assert bounds.low is None and bounds.high is None  # not "+0 to +0 steps"
    assert result.verdict == ClaimVerdict.INCONCLUSIVE
    assert "no run of either arm reached it in 1000 steps" in contrast.sentence
    assert "more seeds cannot" in contrast.sentence


def test_divergence_is_tested_on_the_discordant_pairs():
    n = 12
    no_bn_diverged = {0, 1, 2, 3, 4, 5, 6, 7}
    bn_diverged = {0}  # seed 0: both diverged, not discordant
    status = {("relu", "no_bn", s): "diverged" for s in no_bn_diverged}
    status |= {("relu", "bn", s): "diverged" for s in bn_diverged}
    runs = runs_from({("relu", "bn"): [9800] * n, ("relu", "no_bn"): [9800] * n}, status=status)
    result = evaluate_claim(claim({"kind": "divergence", "cell": {"activation": "relu"}}), runs)
    [contrast] = result.contrasts
    detail = contrast.divergence
    assert detail.diverged == {"bn": 1, "no_bn": 8}
    assert (detail.bn_only, detail.no_bn_only) == (0, 7)
    # McNemar's exact test, equal-tailed: twice the smaller one-sided binomial p
    assert contrast.p_value == pytest.approx(2 * stats.binomtest(0, 7, alternative="less").pvalue)
    ci = stats.binomtest(0, 7).proportion_ci(0.95, method="exact")
    assert (contrast.interval.low, contrast.interval.high) == (
        pytest.approx(ci.low),
        pytest.approx(ci.high),
    )
    assert contrast.estimate == 0.0 and contrast.null == 0.5
    assert result.verdict == ClaimVerdict.SUPPORTED  # BN diverges less


def test_a_claims_contrasts_are_one_family_and_too_few_seeds_say_so():
    few = runs_from(
        {
            ("relu", "bn"): [b + 50 for b in BASE[:6]],
            ("relu", "no_bn"): BASE[:6],
            ("tanh", "bn"): [b + 50 for b in BASE[:6]],
            ("tanh", "no_bn"): BASE[:6],
        }
    )
    one = evaluate_claim(claim({"kind": "effect", "cell": {"activation": "relu"}}), few)
    assert one.verdict == ClaimVerdict.SUPPORTED  # 2/64 < 0.05
    two = evaluate_claim(
        claim(
            {"kind": "effect", "cell": {"activation": "relu"}},
            {"kind": "effect", "cell": {"activation": "tanh"}},
        ),
        few,
    )
    # two contrasts: Holm's first threshold 0.025 is below 2/64
    assert two.verdict == ClaimVerdict.NOT_ENOUGH_SEEDS
    assert all(c.p_adjusted == pytest.approx(2 * 2 / 64) for c in two.contrasts)
    assert "at least 7 seeds" in two.contrasts[0].sentence
    live = evaluate_claim(claim({"kind": "effect", "cell": {"activation": "relu"}}), few, live=True)
    assert live.provisional and live.sentence.startswith("Provisional")


def test_interval_and_verdict_agree_for_every_contrast():
    rng = np.random.default_rng(10)
    for _ in range(40):
        n = int(rng.integers(3, 11))
        runs = runs_from(
            {
                ("relu", "bn"): list(9700 + rng.integers(-20, 40, n)),
                ("relu", "no_bn"): [9700] * n,
                ("tanh", "bn"): list(9700 + rng.integers(-20, 40, n)),
                ("tanh", "no_bn"): [9700] * n,
            }
        )
        result = evaluate_claim(
            claim(
                {"kind": "effect", "cell": {"activation": "relu"}},
                {
                    "kind": "interaction",
                    "factor": "activation",
                    "level": "tanh",
                    "reference": "relu",
                },
            ),
            runs,
        )
        for c in result.contrasts:
            decided = c.verdict in (ClaimVerdict.SUPPORTED, ClaimVerdict.CONTRADICTED)
            assert decided == c.interval.excludes(c.null)
            assert decided == (c.p_adjusted < 0.05)
            if c.interval.low is not None:
                assert c.interval.low <= c.estimate <= c.interval.high
            flip = SignFlip(np.zeros(1))  # the module's own interval type is the API's
            assert type(c.interval) is type(flip.bounds(0.05))
