"""Request and response bodies of the REST API and the websocket stream, named by role."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator
from pydantic.json_schema import SkipJsonSchema

from bnlab.model.config import RunConfig
from bnlab.model.events import EvalPoint, TestMetrics, finite_or_none
from bnlab.server.cell_diagnostics import CellDiagnostics
from bnlab.server.experiment import ExperimentCreate, ExperimentStatus, Preset, Scalar
from bnlab.server.statistics import ArmName, Cell
from bnlab.server.status import RunStatus


class RunCreate(RunConfig):
    """A run configuration and an optional label for the legend."""

    label: str | None = Field(
        None,
        max_length=100,
        title="Label",
        description="Name in the legend and the runs table; made from the config when absent",
        json_schema_extra={"placeholder": "automatic"},
    )

    def config(self) -> RunConfig:
        return RunConfig(**self.model_dump(exclude={"label"}))


class ComparisonCreate(RunCreate):
    """A run configuration without `batch_norm`: the comparison trains both."""

    batch_norm: SkipJsonSchema[None] = None

    @field_validator("batch_norm", mode="before")
    @classmethod
    def _no_batch_norm(cls, value: object) -> None:
        if value is not None:
            raise ValueError("a comparison trains with and without batch norm; leave it out")
        return None

    def config(self) -> RunConfig:
        return RunConfig(**self.model_dump(exclude={"label", "batch_norm"}))


class RunPublic(BaseModel):
    id: str
    label: str
    comparison_id: str | None
    experiment_id: str | None = None
    config: RunConfig
    status: RunStatus
    step: int = Field(description="Updates done so far")
    total_steps: int
    steps_per_sec: float | None = None
    eta_seconds: float | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    test_metrics: TestMetrics | None = None
    error: str | None = None
    device: str | None = None
    last_seq: int = Field(0, description="Sequence number of the run's latest event")


class _Sequenced(BaseModel):
    seq: int = Field(description="The run's event sequence number that carried this point")


class PointPublic(EvalPoint, _Sequenced):
    """One validation evaluation (the fields of `EvalPoint`) with its sequence number,
    which comes first in the JSON: fields of the last base come first. Non-finite
    numbers are null."""

    @field_validator("*", mode="before")
    @classmethod
    def _finite_or_null(cls, value: object) -> object:
        return finite_or_none(value) if isinstance(value, float) else value


class RunList(BaseModel):
    items: list[RunPublic]
    total: int


class MetricsPublic(BaseModel):
    run_id: str
    points: list[PointPublic]


class ComparisonPublic(BaseModel):
    id: str
    created_at: datetime
    runs: list[RunPublic]


class RunSummary(BaseModel):
    test_loss: float | None
    test_accuracy: float | None
    log_loss: float | None
    best_val_acc: float | None
    best_val_acc_step: int | None
    steps_to: dict[str, int | None] = Field(
        description='First step reaching each validation accuracy, e.g. {"0.98": 1200}'
    )
    wall_time: float | None = Field(
        description="Seconds of training, evaluations included, up to the last evaluation"
    )


class RunComparison(BaseModel):
    run: RunPublic
    points: list[PointPublic]
    summary: RunSummary


class PairSpeedup(BaseModel):
    comparison_id: str
    bn: str
    no_bn: str
    speedup: float | None = Field(
        description="no-BN steps to 98 % validation accuracy / BN steps to 98 %"
    )


class CompareResult(BaseModel):
    runs: list[RunComparison]
    pairs: list[PairSpeedup]


class WorkerLoad(BaseModel):
    busy: int
    total: int


class ResourcePublic(BaseModel):
    total: float
    free: float


class RayNodePublic(BaseModel):
    """One live node of the Ray cluster and what it has."""

    id: str
    address: str
    cpus: float
    gpus: float


class ClusterPublic(BaseModel):
    """The Ray cluster the runs train on, as last seen (about once a second)."""

    address: str = Field(description="the address the server was given (--ray-address)")
    connected: bool
    error: str | None = Field(None, description="why the server is not connected, if it is not")
    nodes: list[RayNodePublic] = []
    cpus: ResourcePublic | None = None
    gpus: ResourcePublic | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    tensorflow: str | None
    devices: list[str]
    workers: WorkerLoad
    queue: int
    executor: Literal["process", "ray"]
    cluster: ClusterPublic | None = Field(None, description="with --executor ray")


# -- experiments ---------------------------------------------------------------------


class ExperimentProgress(BaseModel):
    """How far an experiment's runs have got."""

    runs: dict[RunStatus, int] = Field(description="Runs by status (statuses with none left out)")
    steps: int = Field(description="Updates done so far, over every run")
    total_steps: int


class ExperimentOverview(BaseModel):
    """An experiment without its runs and cells: a row of `GET /api/experiments`."""

    id: str
    label: str | None
    created_at: datetime
    design: ExperimentCreate
    status: ExperimentStatus
    progress: ExperimentProgress
    last_seq: int = Field(0, description="Sequence number of the experiment stream's latest update")


class ExperimentPublic(ExperimentOverview):
    """An experiment, its runs (in the order they were queued) and the answer so far."""

    runs: list[RunPublic]
    cells: list[Cell] = Field(description="Computed from the runs finished so far")


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
        description="What the estimate had to assume, in words (bnlab.server.estimate)",
    )


class ExperimentRunRow(BaseModel):
    """One run in an experiment's export: its place in the design and its summary."""

    run_id: str
    factors: dict[str, Scalar]
    seed: int
    arm: ArmName
    status: RunStatus
    summary: RunSummary


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
    at every evaluation step (bnlab.server.cell_diagnostics has the rules)."""

    id: str
    layers: list[str] = Field(description="Every layer the runs recorded, in network order")
    layer: str | None = Field(description="The one layer the means are of; None: every layer")
    cells: list[CellDiagnostics] = Field(description="In the design's order")


# -- websocket messages (server to client) ------------------------------------------
# The stream sends these and nothing else; docs/api.md describes them. Each is
# serialised by `StreamMessage.text()`.


class StreamMessage(BaseModel):
    def text(self) -> str:
        # json.dumps of the JSON-mode dump, not model_dump_json: the frames keep the
        # spacing and key order they have always had, byte for byte.
        return json.dumps(self.model_dump(mode="json"))


class SnapshotMessage(StreamMessage):
    """A run stream's first message: the run and every point after the client's after_seq."""

    type: Literal["snapshot"] = "snapshot"
    seq: int
    run: RunPublic
    points: list[PointPublic]


class EvalMessage(StreamMessage):
    """A new validation point."""

    type: Literal["eval"] = "eval"
    seq: int
    point: PointPublic
    sent_at: float | None = Field(description="Unix time the worker reported the point")


# What happened to a run: progress (about once a second), a status change, test metrics.
RunEventKind = Literal["progress", "status", "test"]


class RunEventMessage(StreamMessage):
    """The run's state after an event of one of the RunEventKind kinds."""

    type: RunEventKind
    seq: int
    run: RunPublic


class DeletedMessage(StreamMessage):
    """The run is gone; on a run stream, the last message before close code 4404."""

    type: Literal["deleted"] = "deleted"
    id: str


class RunsMessage(StreamMessage):
    """The runs stream's first message: the newest runs."""

    type: Literal["runs"] = "runs"
    runs: list[RunPublic]


class RunChangedMessage(StreamMessage):
    """On the runs stream: a run was created or its status or progress changed."""

    type: Literal["run"] = "run"
    run: RunPublic


class ExperimentSnapshotMessage(StreamMessage):
    """An experiment stream's first message: the experiment as it is now."""

    type: Literal["experiment_snapshot"] = "experiment_snapshot"
    seq: int
    experiment: ExperimentPublic


class ExperimentMessage(StreamMessage):
    """The whole experiment again, after one of its runs started, ended or was resumed."""

    type: Literal["experiment"] = "experiment"
    seq: int
    experiment: ExperimentPublic


class ExperimentProgressMessage(StreamMessage):
    """Progress of the experiment's runs, about once a second while they train."""

    type: Literal["experiment_progress"] = "experiment_progress"
    seq: int
    id: str
    status: ExperimentStatus
    progress: ExperimentProgress


ServerMessage = Annotated[
    SnapshotMessage
    | EvalMessage
    | RunEventMessage
    | DeletedMessage
    | RunsMessage
    | RunChangedMessage
    | ExperimentSnapshotMessage
    | ExperimentMessage
    | ExperimentProgressMessage,
    Field(discriminator="type"),
]
# Reads a frame back into its message (clients in Python, tests).
server_message = TypeAdapter(ServerMessage)
