"""The claim an experiment states: a statement and the contrasts that test it, as
the design carries them and the API validates them (server/experiments/claims.py
says what each contrast measures and evaluates it).

Pydantic only, no scipy: the design imports it, and `bnlab --help` builds the
design's flags without loading scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...model.config import ArmName

Scalar = bool | int | float | str | None
Cell = dict[str, Scalar]
Expect = Literal["greater", "less"]


class _Contrast(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expect: Expect = Field(
        "greater", description="The claim's direction: the estimate above its null, or below"
    )


class EffectContrast(_Contrast):
    kind: Literal["effect"] = "effect"
    cell: Cell = Field(default_factory=dict, description="Every varied field's value")


class InteractionContrast(_Contrast):
    kind: Literal["interaction"] = "interaction"
    factor: str
    level: Scalar
    reference: Scalar
    at: Cell = Field(default_factory=dict, description="The other varied field's value")

    @model_validator(mode="after")
    def _two_levels(self) -> InteractionContrast:
        if self.level == self.reference:
            raise ValueError("level and reference must differ")
        return self


class SensitivityContrast(_Contrast):
    kind: Literal["sensitivity"] = "sensitivity"
    expect: Expect = "less"  # "matters less with BN": BN's spread below no-BN's
    factor: str
    at: Cell = Field(default_factory=dict, description="The other varied field's value")


class CellArm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cell: Cell = Field(default_factory=dict)
    arm: ArmName


class CrossCellContrast(_Contrast):
    kind: Literal["cross_cell"] = "cross_cell"
    minuend: CellArm
    subtrahend: CellArm

    @model_validator(mode="after")
    def _other_arm(self) -> CrossCellContrast:
        if self.minuend.arm == self.subtrahend.arm:
            raise ValueError("subtrahend.arm: compare one arm with the other arm")
        return self


class MilestoneContrast(_Contrast):
    kind: Literal["milestone"] = "milestone"
    expect: Expect = "less"  # BN - no-BN steps: BN gets there sooner
    accuracy: float = Field(gt=0, lt=1, description="Validation accuracy, e.g. 0.98")
    cell: Cell = Field(default_factory=dict)


class DivergenceContrast(_Contrast):
    kind: Literal["divergence"] = "divergence"
    expect: Expect = "less"  # BN is the one that diverges less often
    cell: Cell = Field(default_factory=dict)


Contrast = Annotated[
    EffectContrast
    | InteractionContrast
    | SensitivityContrast
    | CrossCellContrast
    | MilestoneContrast
    | DivergenceContrast,
    Field(discriminator="kind"),
]


class Claim(BaseModel):
    """What an experiment sets out to show, and the contrasts that test it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: str = Field(min_length=1, max_length=300)
    contrasts: list[Contrast] = Field(min_length=1, max_length=4)
    holds_if: Literal["all", "any"] = Field(
        "all", description="The claim holds when all its contrasts are shown, or any"
    )

    @field_validator("statement")
    @classmethod
    def _not_blank(cls, statement: str) -> str:
        if not statement.strip():
            raise ValueError("say what the experiment sets out to show")
        return statement.strip()

    def misfits(self, vary: dict[str, list[Scalar]]) -> list[tuple[tuple[str | int, ...], str]]:
        """Every way a contrast does not fit the design: (where, as a location under
        the claim, e.g. ('contrasts', 0, 'cell', 'activation'); what is wrong)."""
        return [
            (("contrasts", i, *where.split(".")), message)
            for i, contrast in enumerate(self.contrasts)
            for where, message in _misfits(contrast, vary)
        ]

    def check(self, vary: dict[str, list[Scalar]]) -> None:
        """Raise ValueError naming the field when a contrast does not fit the design."""
        for where, message in self.misfits(vary):
            raise ValueError(f"{'.'.join(str(part) for part in where)}: {message}")


def _cell_misfits(where: str, cell: Cell, fields: Sequence[str], vary: dict) -> list:
    missing = [f for f in fields if f not in cell]
    extra = [f for f in cell if f not in fields]
    out = []
    if missing:
        out.append((where, f"give a value for {', '.join(missing)}"))
    if extra:
        out.append((where, f"{', '.join(extra)} is not varied here"))
    for field, value in cell.items():
        if field in vary and value not in vary[field]:
            out.append((f"{where}.{field}", f"{value!r} is not one of {vary[field]}"))
    return out


def _misfits(contrast: Contrast, vary: dict[str, list[Scalar]]) -> list[tuple[str, str]]:
    fields = list(vary)
    match contrast:
        case EffectContrast() | MilestoneContrast() | DivergenceContrast():
            return _cell_misfits("cell", contrast.cell, fields, vary)
        case CrossCellContrast():
            return _cell_misfits("minuend.cell", contrast.minuend.cell, fields, vary) + (
                _cell_misfits("subtrahend.cell", contrast.subtrahend.cell, fields, vary)
            )
        case InteractionContrast() | SensitivityContrast():
            if contrast.factor not in vary:
                return [("factor", f"{contrast.factor!r} is not varied ({', '.join(fields)})")]
            if len(vary[contrast.factor]) < 2:
                return [("factor", f"{contrast.factor} has one value: nothing varies")]
            out = []
            if isinstance(contrast, InteractionContrast):
                for name in ("level", "reference"):
                    if getattr(contrast, name) not in vary[contrast.factor]:
                        out.append((name, f"not one of {vary[contrast.factor]}"))
            others = [f for f in fields if f != contrast.factor]
            return out + _cell_misfits("at", contrast.at, others, vary)
    return []
