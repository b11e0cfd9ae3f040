"""Response bodies of the experiment resources, named by role (the request body,
`ExperimentCreate`, is the design itself: bnlab.server.experiments.design)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ...model.config import ArmName
from ..runs.schemas import RunPublic, RunSummary
from ..status import RunStatus
from ..storage.points import PointPublic
from .cell_means import CellDiagnostics
from .claims import ClaimResult
from .design import MAX_SEEDS, ExperimentCreate, ExperimentStatus, Preset, Scalar
from .power import Power
from .statistics import Cell


class ExperimentProgress(BaseModel):
    """How far an experiment's runs have got."""

    runs: dict[RunStatus, int] = Field(description="Runs by status (statuses with none left out)")
    steps: int = Field(description="Updates done so far, over every run")
    total_steps: int
    eta_seconds: float | None = Field(
        None,
        description="Seconds left for the queued and running runs, by the model "
        "POST /api/experiments/plan estimates with; null when done or when it cannot tell",
    )


class ExperimentOverview(BaseModel):
    """An experiment without its runs and cells: a row of `GET /api/experiments`."""

    id: str
    label: str | None
    created_at: datetime
    design: ExperimentCreate
    status: ExperimentStatus
    progress: ExperimentProgress
    last_seq: int = Field(0, description="Sequence number of the experiment stream's latest update")
    seeds_added_after_looking: bool = Field(
        False,
        description="Seeds were added after the experiment ended (POST .../seeds): every "
        "verdict says so, since its p-values assume the number of seeds was fixed in advance",
    )


class ExperimentPublic(ExperimentOverview):
    """An experiment, its runs (in the order they were queued) and the answer so far."""

    runs: list[RunPublic]
    claim: ClaimResult | None = Field(
        None,
        description="The design's claim, evaluated: the experiment's headline (None: the "
        "design states no claim); provisional while runs are still going",
    )
    cells: list[Cell] = Field(
        description="Computed from the runs finished so far, Holm-corrected over the cells"
    )


class ExperimentList(BaseModel):
    items: list[ExperimentOverview]


class PresetList(BaseModel):
    items: list[Preset]


class ExperimentPlan(BaseModel):
    """What a design would start, before it is started: `POST /api/experiments/plan`."""

    cells: int
    runs: int
    total_steps: int
    workers: int = Field(description="Runs this server trains at once")
    estimated_seconds: float | None = Field(
        description="From the speed of the runs this server finished; None: unknown "
        "(no finished run of a planned architecture)"
    )
    basis: dict[str, int] = Field(description="Completed runs the estimate read, by architecture")
    assumptions: list[str] = Field(
        default_factory=list,
        description="What the estimate had to assume, in words (bnlab.server.experiments.estimate)",
    )
    power: Power = Field(
        description="The smallest effect each cell's test and the claim's could detect "
        "with these seeds, after correction"
    )
    warnings: list[str] = Field(
        default_factory=list, description="Verdicts these seeds can never give, in words"
    )


class ExperimentRunRow(BaseModel):
    """One run in an experiment's export: its place in the design and its summary."""

    run_id: str
    factors: dict[str, Scalar]
    seed: int
    arm: ArmName
    status: RunStatus
    test_correct: int | None = Field(
        description="Correct test images, the count every verdict is computed from. The "
        "store records the accuracy only, so this is round(test_accuracy x 10,000 test "
        "images); `bnlab analyze` refuses a row whose two disagree (edit both, or null one)"
    )
    summary: RunSummary


class SeedsAdd(BaseModel):
    """`POST /api/experiments/{id}/seeds`: seeds to add to an ended experiment."""

    model_config = {"extra": "forbid"}

    seeds: int = Field(ge=1, le=MAX_SEEDS, strict=True, description="New seeds in every cell")


class ExperimentCurveRow(PointPublic):
    """One evaluation of one run, in long form: the run, its place, then the point."""

    run_id: str
    factors: dict[str, Scalar]
    seed: int
    arm: ArmName


class ExperimentExport(BaseModel):
    experiment: ExperimentOverview
    runs: list[ExperimentRunRow]
    curves: list[ExperimentCurveRow]


class ExperimentDiagnostics(BaseModel):
    """Inside the network, per cell and arm: each diagnostics series' mean over the seeds
    at every evaluation step (bnlab.server.experiments.cell_means has the rules)."""

    id: str
    layers: list[str] = Field(description="Every layer the runs recorded, in network order")
    layer: str | None = Field(description="The one layer the means are of; None: every layer")
    cells: list[CellDiagnostics] = Field(description="In the design's order")
