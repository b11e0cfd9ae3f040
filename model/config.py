"""The run configuration: the one home of every training knob and its bounds.

TensorFlow-free, so the server can validate requests without importing it.
The bounds are what a user may ask for; they also keep any single request from
exhausting the machine (a run is at most 100,000 steps and 1,000 evaluations).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from . import stack_paths
from .events import DiagnosticsLevel

MAX_STEPS = 100_000
MAX_EVALS = 1_000
TRAIN_SIZE = 55_000
# Fields added after runs were first stored, each with the value that means what
# a stored config without it meant (max_shift: those runs trained unshifted;
# activation None: each network's own nonlinearity; init_scale 1: the weights
# every run had before the knob existed; diagnostics off: nothing was recorded).
ADDED_FIELDS = {"max_shift": 0, "activation": None, "init_scale": 1.0, "diagnostics": "off"}

Arch = Literal["cnn", "mlp"]
OptimizerName = Literal["adagrad", "sgd", "momentum", "adam"]
Activation = Literal["relu", "sigmoid", "tanh"]
# The enum's members as a Literal: flags and the form offer a Literal's values as choices.
Diagnostics = Literal[DiagnosticsLevel.OFF, DiagnosticsLevel.BASIC, DiagnosticsLevel.FULL]


def _evaluations(steps: int, eval_every: int) -> int:
    """How many evaluations a run makes: step 0, every eval_every, and the last step."""
    return -(-steps // eval_every) + 1


class ArmName(StrEnum):
    """The two arms of a comparison or an experiment: a run with batch norm and its
    twin without (`RunConfig.twin`). The one home of the names, from the store to the
    page (frontend/js/arms.js mirrors them)."""

    BN = "bn"
    NO_BN = "no_bn"

    @classmethod
    def of(cls, batch_norm: bool) -> ArmName:
        return cls.BN if batch_norm else cls.NO_BN


# The BN paper's MLP (section 4.1): 3 x 100 sigmoid, SGD, batch 60, images as they
# are, no dropout; SGD at 0.5, as BN Lab's "Paper MLP" preset has it. The fields
# that differ from the seed recipe (the defaults below).
PAPER_MLP = {
    "arch": "mlp",
    "optimizer": "sgd",
    "learning_rate": 0.5,
    "batch_size": 60,
    "dropout": 0.0,
    "max_shift": 0,
}

# What the runs of one stack (model.stacked) must share: the graph's shapes, the
# schedule, the update rule and the shifts' padding. Anything else may differ per model.
STACK_FIELDS = ("arch", "batch_size", "steps", "eval_every", "optimizer", "max_shift")
# What the scheduler also keeps apart: a stack can hold BN and no-BN runs (and several
# activations) by computing each variant and selecting, but two stacks measured faster
# than one computing both (bench/RESULTS.md, "Stacked training").
STACK_APART = ("batch_norm", "activation")


class RunConfig(BaseModel):
    """One training run. Defaults are the seed recipe (CNN, BN, Adagrad 0.01, batch 64,
    5000 steps) with training images shifted by up to one pixel (`max_shift=0`: the
    recipe as published; the shifts lift BN's test accuracy, bench/RESULTS.md).

    Each field also says how people set it, so the `bnlab train` flags and the
    dashboard's form are built from here and a new field appears in both: `title` is
    the form's label, `description` the help of the flag and of the form field, and
    `json_schema_extra` (published in the JSON schema, hence in /openapi.json) holds
    `flag` (when not `--` + the name with dashes), `flag_help` (a negating flag's own
    help), `options` (a choice's label and hover text in the form; the "" entry labels
    an optional choice's None), `advanced` (the form's folded section) and `placeholder`.
    """

    # strict: `"steps": true` or `"seed": "7"` is a mistake to report, not to coerce.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        # The evaluation cap below, for clients that check a form before sending it.
        json_schema_extra={"max_evaluations": MAX_EVALS},
    )

    arch: Arch = Field(
        "cnn",
        title="Network",
        description="cnn: two 5x5 convs + FC 1024; mlp: 3 x 100 sigmoid",
        json_schema_extra={
            "options": {
                "cnn": ["CNN", "two 5\N{MULTIPLICATION SIGN}5 convolutions + FC 1024, ReLU"],
                "mlp": ["MLP 3\N{MULTIPLICATION SIGN}100", "3 hidden layers of 100 sigmoid units"],
            }
        },
    )
    batch_norm: bool = Field(
        True,
        title="with batch normalization",
        description="Insert BatchNorm before each hidden nonlinearity",
        json_schema_extra={"flag": "--no-bn", "flag_help": "train without batch normalization"},
    )
    optimizer: OptimizerName = Field(
        "adagrad",
        title="Optimizer",
        description="momentum: SGD with momentum 0.9",
        json_schema_extra={
            "options": {
                "adagrad": ["Adagrad"],
                "sgd": ["SGD"],
                "momentum": ["Momentum 0.9"],
                "adam": ["Adam"],
            }
        },
    )
    learning_rate: float = Field(
        0.01,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        title="Learning rate",
        description="Learning rate of the optimizer",
        json_schema_extra={"flag": "--lr"},
    )
    batch_size: int = Field(
        64, ge=1, le=1024, title="Batch size", description="Training images per update"
    )
    steps: int = Field(
        5000, ge=1, le=MAX_STEPS, title="Steps", description="Number of parameter updates"
    )
    eval_every: int = Field(
        200, ge=1, le=MAX_STEPS, title="Evaluate every", description="Validate every N steps"
    )
    dropout: float = Field(
        0.5, ge=0, lt=1, allow_inf_nan=False, title="Dropout rate", description="Drop rate"
    )
    bn_decay: float = Field(
        0.5,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        title="BN decay",
        description="Decay of the moving averages BN uses at inference",
        json_schema_extra={"advanced": True},
    )
    bn_epsilon: float = Field(
        1e-3,
        gt=0,
        le=1,
        allow_inf_nan=False,
        title="BN epsilon",
        description="Added to the batch variance before BN divides by its square root",
        json_schema_extra={"advanced": True},
    )
    max_shift: int = Field(
        1,
        ge=0,
        le=4,
        title="Max shift (px)",
        description="Shift each training image by up to N pixels at random "
        "(0: the images as they are, the recipe as published)",
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        title="Seed",
        description="Seeds the weights, dropout, the data order and the shifts",
        json_schema_extra={"advanced": True},
    )
    activation: Activation | None = Field(
        None,
        title="Activation",
        description="Hidden nonlinearity (none: the network's own, CNN relu, MLP sigmoid)",
        json_schema_extra={
            "options": {
                "": ["Network's own", "CNN: ReLU, MLP: sigmoid, as published"],
                "relu": ["ReLU"],
                "sigmoid": ["Sigmoid"],
                "tanh": ["Tanh"],
            }
        },
    )
    init_scale: float = Field(
        1.0,
        ge=0.001,
        le=1000,
        allow_inf_nan=False,
        title="Init scale",
        description="Multiplies the standard deviation of every initial weight (1: as published)",
    )
    diagnostics: Diagnostics = Field(
        DiagnosticsLevel.BASIC,
        title="Diagnostics",
        description="What each evaluation records inside the network: basic, per-layer "
        "distributions, norms and BN's train/inference gap; full adds internal covariate "
        "shift and loss-landscape probes (Santurkar et al. 2018)",
        json_schema_extra={
            "options": {
                "off": ["Off", "record only the curves"],
                "basic": ["Basic", "per-layer distributions, norms, effective step, BN gap"],
                "full": ["Full", "basic, plus internal covariate shift and landscape probes"],
            }
        },
    )
    full_diagnostics_every: int = Field(
        1,
        ge=1,
        le=MAX_EVALS,
        title="Full diagnostics every",
        description="With full diagnostics, measure ICS and the landscape at every Nth "
        "evaluation only (1: at each)",
        json_schema_extra={"advanced": True},
    )
    train_subset: int | None = Field(
        None,
        ge=1,
        le=TRAIN_SIZE,
        title="Training images",
        description="Train on only the first N training images",
        json_schema_extra={"advanced": True, "placeholder": f"all {TRAIN_SIZE:,}"},
    )

    @field_validator("eval_every")
    @classmethod
    def _bounded_evaluations(cls, eval_every: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")  # absent when steps itself was invalid
        if steps is None:
            return eval_every
        evaluations = _evaluations(steps, eval_every)
        if evaluations > MAX_EVALS:
            least = -(-steps // (MAX_EVALS - 1))  # the smallest interval that fits
            raise ValueError(
                f"{evaluations} evaluations (step 0 included) for "
                f"steps={steps} is more than {MAX_EVALS}; eval_every must be at least {least}"
            )
        return eval_every

    @classmethod
    def from_stored(cls, text: str | bytes) -> RunConfig:
        """A config saved as JSON, maybe by an older version: a field it lacks
        takes the value that describes the run it stored, not today's default."""
        return cls.model_validate_json(json.dumps({**ADDED_FIELDS, **json.loads(text)}))

    def eval_steps(self) -> list[int]:
        """Steps at which the validation set is evaluated: 0, every eval_every, and the last."""
        points = list(range(0, self.steps, self.eval_every))
        return [*points, self.steps]

    def twin(self) -> RunConfig:
        """The same run with batch norm flipped: same seed, same data order."""
        return self.model_copy(update={"batch_norm": not self.batch_norm})

    def stack_key(self) -> tuple | None:
        """Runs with equal keys train as one stack (model.stacked; grouped by the
        server's execution.stacks.plan_stacks); None: this run trains alone. The CNN
        stacks only where a stack worker timed grouped convolutions faster than separate
        ones (model.stack_paths.cnn_stacks: on a 2-core EPYC they were 15x slower,
        bench/RESULTS.md, "Stacked training")."""
        if self.arch == "cnn" and not stack_paths.cnn_stacks():
            return None
        return tuple(getattr(self, name) for name in (*STACK_FIELDS, *STACK_APART))
