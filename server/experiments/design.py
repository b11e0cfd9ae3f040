"""An experiment: the one home of its design, its expansion into runs, its status
rule and the presets that test each of Batch Normalization's claims.

A design is a base run (every run field but `batch_norm` and `seed`), up to two
varied fields with a few values each, and a number of seeds. Every combination
of the varied values is a *cell*; each cell trains every seed with and without
BN, the two twins built by `RunConfig.twin()`: same seed, initial weights and
batch order, so the statistics can pair them by seed. Run bounds live only in
`RunConfig`: every value here is checked by building the runs it makes.

TensorFlow-free; the server and `bnlab experiment` both use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from enum import StrEnum

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from ...model.config import PAPER_MLP, ArmName, RunConfig
from ..status import RunStatus
from .contrasts import Claim
from .significance import ALPHA, DEFAULT_MARGIN, MIN_PAIRS, smallest_nonzero_pairs

__all__ = [  # re-exported: the design is where callers look for its level and floor
    "ALPHA",
    "MIN_PAIRS",
    "smallest_nonzero_pairs",
]

MAX_VARIED = 2
MAX_VALUES = 8
MAX_SEEDS = 20
MAX_RUNS = 200
# The experiment sets these in every run itself: seeds count 0..n-1, and each
# seed trains both with and without BN.
PER_RUN = {
    "batch_norm": "every cell trains with and without batch norm",
    "seed": "set the number of seeds with `seeds`",
}

Scalar = bool | int | float | str | None


def _error_text(error: ValidationError) -> str:
    """`field: message; ...` from a RunConfig ValidationError."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'run'}: "
        + item["msg"].removeprefix("Value error, ")
        for item in error.errors()
    )


class RunBase(RunConfig):
    """Every run field but `batch_norm` and `seed`, which the experiment sets."""

    batch_norm: SkipJsonSchema[None] = Field(None, exclude=True)
    seed: SkipJsonSchema[None] = Field(None, exclude=True)

    @field_validator("batch_norm", "seed", mode="before")
    @classmethod
    def _set_by_the_experiment(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(f"the experiment sets it: {PER_RUN[info.field_name]}")
        return None

    def fields(self) -> dict[str, object]:
        return self.model_dump(exclude=set(PER_RUN))


class PlannedRun(BaseModel):
    """One run of an experiment: its cell, seed, arm and configuration."""

    model_config = ConfigDict(frozen=True)

    factors: dict[str, Scalar]
    seed: int
    arm: ArmName
    config: RunConfig


class ExperimentCreate(BaseModel):
    """What `POST /api/experiments` takes (and a preset's `design`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = Field(None, max_length=100)
    base: RunBase = Field(default_factory=RunBase, description="Every run's fields")
    vary: dict[str, list[Scalar]] = Field(
        default_factory=dict,
        description=f"0-{MAX_VARIED} run fields, each with 1-{MAX_VALUES} distinct values",
    )
    seeds: int = Field(
        MIN_PAIRS,
        ge=1,
        le=MAX_SEEDS,
        strict=True,
        description=f"Seeds 0..n-1 in every cell; {MIN_PAIRS} is the fewest that can give a "
        "verdict",
    )

    margin: float = Field(
        DEFAULT_MARGIN,
        gt=0,
        le=0.05,
        description="Equivalence margin in accuracy (0.005 = ±0.5 points): a cell says "
        "'no difference' only when its difference is shown to lie within it",
    )
    claim: Claim | None = Field(
        None, description="What the experiment sets out to show and the contrasts that test it"
    )

    @field_validator("vary")
    @classmethod
    def _valid_vary(
        cls, vary: dict[str, list[Scalar]], info: ValidationInfo
    ) -> dict[str, list[Scalar]]:
        base: RunBase | None = info.data.get("base")
        if len(vary) > MAX_VARIED:
            raise ValueError(f"at most {MAX_VARIED} fields, not {len(vary)} ({', '.join(vary)})")
        normalized: dict[str, list[Scalar]] = {}
        for field, values in vary.items():
            if field in PER_RUN:
                raise ValueError(f"{field} cannot be varied: {PER_RUN[field]}")
            if field not in RunConfig.model_fields:
                raise ValueError(f"{field} is not a run field")
            if base is not None and field in base.model_fields_set:
                raise ValueError(f"{field} is set in base too; give its values only here")
            if not 1 <= len(values) <= MAX_VALUES:
                raise ValueError(f"{field}: give 1 to {MAX_VALUES} values, not {len(values)}")
            normalized[field] = [_checked_value(base, field, value) for value in values]
            seen = []
            for value in normalized[field]:
                if value in seen:
                    raise ValueError(f"{field}: {value!r} is listed twice")
                seen.append(value)
        if base is not None:
            # Each value passed alone; a combination may still break a rule
            # between fields (steps and eval_every: at most 1,000 evaluations).
            for factors in _cells(normalized):
                try:
                    RunConfig(**{**base.fields(), **factors})
                except ValidationError as exc:
                    cell = ", ".join(f"{k}={v!r}" for k, v in factors.items())
                    raise ValueError(f"the cell {cell}: {_error_text(exc)}") from None
        return normalized

    @field_validator("seeds")
    @classmethod
    def _at_most_max_runs(cls, seeds: int, info: ValidationInfo) -> int:
        vary = info.data.get("vary")
        if vary is None:  # vary itself was invalid
            return seeds
        cells = len(list(_cells(vary)))
        runs = cells * seeds * 2
        if runs > MAX_RUNS:
            raise ValueError(
                f"{cells} cell(s) x {seeds} seeds x 2 arms = {runs} runs, more than {MAX_RUNS}"
            )
        return seeds

    @model_validator(mode="after")
    def _claim_fits(self) -> ExperimentCreate:
        # Raised as a ValidationError of its own so the 422 names the exact field
        # (claim.contrasts.0.cell.activation), not just `claim`.
        if self.claim is not None and (misfits := self.claim.misfits(self.vary)):
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", message),
                        loc=("claim", *where),
                        input=self.claim.model_dump(mode="json"),
                    )
                    for where, message in misfits
                ],
            )
        return self

    @field_serializer("base")
    def _base_without_varied(self, base: RunBase, info: SerializationInfo) -> dict[str, object]:
        # A varied field's base value means nothing: leaving it out lets a
        # client post a design back as it got it (a preset, edited or not).
        return base.model_dump(mode=info.mode, exclude=set(self.vary))

    def cells(self) -> list[dict[str, Scalar]]:
        """Every combination of the varied values, the first field varying slowest."""
        return list(_cells(self.vary))

    def runs(self) -> list[PlannedRun]:
        """Cells x seeds x (BN, its no-BN twin), in that order."""
        planned = []
        for factors in self.cells():
            for seed in range(self.seeds):
                bn = RunConfig(**{**self.base.fields(), **factors}, seed=seed, batch_norm=True)
                planned.append(PlannedRun(factors=factors, seed=seed, arm=ArmName.BN, config=bn))
                planned.append(
                    PlannedRun(factors=factors, seed=seed, arm=ArmName.NO_BN, config=bn.twin())
                )
        return planned


def _cells(vary: dict[str, list[Scalar]]) -> Iterable[dict[str, Scalar]]:
    fields = list(vary)
    for values in itertools.product(*(vary[f] for f in fields)):
        yield dict(zip(fields, values, strict=True))


def _checked_value(base: RunBase | None, field: str, value: Scalar) -> Scalar:
    """`value` as RunConfig stores it (1 -> 1.0 for a float field), or a clear error."""
    try:
        config = RunConfig(**{**(base.fields() if base else {}), field: value})
    except ValidationError as exc:
        message = "; ".join(
            (f"{e['loc'][0]}: " if e["loc"] != (field,) else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ValueError(f"{field}: {value!r} is not allowed: {message}") from None
    return getattr(config, field)


# --- the status rule --------------------------------------------------------------------


class ExperimentStatus(StrEnum):
    QUEUED = "queued"  # no run has started yet
    RUNNING = "running"  # some run is queued or running, and not all are waiting
    COMPLETED = "completed"  # every run ended, whatever each run's outcome
    CANCELLED = "cancelled"  # ended, with runs cancelled
    INTERRUPTED = "interrupted"  # ended, with runs the server's stop left unfinished


def experiment_status(statuses: Iterable[RunStatus]) -> ExperimentStatus:
    """The experiment's status from its runs'. Interrupted wins over cancelled
    once nothing is active, so the experiment shows it can be resumed."""
    statuses = [RunStatus(s) for s in statuses]
    if not statuses:
        raise ValueError("an experiment has at least one run")
    if all(s is RunStatus.QUEUED for s in statuses):
        return ExperimentStatus.QUEUED
    if any(s.active for s in statuses):
        return ExperimentStatus.RUNNING
    if RunStatus.INTERRUPTED in statuses:
        return ExperimentStatus.INTERRUPTED
    if RunStatus.CANCELLED in statuses:
        return ExperimentStatus.CANCELLED
    return ExperimentStatus.COMPLETED


# --- presets ----------------------------------------------------------------------------


class Preset(BaseModel):
    name: str
    title: str
    hypothesis: str
    design: ExperimentCreate


def _paper_mlp(varied: str | None = None, **fields: object) -> RunBase:
    """The paper's MLP as a base, without the field the preset varies."""
    recipe = {k: v for k, v in PAPER_MLP.items() if k != varied}
    return RunBase(**recipe | fields)


# Sized from timings on a 2-core CPU (bench/RESULTS.md, "Experiments" and "Stacked
# training"). Each estimate below is for two workers, start-ups included.
#
# The MLP presets train as stacks (issue #27), which makes seeds cheap: 12 seed pairs let
# each cell's test, after Holm's correction over 4-5 cells, detect an effect of about 1.1
# standard deviations of the seed-to-seed differences with 80 % power (8 seeds: 1.5;
# server/experiments/power.py), within about 8 minutes a preset. The CNN (`speed`) does
# not stack on a CPU and keeps the fewest seeds that can give a verdict.
SEEDS_STACKED = 12
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        Preset(
            name="speed",
            title="BN trains faster",
            hypothesis="With BN the seed CNN reaches 97 % validation accuracy in fewer steps "
            "than the same network without it.",
            # 12 runs x 1,000 steps = 12,000 CNN steps: 21.5 min on 2 cores (the CNN trains
            # one run per worker on a CPU: grouped convolutions did not pay there). At the
            # recipe's pace BN's runs pass 97 % at a median of step 400 and no-BN's at 700
            # (bench/RESULTS.md, "Experiments", 2026-11-28), so 1,000 steps see both arms
            # get there; 98 % (800 against 1,400) needed 1,800 steps and 29 minutes.
            design=ExperimentCreate(
                label="speed",
                base=RunBase(steps=1000, eval_every=100),
                seeds=6,
                claim=Claim(
                    statement="BN reaches 97 % validation accuracy in fewer steps",
                    contrasts=[{"kind": "milestone", "accuracy": 0.97}],
                ),
            ),
        ),
        Preset(
            name="learning-rate",
            title="BN allows much higher learning rates",
            hypothesis="At learning rates far above the usual one, the paper's MLP still "
            "trains with BN and fails without it.",
            # 96 runs x 4,000 steps, as two stacks of 48 (BN, no-BN): 7.6 min measured
            # (bench/RESULTS.md, "Experiments", 2026-12-07).
            design=ExperimentCreate(
                label="learning-rate",
                base=_paper_mlp("learning_rate", steps=4000, eval_every=200),
                vary={"learning_rate": [0.05, 0.5, 5.0, 50.0]},
                seeds=SEEDS_STACKED,
                # Accuracy varies less across the rates with BN, and at 5.0, ten times
                # the usual rate, the no-BN twin is the one that diverges.
                claim=Claim(
                    statement="BN keeps the MLP trainable across learning rates; without it, "
                    "high rates make it diverge",
                    contrasts=[
                        {"kind": "sensitivity", "factor": "learning_rate"},
                        {"kind": "divergence", "cell": {"learning_rate": 5.0}},
                    ],
                ),
            ),
        ),
        Preset(
            name="initialization",
            title="With BN, initialisation matters less",
            hypothesis="Initial weights 100 times too small or too large leave the MLP "
            "trainable with BN and cripple it without.",
            # 120 runs x 4,000 steps, as stacks of 60: 8.0 min measured.
            design=ExperimentCreate(
                label="initialization",
                base=_paper_mlp(steps=4000, eval_every=200),
                vary={"init_scale": [0.01, 0.1, 1.0, 10.0, 100.0]},
                seeds=SEEDS_STACKED,
                claim=Claim(
                    statement="Test accuracy varies less across initial scales with BN",
                    contrasts=[{"kind": "sensitivity", "factor": "init_scale"}],
                ),
            ),
        ),
        Preset(
            name="saturating",
            title="BN makes saturating nonlinearities trainable",
            hypothesis="With sigmoid or tanh units BN's gain over no-BN is larger than with "
            "ReLU, which does not saturate.",
            # 72 runs x 4,000 steps; each activation its own stacks of 12: 4.8 min measured.
            design=ExperimentCreate(
                label="saturating",
                base=_paper_mlp(steps=4000, eval_every=200),
                vary={"activation": ["sigmoid", "tanh", "relu"]},
                seeds=SEEDS_STACKED,
                # Differences in differences, per seed: "significant with sigmoid, not
                # with ReLU" would not be evidence of a difference between them.
                claim=Claim(
                    statement="BN's gain is larger with sigmoid and with tanh than with ReLU",
                    contrasts=[
                        {
                            "kind": "interaction",
                            "factor": "activation",
                            "level": "sigmoid",
                            "reference": "relu",
                        },
                        {
                            "kind": "interaction",
                            "factor": "activation",
                            "level": "tanh",
                            "reference": "relu",
                        },
                    ],
                ),
            ),
        ),
        Preset(
            name="regularization",
            title="BN regularises",
            hypothesis="Trained on 2,000 images, where a network overfits, the MLP with BN "
            "and no dropout generalises at least as well as without BN with dropout.",
            # 48 runs x 4,000 steps, as two stacks of 24: 2.8 min measured.
            design=ExperimentCreate(
                label="regularization",
                base=_paper_mlp("dropout", steps=4000, eval_every=200, train_subset=2000),
                vary={"dropout": [0.0, 0.5]},
                seeds=SEEDS_STACKED,
                # Tested as "better": "at least as well" would need a non-inferiority
                # margin; an inconclusive verdict is what a tie gives.
                claim=Claim(
                    statement="BN without dropout generalises better than no BN with dropout",
                    contrasts=[
                        {
                            "kind": "cross_cell",
                            "minuend": {"cell": {"dropout": 0.0}, "arm": "bn"},
                            "subtrahend": {"cell": {"dropout": 0.5}, "arm": "no_bn"},
                        }
                    ],
                ),
            ),
        ),
    ]
}
