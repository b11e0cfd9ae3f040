"""What a training run reports while it runs: typed, JSON-serialisable events.

TensorFlow-free: the server and the CLI parse and forward these without it.
Non-finite floats (a diverged run) serialise as JSON `null`.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities (a diverged run) become None: not numbers JSON can carry."""
    return value if value is None or math.isfinite(value) else None


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null")

    # The discriminator; every event narrows it to its own literal. Declared here
    # so that it comes first in an event's JSON, before fields from other bases.
    type: str


class TrainingPath(StrEnum):
    """How a run was trained: alone (model.training) or in a stack (model.stacked)."""

    SINGLE = "single"
    STACKED = "stacked"


class StartEvent(_Event):
    type: Literal["start"] = "start"
    total_steps: int
    device: str = Field(description="Where training runs, e.g. CPU:0 or GPU:0")
    parameters: int = Field(description="Trainable parameter count")
    first_step: int = Field(0, description="Step a resumed run continues from (0: a fresh run)")
    kernels: dict[str, str] = Field(
        default_factory=dict,
        description="The path each tuned gradient takes, by operation and shapes "
        '(e.g. "conv2d.dx 5x5x32x64 64x14x14x64": "forward"; model.kernels)',
    )
    path: TrainingPath = Field(
        TrainingPath.SINGLE,
        description="single: the run trained alone; stacked: as one model of a stack of "
        "runs trained as one program (model.stacked)",
    )
    stack_size: int = Field(1, description="How many runs trained in the run's stack (1: alone)")


class ProbePercentiles(BaseModel):
    """15th/50th/85th percentiles over the validation set of the input to one
    fixed unit of the last hidden layer, before its nonlinearity (BN paper, Fig. 1b/c).
    A non-finite value (diverged run) travels as JSON null."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null")

    p15: float | None
    p50: float | None
    p85: float | None

    @field_validator("p15", "p50", "p85", mode="before")
    @classmethod
    def _finite_or_null(cls, value: float | None) -> float | None:
        return finite_or_none(value)


class DiagnosticsLevel(StrEnum):
    """How much of the inside of the network each evaluation records (RunConfig.diagnostics)."""

    OFF = "off"
    BASIC = "basic"  # distributions, norms, effective step, BN gap
    FULL = "full"  # and Santurkar et al.'s ICS and loss-landscape probes

    # Pydantic names a Literal's allowed values by their repr: 'basic', as for
    # the other choices, rather than <DiagnosticsLevel.BASIC: 'basic'>.
    def __repr__(self) -> str:
        return repr(self.value)


class _Finite(BaseModel):
    """A diagnostics record: frozen, and a non-finite float (a diverged run) is null."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null")

    @field_validator("*", mode="before")
    @classmethod
    def _finite_or_null(cls, value: object) -> object:
        if isinstance(value, float):
            return finite_or_none(value)
        if isinstance(value, list):
            return [finite_or_none(v) if isinstance(v, float) else v for v in value]
        return value


class Distribution(_Finite):
    """One layer's values over the validation set (all of it, or the eval subset):
    percentiles as the BN paper's Figure 1 has them, and a histogram."""

    p15: float | None
    p50: float | None
    p85: float | None
    edges: list[float] = Field(
        description="Histogram bin edges, this distribution's own, the same for the whole run"
    )
    counts: list[int] = Field(
        description="Histogram counts over `edges`; values outside the edges go into the end bins"
    )


class LayerDiagnostics(_Finite):
    """One hidden layer at one evaluation (bnlab.model.diagnostics says how each is measured)."""

    name: str = Field(
        description='The layer\'s linear part ("conv1", "conv2", "fc1"; MLP "fc1".."fc3"), '
        "the same in a BN run and its no-BN twin"
    )
    pre_bn: Distribution | None = Field(
        description="The layer's linear output before BN; None without BN"
    )
    pre_activation: Distribution = Field(
        description="The input to the nonlinearity (after BN when there is BN)"
    )
    grad_norm: float | None = Field(description="||dL/dW|| of the kernel on a training batch")
    weight_norm: float | None = Field(description="||W|| of the kernel")
    effective_step: float | None = Field(
        description="Relative step ||dW|| / ||W||, dW the update the optimizer would make "
        "now (its slots included)"
    )
    bn_gap: float | None = Field(
        description="RMS distance between the batch-statistics and moving-statistics "
        "normalisations, in units of the normalised output; None without BN"
    )
    ics_distance: float | None = Field(
        None, description="full only: ||G - G'||_2 (Santurkar et al. 2018, Definition 2.1)"
    )
    ics_cosine: float | None = Field(None, description="full only: cos(G, G')")

    @model_validator(mode="before")
    @classmethod
    def _layer_edges(cls, data: object) -> object:
        """Points stored before each distribution had its own edges kept one `edges`
        per layer, shared by both: hand it to each distribution so they still load."""
        if isinstance(data, dict) and "edges" in data:
            data = dict(data)
            edges = data.pop("edges")
            for key in ("pre_bn", "pre_activation"):
                if isinstance(data.get(key), dict) and "edges" not in data[key]:
                    data[key] = {**data[key], "edges": edges}
        return data


class Landscape(_Finite):
    """Santurkar et al.'s loss-landscape probes along the gradient g at the weights x."""

    step_multiples: list[float] = Field(description="Multiples m of the learning rate")
    losses: list[float | None] = Field(description="Loss at x - m*lr*g for each multiple")
    grad_changes: list[float | None] = Field(
        description="||g(x) - g(x - m*lr*g)||_2 for each multiple"
    )
    loss_range: float | None = Field(
        description="max(losses) - min(losses), the loss at x included; None when any "
        "probe is not finite"
    )
    grad_predictiveness: float | None = Field(
        description="The largest gradient change; None when any probe is not finite"
    )
    beta_smoothness: float | None = Field(
        description="The largest gradient change divided by the distance moved; None when "
        "any probe is not finite"
    )


class Diagnostics(_Finite):
    """What an evaluation saw inside the network (issue #17)."""

    level: DiagnosticsLevel = Field(description="basic or full (off records no object)")
    layers: list[LayerDiagnostics] = Field(description="The hidden layers in network order")
    val_acc_batch_stats: float | None = Field(
        description="Validation accuracy with BN on batch statistics, on the first "
        "BATCH_STATS_BATCHES validation batches of the training batch size; None without BN"
    )
    val_acc_moving_stats: float | None = Field(
        None,
        description="Validation accuracy with BN's moving statistics on exactly the images "
        "of val_acc_batch_stats (val_acc is on the whole set); None without BN and in "
        "points stored before it was recorded",
    )
    landscape: Landscape | None = Field(
        None, description="full only, on the evaluations full measures sample"
    )


class EvalPoint(BaseModel):
    """One evaluation of the validation set: a point of the curves. The one
    definition of its fields: the server derives its stored columns, its public
    Point and its CSV columns from them (bnlab.server.points)."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null")

    step: int = Field(description="Number of updates done before this evaluation")
    # `| None`: a non-finite value (diverged run) travels as JSON null.
    val_loss: float | None
    val_acc: float | None
    train_loss: float | None = Field(description="Mean training loss since the last eval")
    examples_per_sec: float | None = Field(description="Training throughput since the last eval")
    elapsed: float = Field(description="Seconds since training started")
    probe: ProbePercentiles
    diagnostics: Diagnostics | None = Field(
        None, description="Inside the network; None when off, or for a run stored before #17"
    )


class EvalEvent(EvalPoint, _Event):
    type: Literal["eval"] = "eval"


class ProgressEvent(_Event):
    type: Literal["progress"] = "progress"
    step: int
    total_steps: int
    elapsed: float


class TestMetrics(BaseModel):
    """Final metrics on the 10,000 test images."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null")

    test_loss: float
    test_accuracy: float
    log_loss: float = Field(description="Multiclass log loss, probabilities clipped at 1e-15")


class TestEvent(TestMetrics):
    type: Literal["test"] = "test"


class DivergedEvent(_Event):
    type: Literal["diverged"] = "diverged"
    step: int
    loss: float | None = Field(description="The non-finite loss (null in JSON)")


Event = Annotated[
    StartEvent | EvalEvent | ProgressEvent | TestEvent | DivergedEvent,
    Field(discriminator="type"),
]
event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class TrainingStopped(Exception):
    """Training ended early, on purpose or by the numbers; not a crash."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(message)
        self.step = step


class Diverged(TrainingStopped):
    def __init__(self, step: int, loss: float) -> None:
        super().__init__(step, f"training diverged at step {step} (loss = {loss})")
        self.loss = loss


class Cancelled(TrainingStopped):
    def __init__(self, step: int) -> None:
        super().__init__(step, f"training cancelled at step {step}")
