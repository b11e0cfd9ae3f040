"""The significance level every verdict is decided at, the seed floor it implies and
the default equivalence margin: arithmetic only, so the design (which carries the
claim) and the statistics (which test it) share them without importing each other."""

from __future__ import annotations

import math

ALPHA = 0.05  # every verdict's significance level
DEFAULT_MARGIN = 0.005  # ±0.5 accuracy points: "no difference" means within this


def smallest_nonzero_pairs(alpha: float) -> int:
    """The fewest pairs with a nonzero difference for which the paired sign-flip
    test's smallest p, 2 / 2**n, is below alpha (arithmetic: `bnlab --help` builds
    the design's flags without loading scipy)."""
    return max(1, math.floor(math.log2(2 / alpha)) + 1)


# The fewest seeds per cell that can give a verdict in a cell tested alone.
MIN_PAIRS = smallest_nonzero_pairs(ALPHA)
