"""Request and response bodies of the run resources (runs, comparisons, compare), named by role.

They live with the run service, which builds them; the web layer only serves them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from ...model.config import RunConfig
from ...model.events import TestMetrics, TrainingPath
from ..status import RunStatus
from ..storage.points import PointPublic


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
    path: TrainingPath | None = Field(
        None, description="How the run trained: alone, or stacked with others (issue #27)"
    )
    stack_size: int | None = Field(None, description="Runs in its stack (1: alone)")
    last_seq: int = Field(0, description="Sequence number of the run's latest event")


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
    """BN and no-BN twins: a comparison's two runs, or an experiment's runs of one cell
    and seed (`runs.compare.twins_key`)."""

    comparison_id: str | None = Field(description="The comparison; null for an experiment's")
    experiment_id: str | None = None
    bn: str
    no_bn: str
    speedup: float | None = Field(
        description="no-BN steps to 98 % validation accuracy / BN steps to 98 %"
    )


class CompareResult(BaseModel):
    runs: list[RunComparison]
    pairs: list[PairSpeedup]
