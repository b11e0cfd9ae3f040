"""The experiment statistics against independent computations on hand-built data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from bnlab.server.experiments.statistics import (
    BOOTSTRAP_RESAMPLES,
    CHANCE,
    MIN_PAIRS,
    CurvePoint,
    RunResult,
    Verdict,
    censored_median,
    compare_arms,
    mean_interval,
    paired_test,
    speedup,
    summarize_arm,
    summarize_cells,
)


def run(seed, arm, accuracy, *, status="completed", curve=(), factors=None):
    return RunResult(
        factors=factors or {"learning_rate": 0.1},
        seed=seed,
        arm=arm,
        status=status,
        test_accuracy=accuracy,
        curve=[CurvePoint(step=s, val_acc=a, val_loss=loss) for s, a, loss in curve],
    )


def t_interval_by_hand(x):
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def exact_signed_rank_p(d):
    """Two-sided p by enumerating every sign flip of the nonzero differences, with
    Pratt's ranks: zeros take part in the ranking and never move; ties share ranks."""
    d = np.asarray(d, dtype=float)
    ranks = stats.rankdata(np.abs(d))
    movable = np.flatnonzero(d != 0)
    middle = ranks[movable].sum() / 2  # the null mean of the positive rank sum
    extreme = abs(ranks[d > 0].sum() - middle)
    hits = sum(
        abs(sum(ranks[i] for i, s in zip(movable, signs, strict=True) if s) - middle)
        >= extreme - 1e-9
        for signs in itertools.product([0, 1], repeat=len(movable))
    )
    return hits / 2 ** len(movable)


# --- means and intervals ---------------------------------------------------------------


def test_mean_interval_is_the_t_interval():
    x = [0.981, 0.985, 0.979, 0.990, 0.984]
    got = mean_interval(x)
    low, high = t_interval_by_hand(x)
    assert got.mean == pytest.approx(np.mean(x), abs=1e-15)
    assert (got.ci_low, got.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_mean_interval_edges():
    assert mean_interval([]).mean is None
    one = mean_interval([0.5])
    assert one.mean == 0.5 and one.ci_low is None and one.ci_high is None
    same = mean_interval([0.98, 0.98, 0.98])
    assert same.ci_low == same.ci_high == pytest.approx(0.98)


# --- the paired test -------------------------------------------------------------------


def test_paired_p_is_the_exact_signed_rank_p():
    d = [0.004, -0.001, 0.003, 0.006, 0.002, -0.0005, 0.005]
    assert paired_test(d) == pytest.approx(exact_signed_rank_p(d))


@pytest.mark.parametrize(
    "d",
    [
        [0.001, 0.001, 0.002, 0.0, 0.003, 0.001, -0.001],  # ties and a zero
        [0.0012, 0.0012, -0.0003, 0.0005, 0.0012, 0.0007, 0.0, 0.0009],
    ],
)
def test_paired_p_with_ties_and_zeros_keeps_every_pair(d):
    # test accuracies come in steps of 0.0001: tied and zero differences are common
    assert paired_test(d) == pytest.approx(exact_signed_rank_p(d))


def test_a_zero_difference_counts_as_a_pair_that_favours_neither_arm():
    effect = compare_arms(*twins([0.001] * 5 + [0.0]))
    assert effect.n_pairs == 6 and effect.p_value == pytest.approx(2 / 2**5)
    assert effect.verdict == Verdict.NO_DIFFERENCE


def test_min_pairs_is_where_the_test_can_first_reach_alpha():
    # every difference positive: the most extreme the data can be
    assert paired_test([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(2 / 2**5)
    assert paired_test([0.01, 0.02, 0.03, 0.04, 0.05]) > 0.05
    assert paired_test([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]) == pytest.approx(2 / 2**6)
    assert MIN_PAIRS == 6


def test_paired_p_of_no_change_is_one():
    assert paired_test([0.0, 0.0, 0.0]) == 1.0
    assert paired_test([]) is None


# --- censored medians ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "median"),
    [
        ([300, 100, 200], 200),
        ([100, 200, None], 200),  # one of three never: still the middle one
        ([100, None, None], None),  # more than half never: not reached
        ([100, 200, None, None], 200),  # exactly half by step 200
        ([None, None, None, 100, 200], None),
        ([400, 200, 600, 800], 400),  # the first step by which half had reached it
        ([], None),
    ],
)
def test_censored_median(steps, median):
    assert censored_median(steps) == median


# --- an arm ----------------------------------------------------------------------------


def test_arm_counts_diverged_runs_as_failures_and_never_drops_them():
    curve_fast = [(0, 0.1, 2.3), (100, 0.975, 0.1), (200, 0.985, 0.05)]
    curve_slow = [(0, 0.1, 2.3), (100, 0.95, 0.2), (200, 0.972, 0.09)]
    runs = [
        run(0, "no_bn", 0.986, curve=curve_fast),
        run(1, "no_bn", 0.974, curve=curve_slow),
        run(2, "no_bn", None, status="diverged", curve=[(0, 0.1, 2.3), (100, None, None)]),
        run(3, "no_bn", None, status="running", curve=[(0, 0.1, 2.3)]),
        run(4, "no_bn", None, status="failed"),
    ]
    arm = summarize_arm(runs)
    assert (arm.n, arm.n_finished, arm.n_diverged) == (5, 3, 1)
    scored = [0.986, 0.974, CHANCE]
    low, high = t_interval_by_hand(scored)
    assert arm.test_accuracy.mean == pytest.approx(np.mean(scored))
    assert (arm.test_accuracy.ci_low, arm.test_accuracy.ci_high) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    # 0.97: steps 100, 200 and never -> median 200, two of three reached
    assert arm.steps_to["0.97"].model_dump() == {"median": 200, "reached": 2, "n": 3}
    # 0.98: 200 once, never twice -> not reached
    assert arm.steps_to["0.98"].model_dump() == {"median": None, "reached": 1, "n": 3}
    assert arm.steps_to["0.99"].model_dump() == {"median": None, "reached": 0, "n": 3}


def test_arm_curve_is_mean_and_t_interval_per_step():
    runs = [
        run(0, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.90, 0.30)]),
        run(1, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.94, 0.25)]),
        run(2, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.93, 0.20)]),
        run(3, "bn", None, status="diverged", curve=[(0, 0.1, 2.30), (50, None, None)]),
    ]
    curve = summarize_arm(runs).curve
    assert [p.step for p in curve] == [0, 50]
    assert curve[0].n == 4 and curve[0].val_acc.ci_low == pytest.approx(0.1)
    at50 = curve[1]
    assert at50.n == 3  # the diverged run has no finite value there
    assert at50.val_acc.mean == pytest.approx(np.mean([0.90, 0.94, 0.93]))
    low, high = t_interval_by_hand([0.30, 0.25, 0.20])
    assert (at50.val_loss.ci_low, at50.val_loss.ci_high) == (
        pytest.approx(low),
        pytest.approx(high),
    )


# --- the effect and its verdict ------------------------------------------------------


def twins(differences, *, base=0.97):
    bn = [run(s, "bn", base + d) for s, d in enumerate(differences)]
    no_bn = [run(s, "no_bn", base) for s in range(len(differences))]
    return bn, no_bn


def test_effect_is_paired_by_seed():
    d = [0.004, -0.001, 0.003, 0.006, 0.002, 0.005, 0.0035]
    bn, no_bn = twins(d)
    effect = compare_arms(list(reversed(bn)), no_bn)  # order must not matter, seeds do
    low, high = t_interval_by_hand(d)
    assert effect.n_pairs == 7
    assert effect.difference.mean == pytest.approx(np.mean(d))
    assert (effect.difference.ci_low, effect.difference.ci_high) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    assert effect.p_value == pytest.approx(exact_signed_rank_p(d))
    assert effect.test == "Wilcoxon signed-rank"
    assert effect.verdict == Verdict.BN_BETTER
    assert "n = 7 seed pairs" in effect.sentence
    assert effect.sentence.startswith("BN better in 6 of 7 seed pairs: test accuracy +0.32 %")
    assert "interval includes 0" not in effect.sentence


def test_a_verdict_whose_mean_interval_spans_zero_says_so():
    # Every pair favours BN (the rank test's smallest p at n = 6), but one pair by far
    # more than the others: the mean's t interval reaches below 0.
    d = [0.20, 0.001, 0.002, 0.001, 0.003, 0.002]
    effect = compare_arms(*twins(d))
    assert effect.verdict == Verdict.BN_BETTER and effect.p_value == pytest.approx(2 / 64)
    assert effect.difference.ci_low < 0 < effect.difference.ci_high
    assert effect.sentence.startswith("BN better in 6 of 6 seed pairs")
    assert "varies so much between seeds that the mean's interval includes 0" in effect.sentence


def test_bn_worse_and_no_difference():
    worse = compare_arms(*twins([-0.004, -0.001, -0.003, -0.006, -0.002, -0.005]))
    assert worse.verdict == Verdict.BN_WORSE and worse.p_value == pytest.approx(2 / 64)
    mixed = compare_arms(*twins([0.004, -0.001, 0.003, -0.006, 0.002, -0.005]))
    assert mixed.verdict == Verdict.NO_DIFFERENCE and mixed.p_value > 0.05
    assert "n = 6" in mixed.sentence


def test_too_few_seeds_is_never_a_guess():
    # five seeds, every one clearly better with BN: a t-test would say p < 0.001,
    # but the signed-rank test can never go below 2/2**5 = 0.0625 here
    effect = compare_arms(*twins([0.0100, 0.0101, 0.0102, 0.0103, 0.0104]))
    assert stats.ttest_1samp([0.0100, 0.0101, 0.0102, 0.0103, 0.0104], 0).pvalue < 0.001
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS
    assert "n = 5 seed pairs" in effect.sentence and "at least 6" in effect.sentence
    assert "test accuracy +1.02 %" in effect.sentence  # what was seen, all the same


def test_before_any_pair_finishes_there_is_nothing_to_tell():
    bn = [run(0, "bn", 0.98)]
    no_bn = [run(0, "no_bn", None, status="running")]
    effect = compare_arms(bn, no_bn)
    assert (effect.n_pairs, effect.p_value, effect.difference.mean) == (0, None, None)
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS
    assert "no seed has finished with and without BN" in effect.sentence


def test_a_diverged_twin_counts_at_chance_and_unfinished_pairs_wait():
    bn, no_bn = twins([0.001] * 6)
    no_bn[2] = run(2, "no_bn", None, status="diverged")
    no_bn[5] = run(5, "no_bn", None, status="running")
    effect = compare_arms(bn, no_bn)
    assert effect.n_pairs == 5  # seed 5 is not finished: no pair yet
    expected = [0.001, 0.001, 0.971 - CHANCE, 0.001, 0.001]
    assert effect.difference.mean == pytest.approx(np.mean(expected))
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS


# --- the speed-up ---------------------------------------------------------------------


def test_speedup_is_ratio_of_censored_medians():
    bn = [400, 600, 400, 800, None, 600]
    no_bn = [1000, 1200, None, 1400, 1600, 800]
    got = speedup(bn, no_bn)
    assert got.estimate == pytest.approx(1200 / 600)
    assert got.ci_low <= got.estimate <= got.ci_high
    assert speedup(bn, no_bn) == got  # fixed seed: same runs, same numbers


def test_speedup_interval_is_scipys_percentile_bootstrap_over_pairs():
    bn = np.array([400, 600, 400, 800, 500, 600, 700], dtype=float)
    no_bn = np.array([1000, 1200, 900, 1400, 1600, 800, 1000], dtype=float)

    def log_ratio_of_medians(index, axis=-1):
        # a second route: sort and take the lower middle order statistic
        out = []
        for row in np.atleast_2d(index):
            k = (len(row) + 1) // 2 - 1
            out.append(math.log(np.sort(no_bn[row])[k] / np.sort(bn[row])[k]))
        return np.array(out)

    reference = stats.bootstrap(
        (np.arange(len(bn)),),
        log_ratio_of_medians,
        n_resamples=BOOTSTRAP_RESAMPLES,
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    got = speedup(list(bn.astype(int)), list(no_bn.astype(int)))
    assert got.ci_low == pytest.approx(math.exp(reference.low))
    assert got.ci_high == pytest.approx(math.exp(reference.high))


def test_speedup_with_a_constant_ratio_has_a_point_interval():
    got = speedup([100, 200, 300], [200, 400, 600])
    assert (got.estimate, got.ci_low, got.ci_high) == (2.0, pytest.approx(2.0), pytest.approx(2.0))


def test_speedup_unbounded_or_unknown_is_none_not_a_number():
    # no-BN's median never gets there: no finite speed-up to report
    assert speedup([100, 200, 300], [None, None, 600]).estimate is None
    # half of no-BN never reached 98 %: finite estimate, but resamples with most
    # of them drawn have no end, so the upper end is unbounded
    got = speedup([100, 100, 100, 100, 100, 100], [200, 200, 200, None, None, None])
    assert got.estimate == 2.0 and got.ci_high is None and got.ci_low == pytest.approx(2.0)


def test_speedup_counts_a_diverged_run_as_never_reaching():
    curve = [(0, 0.1, 2.3), (100, 0.985, 0.05)]
    bn = [run(s, "bn", 0.985, curve=curve) for s in range(6)]
    no_bn = [run(s, "no_bn", None, status="diverged", curve=curve) for s in range(6)]
    effect = compare_arms(bn, no_bn)
    # its curve passed 98 % before it blew up, but a diverged run reached nothing
    assert effect.speedup.estimate is None
    assert effect.verdict == Verdict.BN_BETTER


# --- cells -----------------------------------------------------------------------------


def test_cells_group_runs_by_factors_in_first_seen_order():
    runs = []
    for lr in (1.0, 0.1):
        for s in range(2):
            for arm in ("bn", "no_bn"):
                runs.append(run(s, arm, 0.98, factors={"learning_rate": lr}))
    cells = summarize_cells(runs)
    assert [c.factors for c in cells] == [{"learning_rate": 1.0}, {"learning_rate": 0.1}]
    assert all(c.arms["bn"].n == 2 and c.arms["no_bn"].n == 2 for c in cells)
    assert cells[0].effect.verdict == Verdict.NOT_ENOUGH_SEEDS
    body = cells[0].model_dump(mode="json")
    assert set(body) == {"factors", "arms", "effect"} and set(body["arms"]) == {"bn", "no_bn"}
