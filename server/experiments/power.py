"""Power before running: the smallest effect a design's seeds could detect.

For n seed pairs and m cells (Holm's first threshold, alpha / m, the one every
per-cell verdict must pass first; conservative for the later steps), the
smallest standardized effect d_z = mean / SD of the paired differences that the
two-sided paired t test detects with 80 % power, from the noncentral t
(`scipy.stats.nct`, `scipy.stats.t`). The sign-flip permutation test used for
verdicts has the t test's power for large n (asymptotic relative efficiency 1
under normal differences; the signed-rank test would need about 5 % more
pairs), but it is discrete: below 2 / 2**n < alpha / m no verdict is possible
at all, whatever the effect, and near that edge it has less power than the t
test (tests/server/test_power.py measures how much by simulation).

In accuracy points: d_z times an assumed SD of the paired differences (say,
from an earlier experiment; a claim's contrast that combines two differences
per seed, like an interaction, has about sqrt(2) times a cell's SD).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

from .significance import ALPHA, smallest_nonzero_pairs

# scipy: imported where used (statistics.py says why).

POWER = 0.8


def t_power(dz: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level alpha for effect d_z with n pairs."""
    from scipy import stats

    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    nc = dz * math.sqrt(n)
    # The far tail, rejecting on the wrong side, is below 1e-15 where scipy's nct.cdf
    # returns nan (at large noncentralities, scipy 1.17): count it as 0 there.
    wrong_side = float(np.nan_to_num(stats.nct.cdf(-critical, df, nc), nan=0.0))
    return float(stats.nct.sf(critical, df, nc)) + wrong_side


def detectable_dz(n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest d_z detected with `power` by n pairs; None below two pairs."""
    from scipy import optimize

    if n < 2:
        return None
    high = 1.0
    while t_power(high, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda dz: t_power(dz, n, alpha) - power, 0.0, high))


def pairs_for(dz: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """The fewest pairs that detect d_z with `power` (and can reach alpha at all)."""
    n = max(2, smallest_nonzero_pairs(alpha))
    while t_power(dz, n, alpha) < power:
        n += 1
    return n


class Detectable(BaseModel):
    alpha: float = Field(description="The level the test is decided at")
    possible: bool = Field(description="Whether these seeds can give a verdict at all")
    seeds_needed: int = Field(description="The fewest seeds that can give a verdict at this level")
    dz: float | None = Field(description="Smallest d_z detected with 80 % power")
    points: float | None = Field(description="The same in accuracy points, given `sd_points`")


class Power(BaseModel):
    seeds: int
    cells: int
    sd_points: float | None = Field(description="Assumed SD of a cell's paired differences")
    cell: Detectable = Field(description="Each cell's test, Holm-corrected over the cells")
    claim: Detectable | None = Field(description="The claim's contrasts, over its own family")


def detectable(
    seeds: int, alpha: float, sd_points: float | None, sd_factor: float = 1.0
) -> Detectable:
    possible = 2 / 2**seeds < alpha
    dz = detectable_dz(seeds, alpha) if possible else None
    return Detectable(
        alpha=alpha,
        possible=possible,
        seeds_needed=smallest_nonzero_pairs(alpha),
        dz=dz,
        points=dz * sd_points * sd_factor if dz is not None and sd_points is not None else None,
    )


def plan_power(
    seeds: int,
    cells: int,
    *,
    claim_contrasts: int | None = None,
    claim_sd_factor: float = 1.0,
    sd_points: float | None = None,
    alpha: float = ALPHA,
) -> Power:
    """What a design can detect: each cell at alpha / cells, the claim's contrasts at
    alpha / their number (`claim_sd_factor`: its per-seed value's SD over a cell's)."""
    return Power(
        seeds=seeds,
        cells=cells,
        sd_points=sd_points,
        cell=detectable(seeds, alpha / cells, sd_points),
        claim=(
            detectable(seeds, alpha / claim_contrasts, sd_points, claim_sd_factor)
            if claim_contrasts
            else None
        ),
    )


def verdict_warnings(power: Power) -> list[str]:
    """In words, each verdict these seeds can never give, whatever the runs show."""
    out = []
    if not power.cell.possible:
        # One cell has no correction: its test is at the level itself.
        lead = (
            "The cell cannot get a verdict: its test is"
            if power.cells == 1
            else f"No cell can get a verdict: with {power.cells} cells Holm's first step tests"
        )
        out.append(
            f"{lead} "
            f"at {power.cell.alpha:.3g}, which {power.seeds} seeds cannot reach (the "
            f"smallest p they can give is {2 / 2**power.seeds:.3g}); it takes at least "
            f"{power.cell.seeds_needed} seeds."
        )
    if power.claim is not None and not power.claim.possible:
        out.append(
            f"The claim cannot get a verdict: its test is decided at {power.claim.alpha:.3g}, "
            f"which {power.seeds} seeds cannot reach; it takes at least "
            f"{power.claim.seeds_needed} seeds."
        )
    return out
