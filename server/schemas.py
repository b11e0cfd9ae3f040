"""Request and response bodies of the REST API and the websocket stream, named by role."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from bnlab.model.config import RunConfig
from bnlab.model.events import EvalPoint, TestMetrics, finite_or_none
from bnlab.server.status import RunStatus


class RunCreate(RunConfig):
    """A run configuration and an optional label for the legend."""

    label: str | None = Field(None, max_length=100)

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


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    tensorflow: str | None
    devices: list[str]
    workers: WorkerLoad
    queue: int
