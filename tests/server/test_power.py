"""Power before running, against the paired t test simulated and published tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from bnlab.server.experiments.power import (
    detectable_dz,
    pairs_for,
    plan_power,
    t_power,
    verdict_warnings,
)


def test_detectable_effect_matches_the_table_and_the_power_is_80_percent():
    # Cohen-style table for the paired t test, alpha 0.05 two-sided, 80 % power
    assert detectable_dz(5) == pytest.approx(1.68, abs=0.01)
    assert detectable_dz(10) == pytest.approx(1.00, abs=0.01)
    assert detectable_dz(20) == pytest.approx(0.66, abs=0.01)
    assert [pairs_for(dz) for dz in (0.5, 0.8, 1.0, 1.2, 1.5)] == [34, 15, 10, 8, 6]
    assert pairs_for(0.5, 0.05 / 16) == 63 and pairs_for(1.0, 0.05 / 16) == 19
    assert t_power(detectable_dz(12), 12) == pytest.approx(0.8)


def test_t_power_against_simulated_t_tests():
    rng = np.random.default_rng(6)
    n, dz = 10, 0.8
    x = rng.normal(dz, 1, size=(8000, n))
    rejected = np.mean(stats.ttest_1samp(x, 0, axis=1).pvalue < 0.05)
    assert rejected == pytest.approx(t_power(dz, n), abs=0.02)


def test_the_sign_flip_test_has_about_the_t_tests_power():
    """At the t test's 80 % effect with 10 pairs the sign-flip test is close."""
    rng = np.random.default_rng(7)
    n = 10
    dz = detectable_dz(n)
    signs = np.array(list(itertools.product([1, -1], repeat=n)), dtype=float)
    x = rng.normal(dz, 1, size=(3000, n))
    flipped = signs @ x.T
    observed = x.sum(axis=1)
    greater = (flipped >= observed - 1e-9).mean(axis=0)
    less = (flipped <= observed + 1e-9).mean(axis=0)
    power = np.mean(np.minimum(1, 2 * np.minimum(greater, less)) < 0.05)
    assert 0.72 < power < 0.82


def test_sixteen_cells_with_six_seeds_cannot_give_a_verdict():
    plan = plan_power(6, 16, claim_contrasts=1, claim_sd_factor=2**0.5, sd_points=0.2)
    assert plan.cell.alpha == pytest.approx(0.05 / 16)
    assert not plan.cell.possible and plan.cell.dz is None and plan.cell.seeds_needed == 10
    # the claim is one contrast at 0.05: possible with 6 seeds
    assert plan.claim.possible and plan.claim.seeds_needed == 6
    assert plan.claim.dz == pytest.approx(detectable_dz(6))
    assert plan.claim.points == pytest.approx(detectable_dz(6) * 0.2 * 2**0.5)
    ten = plan_power(10, 16, sd_points=0.2)
    assert ten.cell.possible and ten.cell.points == pytest.approx(
        detectable_dz(10, 0.05 / 16) * 0.2
    )
    assert ten.claim is None
    assert plan_power(6, 16).model_dump(mode="json")["cell"]["possible"] is False


def test_the_warning_names_holms_step_only_where_there_are_cells_to_correct_for():
    [many] = verdict_warnings(plan_power(3, 16))
    assert many.startswith("No cell can get a verdict: with 16 cells Holm's first step tests")
    [one] = verdict_warnings(plan_power(3, 1))
    assert one == (
        "The cell cannot get a verdict: its test is at 0.05, which 3 seeds cannot reach "
        "(the smallest p they can give is 0.25); it takes at least 6 seeds."
    )
