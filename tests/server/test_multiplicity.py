"""Holm's correction against a hand computation, and 16 null cells simulated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bnlab.server.experiments.multiplicity import holm
from bnlab.server.experiments.paired import SignFlip


def test_holm_adjusted_p_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    got = holm(p, 0.05)
    # sorted: 0.005, 0.01, 0.03, 0.04; times 4, 3, 2, 1; running maximum
    # 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert got.adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert got.rejected == [True, False, False, True]
    # the rejected are decided at their step's level, the rest where Holm stopped
    assert got.alphas == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])


def test_holm_of_one_is_the_test_itself():
    got = holm([0.03], 0.05)
    assert (got.adjusted, got.rejected, got.alphas) == ([0.03], [True], [0.05])


def test_rejected_exactly_when_the_adjusted_p_is_below_alpha_and_at_its_level():
    rng = np.random.default_rng(4)
    for _ in range(300):
        p = rng.uniform(0, 0.1, size=int(rng.integers(1, 17))) ** 2
        got = holm(list(p), 0.05)
        for pi, adjusted, level, rejected in zip(
            p, got.adjusted, got.alphas, got.rejected, strict=True
        ):
            assert rejected == (adjusted < 0.05)
            assert rejected == (pi < level)  # the interval at `level` agrees


def _null_p_values(n_seeds: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided sign-flip p of null cells, computed a second way: every sign
    pattern as a matrix (the module counts subset means instead)."""
    signs = np.array(list(itertools.product([1, -1], repeat=n_seeds)), dtype=float)
    d = np.round(rng.normal(0, 15, size=(cells, n_seeds)))  # correct images
    p = np.empty(cells)
    for start in range(0, cells, 2000):  # a few MB at a time
        chunk = d[start : start + 2000]
        observed = chunk.sum(axis=1)
        flipped = signs @ chunk.T  # (patterns, cells)
        greater = (flipped >= observed - 1e-9).mean(axis=0)
        less = (flipped <= observed + 1e-9).mean(axis=0)
        p[start : start + 2000] = np.minimum(1, 2 * np.minimum(greater, less))
    return p, d


def test_sixteen_null_cells_keep_the_chance_of_any_false_verdict_near_five_percent():
    rng = np.random.default_rng(5)
    experiments, cells, n_seeds = 2000, 16, 10
    p, d = _null_p_values(n_seeds, experiments * cells, rng)
    for i in range(20):  # the second way agrees with the module
        assert SignFlip(d[i]).p() == pytest.approx(p[i])
    p = p.reshape(experiments, cells)
    uncorrected = np.mean((p < 0.05).any(axis=1))
    corrected = np.mean([any(holm(list(row), 0.05).rejected) for row in p])
    print(f"any false verdict: {uncorrected:.3f} uncorrected, {corrected:.3f} with Holm")
    assert uncorrected > 0.4  # about half the null experiments "find" something
    # at most 5 %, give or take the simulation's error (sd 0.5 % at 2,000)
    assert corrected <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / experiments)
    assert corrected > 0.005  # and the test has some chance to fire at all
