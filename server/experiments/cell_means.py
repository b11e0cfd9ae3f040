"""An experiment's "Inside the network" (issue #17 §3): for each cell and arm, the mean
over its seeds of every diagnostics series, evaluation step by evaluation step.

Pure: it knows runs only as `RunDiagnostics` (their stored points' diagnostics), so it
is tested on hand-built data; the experiment service reads them from the store. The
means are computed here, on the server, so that the page loads one small answer
(optionally for one layer) instead of every run's points.

The rules, the statistics module's (bnlab.server.experiments.statistics) for the curves:

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

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ...model.config import ArmName
from ...model.events import Diagnostics, DiagnosticsLevel, Distribution, Landscape, LayerDiagnostics


def _fields(model: type[BaseModel], annotation: object) -> tuple[str, ...]:
    return tuple(name for name, f in model.model_fields.items() if f.annotation == annotation)


# What is averaged, by name, from the diagnostics contract (bnlab.model.events): every
# number of a layer, of a distribution and of the landscape, and a layer's distributions.
LAYER_MEASURES = _fields(LayerDiagnostics, float | None)
PERCENTILES = _fields(Distribution, float | None)
LANDSCAPE_MEASURES = _fields(Landscape, float | None)
DISTRIBUTIONS = _fields(LayerDiagnostics, Distribution | None) + _fields(
    LayerDiagnostics, Distribution
)
NETWORK_MEASURES = _fields(Diagnostics, float | None)  # the accuracies with each BN statistics


class UnknownLayer(LookupError):
    """A layer the experiment's runs never recorded."""


# --- input ----------------------------------------------------------------------------

# A point's diagnostics as stored: the JSON of bnlab.model.events.Diagnostics (non-finite
# numbers already null), read as plain dicts and lists. Validating every stored point into
# the models again would cost seconds for a large CNN experiment, for values the models
# checked when they were stored.
Document = Mapping[str, Any]


def stored_diagnostics(text: str) -> Document:
    """A point's stored diagnostics; a layer stored before each distribution kept its own
    bin edges goes through its model, the one home of that rule, to get them."""
    document = json.loads(text)
    if any("edges" in layer for layer in document["layers"]):
        document["layers"] = [
            LayerDiagnostics.model_validate(layer).model_dump(mode="json")
            for layer in document["layers"]
        ]
    return document


@dataclass(frozen=True)
class RunDiagnostics:
    """One run of an experiment as far as its diagnostics go."""

    factors: dict[str, object]
    arm: ArmName
    status: str  # a RunStatus value
    # (step, its diagnostics or None: not recorded), in step order
    points: Sequence[tuple[int, Document | None]] = field(default_factory=list)

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


def layer_order(name_lists: Iterable[Sequence[str]]) -> list[str]:
    """Every layer of these lists (each a point's layers), in network order: an
    experiment varying `arch` has several networks, and each name goes after the layer
    it first followed."""
    names: list[str] = []
    for layers in name_lists:
        for i, name in enumerate(layers):
            if name not in names:
                names.insert(names.index(layers[i - 1]) + 1 if i else 0, name)
    return names


def chosen_layers(names: Sequence[str], layer: str | None) -> list[str]:
    """The layers to average: `layer` alone, or every one of `names` when it is None.
    Raises UnknownLayer for a layer not in `names` (the layers the runs recorded)."""
    if layer is None:
        return list(names)
    if layer not in names:
        recorded = f"its layers: {', '.join(names)}" if names else "none recorded yet"
        raise UnknownLayer(f"no layer {layer!r} in this experiment's diagnostics; {recorded}")
    return [layer]


def _layer(diagnostics: Document, name: str) -> Document | None:
    return next((layer for layer in diagnostics["layers"] if layer["name"] == name), None)


def _distribution(
    found: Sequence[Document | None], edges: list[float] | None
) -> DistributionMeans | None:
    present = [d for d in found if d is not None]
    if not present:
        return None
    # A distribution with a NaN among its values (a diverging run's last evaluation)
    # has no percentiles, and its NaNs sit in the last bin: counting them would draw
    # a saturated layer. Its histogram is left out like its percentiles.
    counts = [
        np.asarray(d["counts"], np.float64)
        for d in present
        if d["edges"] == edges and d["p50"] is not None
    ]
    shares = [c / c.sum() for c in counts if c.sum() > 0]
    return DistributionMeans(
        **{key: _mean(d[key] for d in present) for key in PERCENTILES},
        fractions=np.mean(shares, axis=0).tolist() if shares else None,
        fractions_n=len(shares),
    )


def _common_edges(runs: Sequence[RunDiagnostics], name: str, which: str) -> list[float] | None:
    """The bins most of the runs have for this distribution (the first run's on a tie)."""
    seen: Counter[tuple[float, ...]] = Counter()
    for run in runs:
        for _, diagnostics in run.points:
            layer = _layer(diagnostics, name) if diagnostics else None
            distribution = layer.get(which) if layer else None
            if distribution is not None:
                seen[tuple(distribution["edges"])] += 1  # a run's bins are fixed: its first
                break
    return list(seen.most_common(1)[0][0]) if seen else None


def _step(
    step: int, recorded: Sequence[Document], names: Sequence[str], edges: dict[str, LayerEdges]
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
                        [layer.get(which) for layer in found], getattr(edges[name], which)
                    )
                    for which in DISTRIBUTIONS
                },
                **{key: _mean(layer.get(key) for layer in found) for key in LAYER_MEASURES},
            )
        )
    probes = [p for d in recorded if (p := d.get("landscape")) is not None]
    return StepMeans(
        step=step,
        n=len(recorded),
        layers=layers,
        **{key: _mean(d.get(key) for d in recorded) for key in NETWORK_MEASURES},
        landscape=LandscapeMeans(
            n=len(probes),
            **{key: _mean(p.get(key) for p in probes) for key in LANDSCAPE_MEASURES},
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
    by_step: dict[int, list[Document]] = {}
    for run in recorded:
        for step, diagnostics in run.points:
            if diagnostics is not None:
                by_step.setdefault(step, []).append(diagnostics)
    levels = {d["level"] for found in by_step.values() for d in found}
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


def average_cells(
    cells: Sequence[dict[str, object]], runs: Sequence[RunDiagnostics], layers: Sequence[str]
) -> list[CellDiagnostics]:
    """Each cell's arms (cells in the order given) with the means of `layers`."""
    result = []
    for factors in cells:
        members = [run for run in runs if run.factors == factors]
        result.append(
            CellDiagnostics(
                factors=factors,
                arms={
                    arm: summarize_arm([run for run in members if run.arm == arm], layers)
                    for arm in ArmName
                },
            )
        )
    return result
