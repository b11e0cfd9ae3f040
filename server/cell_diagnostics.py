"""An experiment's "Inside the network" (issue #17 §3): for each cell and arm, the mean
over its seeds of every diagnostics series, evaluation step by evaluation step.

Pure: it knows runs only as `RunDiagnostics` (their stored points' diagnostics), so it
is tested on hand-built data; the experiment service reads them from the store. The
means are computed here, on the server, so that the page loads one small answer
(optionally for one layer) instead of every run's points.

The rules, the statistics module's (bnlab.server.statistics) for the curves:

- A run without diagnostics ("not recorded": trained with `diagnostics` off, or stored
  before BN Lab recorded them) is left out, never averaged in as zeros; its arm counts
  it (`not_recorded`).
- A value that is not finite (a diverging run; stored as null) is left out of its mean,
  never dropped silently: each mean carries its `n`, the runs whose value it is, beside
  its step's `n`, the runs that recorded diagnostics there. A diverged run's series end
  where it diverged, and the arm's `runs` counts it as diverged.
- A histogram is averaged as fractions of its values, and only over runs with the same
  bins: each run fixes its bins from its initial weights (bnlab.model.diagnostics rounds
  them so that most seeds share them). The arm's bins are those most of its runs have
  (`edges`); a run with other bins is left out of the histogram means, and their `n`
  says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from bnlab.model.events import (
    Diagnostics,
    DiagnosticsLevel,
    Distribution,
    Landscape,
    LayerDiagnostics,
)
from bnlab.server.statistics import ArmName

DISTRIBUTIONS = ("pre_bn", "pre_activation")
LAYER_MEASURES = (
    "grad_norm",
    "weight_norm",
    "effective_step",
    "bn_gap",
    "ics_distance",
    "ics_cosine",
)
LANDSCAPE_MEASURES = ("loss_range", "grad_predictiveness", "beta_smoothness")
PERCENTILES = ("p15", "p50", "p85")


class UnknownLayer(LookupError):
    """A layer the experiment's runs never recorded."""


# --- input ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDiagnostics:
    """One run of an experiment as far as its diagnostics go."""

    factors: dict[str, object]
    arm: ArmName
    status: str  # a RunStatus value
    # (step, its diagnostics or None: not recorded), in step order
    points: Sequence[tuple[int, Diagnostics | None]] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        return any(d is not None for _, d in self.points)


# --- output (API schemas) -------------------------------------------------------------


class Mean(BaseModel):
    """A mean over the runs with a finite value; `n` says how many they are."""

    mean: float
    n: int


class DistributionMeans(BaseModel):
    """One of a layer's distributions (bnlab.model.events.Distribution), averaged."""

    p15: Mean | None
    p50: Mean | None
    p85: Mean | None
    fractions: list[float] | None = Field(
        description="Mean share of the values in each bin of the arm's `edges`, over the "
        "runs with those bins; None when none has them here"
    )
    fractions_n: int = Field(description="Runs averaged into `fractions`")


class LayerMeans(BaseModel):
    """One hidden layer's measures (bnlab.model.events.LayerDiagnostics), averaged;
    None where no run has a finite value (e.g. `bn_gap` without BN)."""

    name: str
    pre_bn: DistributionMeans | None
    pre_activation: DistributionMeans | None
    grad_norm: Mean | None
    weight_norm: Mean | None
    effective_step: Mean | None
    bn_gap: Mean | None
    ics_distance: Mean | None
    ics_cosine: Mean | None


class LandscapeMeans(BaseModel):
    """The landscape probes' summaries, averaged over the runs that sampled them here."""

    n: int = Field(description="Runs that probed the landscape at this step")
    loss_range: Mean | None
    grad_predictiveness: Mean | None
    beta_smoothness: Mean | None


class StepMeans(BaseModel):
    step: int
    n: int = Field(description="Runs that recorded diagnostics at this step")
    layers: list[LayerMeans] = Field(description="The requested layers, in network order")
    val_acc_batch_stats: Mean | None
    val_acc_moving_stats: Mean | None
    landscape: LandscapeMeans | None = Field(description="None: no run sampled it here")


class LayerEdges(BaseModel):
    """The bins of an arm's mean histograms for one layer (None: no such distribution)."""

    pre_bn: list[float] | None
    pre_activation: list[float] | None


class ArmDiagnostics(BaseModel):
    n: int = Field(description="Runs in the arm, whatever their state")
    runs: dict[str, int] = Field(description="The arm's runs by status")
    recorded: int = Field(description="Runs with diagnostics at one evaluation or more")
    not_recorded: int = Field(
        description="Runs that evaluated without diagnostics (off, or stored before them): "
        "left out of every mean"
    )
    level: DiagnosticsLevel | None = Field(
        description="full when a recorded run measured at full, else basic; None: none recorded"
    )
    edges: dict[str, LayerEdges] = Field(description="By layer: the bins of `fractions`")
    steps: list[StepMeans]


class CellDiagnostics(BaseModel):
    factors: dict[str, object]
    arms: dict[ArmName, ArmDiagnostics]


# --- the means ------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> Mean | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return Mean(mean=math.fsum(finite) / len(finite), n=len(finite)) if finite else None


def layer_names(runs: Iterable[RunDiagnostics]) -> list[str]:
    """Every layer the runs recorded, in network order (an experiment varying `arch`
    has several networks: each name goes after the layer it first followed)."""
    names: list[str] = []
    for run in runs:
        for _, diagnostics in run.points:
            for i, layer in enumerate(diagnostics.layers if diagnostics else []):
                if layer.name not in names:
                    names.insert(min(i, len(names)), layer.name)
    return names


def _layer(diagnostics: Diagnostics, name: str) -> LayerDiagnostics | None:
    return next((layer for layer in diagnostics.layers if layer.name == name), None)


def _fractions(distribution: Distribution) -> list[float] | None:
    total = sum(distribution.counts)
    return [c / total for c in distribution.counts] if total > 0 else None


def _distribution(
    found: Sequence[Distribution | None], edges: list[float] | None
) -> DistributionMeans | None:
    present = [d for d in found if d is not None]
    if not present:
        return None
    shares = [f for d in present if d.edges == edges and (f := _fractions(d)) is not None]
    return DistributionMeans(
        **{key: _mean(getattr(d, key) for d in present) for key in PERCENTILES},
        fractions=[math.fsum(column) / len(shares) for column in zip(*shares, strict=True)]
        if shares
        else None,
        fractions_n=len(shares),
    )


def _common_edges(runs: Sequence[RunDiagnostics], name: str, which: str) -> list[float] | None:
    """The bins most of the runs have for this distribution (the first run's on a tie)."""
    seen: Counter[tuple[float, ...]] = Counter()
    for run in runs:
        for _, diagnostics in run.points:
            layer = _layer(diagnostics, name) if diagnostics else None
            distribution = getattr(layer, which) if layer else None
            if distribution is not None:
                seen[tuple(distribution.edges)] += 1  # a run's bins are fixed: its first
                break
    return list(seen.most_common(1)[0][0]) if seen else None


def _step(
    step: int, recorded: Sequence[Diagnostics], names: Sequence[str], edges: dict[str, LayerEdges]
) -> StepMeans:
    layers = []
    for name in names:
        found = [layer for d in recorded if (layer := _layer(d, name)) is not None]
        if not found:
            continue
        layers.append(
            LayerMeans(
                name=name,
                **{
                    which: _distribution(
                        [getattr(layer, which) for layer in found], getattr(edges[name], which)
                    )
                    for which in DISTRIBUTIONS
                },
                **{key: _mean(getattr(layer, key) for layer in found) for key in LAYER_MEASURES},
            )
        )
    probes: list[Landscape] = [d.landscape for d in recorded if d.landscape is not None]
    return StepMeans(
        step=step,
        n=len(recorded),
        layers=layers,
        val_acc_batch_stats=_mean(d.val_acc_batch_stats for d in recorded),
        val_acc_moving_stats=_mean(d.val_acc_moving_stats for d in recorded),
        landscape=LandscapeMeans(
            n=len(probes),
            **{key: _mean(getattr(p, key) for p in probes) for key in LANDSCAPE_MEASURES},
        )
        if probes
        else None,
    )


def summarize_arm(runs: Sequence[RunDiagnostics], names: Sequence[str]) -> ArmDiagnostics:
    """The arm's seed means of the layers `names` (and of the whole network's measures)."""
    recorded = [run for run in runs if run.recorded]
    edges = {
        name: LayerEdges(**{which: _common_edges(recorded, name, which) for which in DISTRIBUTIONS})
        for name in names
    }
    by_step: dict[int, list[Diagnostics]] = {}
    for run in recorded:
        for step, diagnostics in run.points:
            if diagnostics is not None:
                by_step.setdefault(step, []).append(diagnostics)
    levels = {d.level for found in by_step.values() for d in found}
    return ArmDiagnostics(
        n=len(runs),
        runs=dict(Counter(run.status for run in runs)),
        recorded=len(recorded),
        not_recorded=sum(1 for run in runs if run.points and not run.recorded),
        level=DiagnosticsLevel.FULL
        if DiagnosticsLevel.FULL in levels
        else DiagnosticsLevel.BASIC
        if levels
        else None,
        edges={name: e for name, e in edges.items() if e.pre_bn or e.pre_activation},
        steps=[_step(step, found, names, edges) for step, found in sorted(by_step.items())],
    )


def summarize_cells(
    cells: Sequence[dict[str, object]], runs: Sequence[RunDiagnostics], layer: str | None = None
) -> tuple[list[str], list[CellDiagnostics]]:
    """Every layer recorded, and each cell's arms (cells in the order given) with the
    means of `layer` alone, or of every layer when it is None. Raises UnknownLayer for
    a layer no run recorded."""
    names = layer_names(runs)
    if layer is not None and layer not in names:
        recorded = f"its layers: {', '.join(names)}" if names else "none recorded yet"
        raise UnknownLayer(f"no layer {layer!r} in this experiment's diagnostics; {recorded}")
    chosen = names if layer is None else [layer]
    result = []
    for factors in cells:
        members = [run for run in runs if run.factors == factors]
        result.append(
            CellDiagnostics(
                factors=factors,
                arms={
                    arm: summarize_arm([run for run in members if run.arm == arm], chosen)
                    for arm in ("bn", "no_bn")
                },
            )
        )
    return names, result
