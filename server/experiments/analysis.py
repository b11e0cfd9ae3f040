"""An experiment's analysis: its claim's verdict and its cells, from its runs.

The one place the design's claim and margin meet the runs' results, so the API,
`bnlab experiment` and `bnlab analyze` (an exported experiment re-analysed
offline) say the same thing about the same runs. An experiment whose seeds were
extended after it ended says so in every verdict: its p-values were computed as
if the number of seeds had been fixed in advance, and they were not.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from ...model.config import ArmName
from ..status import RunStatus
from .claims import ClaimResult, evaluate_claim
from .design import ExperimentCreate, ExperimentStatus, Scalar
from .statistics import TEST_IMAGES, Cell, CurvePoint, RunResult, summarize_cells

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


# --- an exported experiment, re-analysed ------------------------------------------------


class ExportError(Exception):
    """The export could not be read or analysed; the message names the file and field."""


class _ExportSummary(BaseModel):
    test_accuracy: float | None = None


class _ExportRun(BaseModel):
    """What the analysis reads of a run row of `GET /api/experiments/{id}/export`."""

    run_id: str
    factors: dict[str, Scalar]
    seed: int = Field(ge=0)
    arm: ArmName
    status: RunStatus
    test_correct: int | None = Field(None, ge=0, le=TEST_IMAGES)
    summary: _ExportSummary = Field(default_factory=_ExportSummary)


class _ExportPoint(BaseModel):
    run_id: str
    step: int
    val_acc: float | None = None
    val_loss: float | None = None


class _ExportExperiment(BaseModel):
    design: ExperimentCreate
    status: ExperimentStatus = ExperimentStatus.COMPLETED
    seeds_added_after_looking: bool = False


class _Export(BaseModel):
    experiment: _ExportExperiment
    runs: list[_ExportRun] = Field(min_length=1)
    curves: list[_ExportPoint] = Field(default_factory=list)


def read_export(path: Path) -> tuple[_Export, list[RunResult]]:
    """An exported experiment (the JSON export) and its runs as the statistics see them.

    A run's count of correct test images is its `test_correct`, else its
    `summary.test_accuracy` x 10,000; an export where the two disagree was edited
    in one place only, and which one was meant cannot be told: ExportError."""
    try:
        # Gzipped as kept beside the results (bench/preset-exports/), or as downloaded.
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        document = json.loads(raw.decode())
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot read it as JSON: {exc}") from None
    try:
        export = _Export.model_validate(document)
    except ValidationError as exc:
        raise ExportError(f"{path}: {_fields(exc)}") from None
    curves: dict[str, list[CurvePoint]] = {}
    for point in export.curves:
        curves.setdefault(point.run_id, []).append(
            CurvePoint(step=point.step, val_acc=point.val_acc, val_loss=point.val_loss)
        )
    design = export.experiment.design
    cells = design.cells()
    results = []
    for i, run in enumerate(export.runs):
        if run.factors not in cells:
            raise ExportError(
                f"{path}: runs.{i}.factors: {run.factors} is not a cell of the design"
            )
        accuracy = run.summary.test_accuracy
        derived = None if accuracy is None else round(accuracy * TEST_IMAGES)
        if run.test_correct is not None and derived is not None and derived != run.test_correct:
            raise ExportError(
                f"{path}: runs.{i}: test_correct ({run.test_correct}) and "
                f"summary.test_accuracy ({accuracy} = {derived} of {TEST_IMAGES}) "
                "disagree; edit both, or set one to null"
            )
        results.append(
            RunResult(
                factors=run.factors,
                seed=run.seed,
                arm=run.arm,
                status=run.status,
                test_accuracy=accuracy,
                test_correct=run.test_correct,
                curve=sorted(curves.get(run.run_id, []), key=lambda p: p.step),
            )
        )
    # The cells in the design's order, whatever order the rows were in.
    results.sort(key=lambda r: cells.index(r.factors))
    return export, results


def _fields(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'document'}: "
        + item["msg"].removeprefix("Value error, ")
        for item in error.errors()
    )


def analyze_export(path: Path) -> tuple[ExperimentCreate, Analysis]:
    """Every figure and verdict of an exported experiment, recomputed offline."""
    export, results = read_export(path)
    experiment = export.experiment
    analysis = analyze(
        experiment.design,
        results,
        live=experiment.status in (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING),
        seeds_added_after_looking=experiment.seeds_added_after_looking,
    )
    return experiment.design, analysis
