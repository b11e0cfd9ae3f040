"""The experiment statistics against independent computations on hand-built data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bnlab.server.experiments.milestones import censored_median, speedup
from bnlab.server.experiments.paired import SignFlip
from bnlab.server.experiments.statistics import (
    BOOTSTRAP_RESAMPLES,
    CHANCE,
    MIN_PAIRS,
    TEST_IMAGES,
    CurvePoint,
    RunResult,
    Verdict,
    compare_arms,
    mean_interval,
    summarize_arm,
    summarize_cells,
)


def run(seed, arm, accuracy, *, status="completed", curve=(), factors=None, correct=None):
    return RunResult(
        factors=factors or {"learning_rate": 0.1},
        seed=seed,
        arm=arm,
        status=status,
        test_accuracy=accuracy,
        test_correct=correct,
        curve=[CurvePoint(step=s, val_acc=a, val_loss=loss) for s, a, loss in curve],
    )


def t_interval_by_hand(x):
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def scipy_sign_flip_p(d):
    return stats.permutation_test(
        (np.asarray(d, dtype=float),),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    ).pvalue


def twins(differences, *, base=9700, factors=None):
    """BN and no-BN runs whose test accuracies differ by `differences` images."""
    bn = [
        run(s, "bn", (base + d) / TEST_IMAGES, factors=factors) for s, d in enumerate(differences)
    ]
    no_bn = [run(s, "no_bn", base / TEST_IMAGES, factors=factors) for s in range(len(differences))]
    return bn, no_bn


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


def test_mean_interval_is_clipped_to_the_quantitys_range():
    # two runs far apart near 100 %: the t interval runs past 1, the band does not
    x = [0.33, 0.99]
    low, high = t_interval_by_hand(x)
    assert high > 1 and low < 0
    got = mean_interval(x, 0.0, 1.0)
    assert (got.ci_low, got.ci_high) == (0.0, 1.0) and got.mean == pytest.approx(0.66)


# --- exact values ----------------------------------------------------------------------


def test_accuracies_are_counts_of_test_images_so_ties_stay_ties():
    # float32 accuracies a hair apart are the same count of correct images
    a = run(0, "bn", 0.9812999963760376)
    b = run(0, "no_bn", 0.9813)
    assert a.scored_correct() == b.scored_correct() == 9813
    assert run(0, "bn", 0.5, correct=9813).scored_correct() == 9813  # the count wins
    assert run(0, "bn", None, status="diverged").scored_correct() == CHANCE * TEST_IMAGES
    assert run(0, "bn", 0.98, status="running").scored_correct() is None
    # differences from floats are unequal; from counts they tie, as they should
    floats = [0.9813 - 0.9812, 0.9713 - 0.9712]
    assert floats[0] != floats[1]
    bn = [run(0, "bn", 0.9813), run(1, "bn", 0.9713)]
    no_bn = [run(0, "no_bn", 0.9812), run(1, "no_bn", 0.9712)]
    effect = compare_arms(bn, no_bn)
    assert effect.difference.mean == pytest.approx(1 / TEST_IMAGES)


def test_min_pairs_is_where_the_test_can_first_reach_alpha():
    assert MIN_PAIRS == 6
    assert compare_arms(*twins([10, 20, 30, 40, 50])).p_value == pytest.approx(2 / 2**5)
    assert compare_arms(*twins([10, 20, 30, 40, 50, 60])).p_value == pytest.approx(2 / 2**6)


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
        # reached 97 % at step 100, then blew up: it reached 97 % all the same
        run(2, "no_bn", None, status="diverged", curve=[(0, 0.1, 2.3), (100, 0.971, 0.1)]),
        run(3, "no_bn", None, status="running", curve=[(0, 0.1, 2.3)]),
        run(4, "no_bn", None, status="failed"),
    ]
    arm = summarize_arm(runs)
    assert (arm.n, arm.n_finished, arm.n_diverged) == (5, 3, 1)
    scored = [0.986, 0.974, CHANCE]
    low, high = t_interval_by_hand(scored)
    assert arm.test_accuracy.mean == pytest.approx(np.mean(scored))
    assert (arm.test_accuracy.ci_low, arm.test_accuracy.ci_high) == (
        pytest.approx(max(low, 0.0)),
        pytest.approx(min(high, 1.0)),
    )
    # 0.97: steps 100, 200 and 100 (before it diverged) -> median 100, all three
    assert arm.steps_to["0.97"].model_dump() == {"median": 100, "reached": 3, "n": 3}
    assert arm.steps_to["0.98"].model_dump() == {"median": None, "reached": 1, "n": 3}
    assert arm.steps_to["0.99"].model_dump() == {"median": None, "reached": 0, "n": 3}


def test_a_diverged_run_stays_in_its_arms_band_at_chance():
    runs = [
        run(0, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.90, 0.30), (100, 0.95, 0.2)]),
        run(1, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.94, 0.25), (100, 0.96, 0.1)]),
        run(2, "bn", 0.98, curve=[(0, 0.1, 2.30), (50, 0.93, 0.20), (100, 0.97, 0.15)]),
        run(3, "bn", None, status="diverged", curve=[(0, 0.1, 2.30), (50, None, None)]),
        run(4, "bn", None, status="cancelled", curve=[(0, 0.1, 2.30), (50, 0.5, 1.0)]),
        run(5, "bn", None, status="running", curve=[(0, 0.1, 2.30), (50, 0.6, 0.9)]),
    ]
    curve = summarize_arm(runs).curve
    assert [p.step for p in curve] == [0, 50, 100]
    assert (curve[0].n, curve[0].n_diverged) == (4, 0)  # cancelled and running: out
    at50 = curve[1]
    assert (at50.n, at50.n_diverged, at50.n_loss) == (4, 1, 3)
    assert at50.val_acc.mean == pytest.approx(np.mean([0.90, 0.94, 0.93, CHANCE]))
    low, high = t_interval_by_hand([0.90, 0.94, 0.93, CHANCE])
    assert (at50.val_acc.ci_low, at50.val_acc.ci_high) == (
        pytest.approx(max(low, 0)),
        pytest.approx(min(high, 1)),
    )
    low, high = t_interval_by_hand([0.30, 0.25, 0.20])  # no finite loss when diverged
    assert (at50.val_loss.ci_low, at50.val_loss.ci_high) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    # still at chance at step 100, which it never evaluated
    assert curve[2].n == 4 and curve[2].val_acc.mean == pytest.approx(
        np.mean([0.95, 0.96, 0.97, CHANCE])
    )


def test_a_diverged_run_without_a_non_finite_point_is_at_chance_after_its_last():
    runs = [
        run(0, "bn", 0.98, curve=[(0, 0.1, 2.3), (50, 0.9, 0.3), (100, 0.95, 0.2)]),
        run(1, "bn", None, status="diverged", curve=[(0, 0.1, 2.3), (50, 0.8, 0.5)]),
    ]
    curve = summarize_arm(runs).curve
    assert curve[1].val_acc.mean == pytest.approx(0.85) and curve[1].n_diverged == 0
    assert curve[2].val_acc.mean == pytest.approx((0.95 + CHANCE) / 2)
    assert curve[2].n_diverged == 1


def test_where_one_run_is_left_there_is_no_band():
    runs = [
        run(0, "bn", 0.98, curve=[(0, 0.1, 2.3), (50, 0.9, 0.3), (100, 0.95, 0.2)]),
        run(1, "bn", 0.98, curve=[(0, 0.1, 2.3), (50, 0.92, 0.3)]),
    ]
    last = summarize_arm(runs).curve[-1]
    assert last.n == 1 and last.val_acc.mean == 0.95
    assert last.val_acc.ci_low is None and last.val_acc.ci_high is None


# --- the effect and its verdict ------------------------------------------------------


def test_effect_is_the_mean_with_the_sign_flip_test_and_its_interval():
    d = [40, -10, 30, 60, 20, 50, 35]
    bn, no_bn = twins(d)
    effect = compare_arms(list(reversed(bn)), no_bn)  # order must not matter, seeds do
    assert effect.n_pairs == 7 and effect.test == "sign-flip permutation"
    assert effect.difference.mean == pytest.approx(np.mean(d) / TEST_IMAGES)
    assert effect.p_value == pytest.approx(scipy_sign_flip_p(d))
    bounds = SignFlip(np.array(d)).bounds(0.05)
    assert effect.difference.ci_low == pytest.approx(bounds.low / TEST_IMAGES)
    assert effect.difference.ci_high == pytest.approx(bounds.high / TEST_IMAGES)
    assert effect.verdict == Verdict.BN_BETTER and effect.difference.ci_low > 0
    assert effect.sentence.startswith("BN better: test accuracy +0.32 points")
    assert "n = 7 seed pairs" in effect.sentence and "6 of 7" in effect.sentence
    # beside p: d_z and how often BN wins a seed
    assert effect.effect_size.estimate == pytest.approx(np.mean(d) / np.std(d, ddof=1))
    assert effect.p_bn_ahead.estimate == pytest.approx(6 / 7)


def test_a_diverged_twin_cannot_make_a_verdict_contradict_its_estimate():
    # The case: eleven pairs at +0.5 points, one whose BN twin diverged.
    bn, no_bn = twins([50] * 12)
    bn[11] = run(11, "bn", None, status="diverged")
    effect = compare_arms(bn, no_bn)
    expected = [50] * 11 + [CHANCE * TEST_IMAGES - 9700]
    assert effect.difference.mean == pytest.approx(np.mean(expected) / TEST_IMAGES)
    assert effect.difference.mean < 0
    assert effect.p_value == pytest.approx(scipy_sign_flip_p(expected))
    assert effect.verdict == Verdict.INCONCLUSIVE  # never "BN better" beside a negative mean
    assert effect.difference.ci_low < 0 < effect.difference.ci_high
    assert "Diverged (counted at chance): BN 1, no-BN 0 of 12" in effect.sentence


def test_verdicts_agree_with_their_figures_everywhere():
    rng = np.random.default_rng(8)
    for _ in range(120):
        n = int(rng.integers(1, 12))
        d = rng.integers(-30, 60, size=n)
        effect = compare_arms(*twins(list(d)))
        low, high, mean = (
            effect.difference.ci_low,
            effect.difference.ci_high,
            effect.difference.mean,
        )
        excludes = (low is not None and low > 0) or (high is not None and high < 0)
        decided = effect.verdict in (Verdict.BN_BETTER, Verdict.BN_WORSE)
        assert decided == excludes == (effect.p_value < 0.05)
        if decided:
            assert (effect.verdict == Verdict.BN_BETTER) == (mean > 0)
        if low is not None:
            assert low <= mean <= high


def test_no_difference_only_with_equivalence_else_inconclusive():
    tight = compare_arms(*twins([2, -1, 0, 3, -2, 1, -1, 2]))  # within ±0.03 points
    assert tight.verdict == Verdict.NO_DIFFERENCE and tight.equivalence.equivalent
    assert tight.equivalence.p_value < 0.05
    assert -0.005 < tight.equivalence.interval.low <= tight.equivalence.interval.high < 0.005
    assert "No difference beyond ±0.50 points" in tight.sentence
    wide = compare_arms(*twins([80, -120, 20, -160, 140, -40, 60, -100]))
    assert wide.verdict == Verdict.INCONCLUSIVE and not wide.equivalence.equivalent
    assert wide.sentence.startswith("Inconclusive")
    # the margin is settable: at ±0.1 points the tight pairs are still equivalent,
    # at ±0.01 points they are not
    assert compare_arms(*twins([2, -1, 0, 3, -2, 1, -1, 2]), margin=0.001).equivalence.equivalent
    narrow = compare_arms(*twins([2, -1, 0, 3, -2, 1, -1, 2]), margin=0.0001)
    assert narrow.verdict == Verdict.INCONCLUSIVE


def test_too_few_seeds_is_never_a_guess_and_says_how_many_would_do():
    effect = compare_arms(*twins([100, 101, 102, 103, 104]))
    assert stats.ttest_1samp([100, 101, 102, 103, 104], 0).pvalue < 0.001
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS and effect.seeds_needed == 6
    assert effect.min_p == pytest.approx(2 / 2**5)
    assert "n = 5 seed pairs" in effect.sentence and "at least 6 seed pairs" in effect.sentence
    assert "test accuracy +1.02 points" in effect.sentence  # what was seen, all the same


def test_zero_differences_hide_no_p_floor():
    # six pairs, one with no difference: the smallest p is 2/2**5 > 0.05 (and the
    # mean, +0.83 points, is not within the ±0.5 points of "no difference" either)
    d = [100, 100, 100, 100, 100, 0]
    effect = compare_arms(*twins(d))
    assert effect.n_zero == 1 and effect.min_p == pytest.approx(2 / 2**5)
    assert effect.p_value == pytest.approx(scipy_sign_flip_p(d))
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS and effect.seeds_needed == 7
    assert "1 of them with no difference" in effect.sentence


def test_before_any_pair_finishes_there_is_nothing_to_tell():
    bn = [run(0, "bn", 0.98)]
    no_bn = [run(0, "no_bn", None, status="running")]
    effect = compare_arms(bn, no_bn)
    assert (effect.n_pairs, effect.p_value, effect.difference.mean) == (0, None, None)
    assert effect.verdict == Verdict.NOT_ENOUGH_SEEDS
    assert "no seed has finished with and without BN" in effect.sentence


def test_a_diverged_twin_counts_at_chance_and_unfinished_pairs_wait():
    bn, no_bn = twins([10] * 6)
    no_bn[2] = run(2, "no_bn", None, status="diverged")
    no_bn[5] = run(5, "no_bn", None, status="running")
    effect = compare_arms(bn, no_bn)
    assert effect.n_pairs == 5  # seed 5 is not finished: no pair yet
    expected = [10, 10, 9710 - 1000, 10, 10]
    assert effect.difference.mean == pytest.approx(np.mean(expected) / TEST_IMAGES)
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
    # no-BN's median never gets there: no estimate, but a bound from the budget
    got = speedup([100, 200, 300], [None, None, 600], budget=1000)
    assert got.estimate is None and got.at_least == pytest.approx(1000 / 200)
    assert speedup([None, None, 600], [100, 200, 300], budget=1000).at_most == pytest.approx(0.2)
    # half of no-BN never reached 98 %: finite estimate, but resamples with most
    # of them drawn have no end, so the upper end is unbounded
    got = speedup([100, 100, 100, 100, 100, 100], [200, 200, 200, None, None, None])
    assert got.estimate == 2.0 and got.ci_high is None and got.ci_low == pytest.approx(2.0)


def test_a_resample_where_both_arms_never_get_there_is_not_a_speedup_of_one():
    # Seeds 4-6 never reach 98 % in either arm. A resample drawing four or more of
    # them has no median in either arm: no ratio (P about 0.3). Counted as 1, the
    # interval would be [1, 2]; counted against both ends, it is unbounded.
    bn = [100, 100, 100, 100, None, None, None]
    no_bn = [200, 200, 200, 200, None, None, None]
    got = speedup(bn, no_bn)
    assert got.estimate == 2.0
    assert got.ci_low is None and got.ci_high is None


def test_a_run_that_reached_the_milestone_and_then_diverged_counts_as_reaching_it():
    curve = [(0, 0.1, 2.3), (100, 0.985, 0.05), (200, None, None)]
    bn = [run(s, "bn", 0.985, curve=[(0, 0.1, 2.3), (50, 0.985, 0.05)]) for s in range(6)]
    no_bn = [run(s, "no_bn", None, status="diverged", curve=curve) for s in range(6)]
    effect = compare_arms(bn, no_bn)
    assert effect.speedup.estimate == pytest.approx(100 / 50)
    assert effect.verdict == Verdict.BN_BETTER  # at chance on the test set, all the same


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
    assert set(body) == {"factors", "provisional", "arms", "effect"}
    assert set(body["arms"]) == {"bn", "no_bn"}


def _experiment(cell_differences, live=False):
    runs = []
    for i, d in enumerate(cell_differences):
        bn, no_bn = twins(d, factors={"activation": f"a{i}"})
        runs += bn + no_bn
    return summarize_cells(runs, live=live)


def test_cells_are_one_family_corrected_by_holm():
    clear = [40, 50, 45, 60, 55, 48, 52, 47, 51, 58]  # p = 2/1024 in any family
    weak = [40, 50, 45, 60, 55, 48, 52, 47, 51, -60]  # p < 0.05 alone, not over 4
    null = [5, -5, 3, -3, 8, -8, 1, -1, 2, -2]
    cells = _experiment([clear, weak, null, null])
    p = [c.effect.p_value for c in cells]
    assert p[1] < 0.05
    # Holm by hand: sorted p times 4, 3, 2, 1, running maximum
    order = np.argsort(p, kind="stable")
    adjusted, running = [0.0] * 4, 0.0
    for step, i in enumerate(order):
        running = max(running, min(1, (4 - step) * p[i]))
        adjusted[i] = running
    assert [c.effect.p_adjusted for c in cells] == pytest.approx(adjusted)
    assert all(c.effect.cells == 4 for c in cells)
    assert cells[0].effect.verdict == Verdict.BN_BETTER
    assert cells[0].effect.confidence == pytest.approx(1 - 0.05 / 4)
    assert cells[0].effect.difference.ci_low > 0
    weak_effect = cells[1].effect
    assert weak_effect.p_adjusted > 0.05 and weak_effect.verdict == Verdict.INCONCLUSIVE
    # its interval is at the level Holm decided it at, and so includes 0
    assert weak_effect.difference.ci_low <= 0 <= weak_effect.difference.ci_high
    assert weak_effect.raw_interval.low > 0  # the test alone excludes 0: said in words
    assert "uncorrected 95 % CI" in weak_effect.sentence
    assert "corrected for the experiment's cells does not" in weak_effect.sentence
    assert "after Holm's correction over 4 cells" in weak_effect.sentence


def test_sixteen_cells_with_six_seeds_are_not_enough_and_say_how_many_would_do():
    cells = _experiment([[40, 50, 45, 60, 55, 48]] * 16)
    for cell in cells:
        assert cell.effect.p_value == pytest.approx(2 / 64)  # a verdict alone
        assert cell.effect.verdict == Verdict.NOT_ENOUGH_SEEDS
        assert cell.effect.seeds_needed == 10  # 2/2**10 < 0.05/16
        assert "over 16 cells" in cell.effect.sentence


def test_a_live_experiments_cells_are_provisional():
    cells = _experiment([[40, 50, 45, 60, 55, 48]], live=True)
    assert cells[0].provisional and cells[0].effect.provisional
    assert cells[0].effect.sentence.startswith("Provisional")
    assert not _experiment([[40, 50, 45, 60, 55, 48]])[0].provisional
