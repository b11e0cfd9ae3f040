"""Many cells, one family: Holm's step-down correction of an experiment's p values.

Holm (1979) controls the chance of any false verdict among m tests under any
dependence between them. scipy has no Holm (`false_discovery_control` is
Benjamini-Hochberg, which controls a different rate), and statsmodels is not a
dependency; the adjustment is arithmetic on scipy's p values, not a test:
sorted ascending, the i-th (from 1) is compared with alpha / (m - i + 1), and the
adjusted p is max over j <= i of min(1, (m - j + 1) p_(j)).

Each p also gets the level its interval is shown at, so that the interval and
the corrected verdict agree: a rejected test's interval is at Holm's level for
its step, alpha / (m - i + 1), which its p is below; every test from the first
one Holm keeps on is shown at that step's level, which all their p are at or
above. (This is an interval per test at the level it was tested at, not a set of
simultaneous intervals.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel


class Holm(BaseModel):
    adjusted: list[float]
    alphas: list[float]  # the level each test is decided at: its interval is at 1 - alpha
    rejected: list[bool]


def holm(p_values: Sequence[float], alpha: float) -> Holm:
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted, alphas, rejected = [0.0] * m, [alpha] * m, [False] * m
    running = 0.0
    stopped_at: float | None = None  # Holm's level where it first kept a test on
    for step, index in enumerate(order):
        level = alpha / (m - step)
        running = max(running, min(1.0, (m - step) * float(p[index])))
        adjusted[index] = running
        if stopped_at is None and not p[index] < level:
            stopped_at = level
        rejected[index] = stopped_at is None
        alphas[index] = level if stopped_at is None else stopped_at
    return Holm(adjusted=adjusted, alphas=alphas, rejected=rejected)
