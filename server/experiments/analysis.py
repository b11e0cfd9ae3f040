"""An experiment's analysis: its claim's verdict and its cells, from its runs.

The one place the design's claim and margin meet the runs' results, so the API,
`bnlab experiment` and `bnlab analyze` (an exported experiment re-analysed
offline) say the same thing about the same runs. An experiment whose seeds were
extended after it ended says so in every verdict: its p-values were computed as
if the number of seeds had been fixed in advance, and they were not.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from .claims import ClaimResult, evaluate_claim
from .design import ExperimentCreate
from .statistics import Cell, RunResult, summarize_cells

ADDED_AFTER_LOOKING = (
    "Seeds were added after the first results were seen, so these p-values are "
    "optimistic (the number of seeds was not fixed in advance)."
)


class Analysis(BaseModel):
    """What the API shows of an experiment's results: the claim, then the cells."""

    claim: ClaimResult | None = Field(
        description="The design's claim, evaluated (None: the design states none)"
    )
    cells: list[Cell] = Field(description="Each cell's effect, Holm-corrected over the cells")
    seeds_added_after_looking: bool = Field(
        False, description="Seeds were added after the experiment ended; every verdict says so"
    )


def analyze(
    design: ExperimentCreate,
    runs: Sequence[RunResult],
    *,
    live: bool = False,
    seeds_added_after_looking: bool = False,
) -> Analysis:
    """The claim's verdict and every cell's, from the runs (in the design's cell order).
    `live`: the experiment is still running, so every verdict is provisional."""
    cells = summarize_cells(runs, live=live, margin=design.margin)
    claim = evaluate_claim(design.claim, runs, live=live) if design.claim else None
    if seeds_added_after_looking:
        cells = [
            cell.model_copy(
                update={
                    "effect": cell.effect.model_copy(
                        update={"sentence": f"{cell.effect.sentence} {ADDED_AFTER_LOOKING}"}
                    )
                }
            )
            for cell in cells
        ]
        if claim is not None:
            claim = claim.model_copy(update={"sentence": f"{claim.sentence} {ADDED_AFTER_LOOKING}"})
    return Analysis(claim=claim, cells=cells, seeds_added_after_looking=seeds_added_after_looking)
