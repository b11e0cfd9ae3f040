"""The experiment service: experiments served, on top of the run service.

An experiment's runs are ordinary runs (queued, scheduled, streamed and resumed
by `RunService`) that also carry their place in the design: cell, seed, arm.
This service stores an experiment with all its runs at once, derives its status
and its cells from those runs whenever asked (never stored: they cannot go
stale), acts on all its runs together (cancel, resume, delete, export), and
publishes the experiment's own stream, with its own sequence numbers, as its
runs start, report and end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Literal

from pydantic import ValidationError

from ...model.config import ArmName
from ..live.messages import (
    DeletedMessage,
    ExperimentMessage,
    ExperimentProgressMessage,
    RunEventKind,
)
from ..runs.compare import summarize_run
from ..runs.schemas import RunPublic
from ..runs.service import PROGRESS_PUBLISH_INTERVAL, Conflict, NotFound, RunService, default_label
from ..status import RunStatus
from ..storage.points import PointCsv, PointPublic, csv_text, point_public
from ..storage.store import PlacedRun
from .analysis import Analysis, analyze
from .cell_means import (
    Document,
    RunDiagnostics,
    average_cells,
    chosen_layers,
    layer_order,
    stored_diagnostics,
)
from .design import (
    PRESETS,
    ExperimentCreate,
    ExperimentStatus,
    PlannedRun,
    Preset,
    experiment_status,
)
from .estimate import BASIS_RUNS, estimate, remaining
from .power import plan_power, verdict_warnings
from .schemas import (
    ExperimentCurveRow,
    ExperimentDiagnostics,
    ExperimentExport,
    ExperimentOverview,
    ExperimentPlan,
    ExperimentProgress,
    ExperimentPublic,
    ExperimentRunRow,
)
from .statistics import MILESTONES, TEST_IMAGES, CurvePoint, RunResult

log = logging.getLogger("bnlab.experiments")
ExportPart = Literal["runs", "curves"]


class TooManySeeds(Exception):
    """The seeds to add would take the design past its bounds (the message says which)."""


def experiment_topic(experiment_id: str) -> str:
    return f"experiment:{experiment_id}"


def queue_order(design: ExperimentCreate) -> list[tuple[int, PlannedRun]]:
    """The design's runs with their cell index, in the order they are queued:
    seed by seed, every cell's BN run then its twin within a seed. Whenever the
    experiment stops (cancelled, a server restart, or just read half-way), every
    cell has about as many finished seeds as every other, and pairs finish
    together, so the partial answer is balanced."""
    cells = design.cells()
    placed = [(cells.index(run.factors), run) for run in design.runs()]
    arm_order = {arm: i for i, arm in enumerate(ArmName)}
    return sorted(placed, key=lambda item: (item[1].seed, item[0], arm_order[item[1].arm]))


def _run_label(design: ExperimentCreate, run: PlannedRun) -> str:
    prefix = f"{design.label} · " if design.label else ""
    return f"{prefix}{default_label(run.config, named=run.factors)} · seed {run.seed}"


class ExperimentService:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.store = runs.store
        self.hub = runs.hub
        self._seq: dict[str, int] = {}
        self._analysis: dict[str, Analysis] = {}  # until one of the experiment's runs ends
        self._progress_published: dict[str, float] = {}
        self._quiet: set[str] = set()  # acting on many runs at once: one update at the end
        runs.listeners.append(self._on_run)

    # -- reading ----------------------------------------------------------

    def _row(self, experiment_id: str) -> sqlite3.Row:
        row = self.store.get_experiment(experiment_id)
        if row is None:
            raise NotFound(f"no experiment with id {experiment_id!r}")
        return row

    def _overview(self, row: sqlite3.Row, runs: list[RunPublic]) -> dict[str, object]:
        return {
            "id": row["id"],
            "label": row["label"],
            "created_at": row["created_at"],
            "design": ExperimentCreate.model_validate_json(row["design"]),
            "status": experiment_status(r.status for r in runs),
            "progress": _progress(runs, self._eta(runs)),
            "last_seq": self._seq.get(row["id"], row["last_seq"]),
            "seeds_added_after_looking": row["seeds_before_extension"] is not None,
        }

    def get(self, experiment_id: str) -> ExperimentPublic:
        row = self._row(experiment_id)
        runs = [self.runs.from_row(r) for r in self.store.experiment_runs(experiment_id)]
        overview = self._overview(row, runs)
        analysis = self._analysis.get(experiment_id)
        if analysis is None:
            results = self._results(experiment_id, overview["design"])
            analysis = self._analysis[experiment_id] = analyze(
                overview["design"],
                results,
                live=overview["status"] in (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING),
                seeds_added_after_looking=overview["seeds_added_after_looking"],
            )
        return ExperimentPublic(**overview, runs=runs, claim=analysis.claim, cells=analysis.cells)

    def list(self) -> list[ExperimentOverview]:
        items = []
        for row in self.store.list_experiments():
            runs = [self.runs.from_row(r) for r in self.store.experiment_runs(row["id"])]
            items.append(ExperimentOverview(**self._overview(row, runs)))
        return items

    def presets(self) -> list[Preset]:
        return list(PRESETS.values())

    def _finished(self) -> list[RunPublic]:
        """The completed runs the estimates learn from: the newest, read now (a run that
        ended a moment ago counts)."""
        rows, _ = self.store.list_runs(RunStatus.COMPLETED, limit=BASIS_RUNS)
        return [self.runs.from_row(row) for row in rows]

    def _eta(self, runs: list[RunPublic]) -> float | None:
        """Seconds left for the experiment's queued and running runs (None: done, or
        unknown), by the plan's model."""
        pending = [r for r in runs if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
        if not pending:
            return None
        executor = self.runs.executor
        return remaining(pending, self._finished(), executor.capacity, executor.stacking)

    def plan(self, design: ExperimentCreate) -> ExperimentPlan:
        """The design's size, its estimated time here and what its seeds could detect;
        nothing is stored or queued."""
        configs = [run.config for run in design.runs()]
        workers = self.runs.executor.capacity
        finished = self._finished()
        guess = estimate(configs, finished, workers, stacking=self.runs.executor.stacking)
        power = plan_power(
            design.seeds,
            len(design.cells()),
            claim_contrasts=len(design.claim.contrasts) if design.claim else None,
        )
        return ExperimentPlan(
            power=power,
            warnings=verdict_warnings(power),
            cells=len(design.cells()),
            runs=len(configs),
            total_steps=sum(config.steps for config in configs),
            workers=workers,
            estimated_seconds=guess.seconds,
            basis=guess.basis,
            assumptions=guess.assumptions,
        )

    def _places(
        self, experiment_id: str, design: ExperimentCreate
    ) -> list[tuple[sqlite3.Row, dict[str, object]]]:
        cells = design.cells()
        return [(row, cells[row["cell"]]) for row in self.store.experiment_runs(experiment_id)]

    def _results(self, experiment_id: str, design: ExperimentCreate) -> list[RunResult]:
        """Every run as the statistics see it, cells in the design's order."""
        curves: dict[str, list[CurvePoint]] = {}
        for point in self.store.experiment_points(experiment_id):
            curves.setdefault(point["run_id"], []).append(
                CurvePoint(step=point["step"], val_acc=point["val_acc"], val_loss=point["val_loss"])
            )
        results = [
            RunResult(
                factors=factors,
                seed=row["seed"],
                arm=row["arm"],
                status=row["status"],
                test_accuracy=row["test_accuracy"],
                curve=curves.get(row["id"], []),
            )
            for row, factors in self._places(experiment_id, design)
        ]
        # summarize_cells keeps the order cells first appear in; runs are queued
        # seed by seed, so sort them back into the design's cell order.
        cell_index = {tuple(c.items()): i for i, c in enumerate(design.cells())}
        return sorted(results, key=lambda r: cell_index[tuple(r.factors.items())])

    # -- requests ---------------------------------------------------------

    def create(self, design: ExperimentCreate) -> ExperimentPublic:
        placed = queue_order(design)
        self.runs.check_room(len(placed))
        experiment_id = uuid.uuid4().hex[:12]
        stored = _placed(design, placed)
        self.store.insert_experiment(experiment_id, design.label, design.model_dump_json(), stored)
        with self._one_update(experiment_id):
            self.runs.queue_stored([run.run_id for run in stored])
        return self.get(experiment_id)

    def add_seeds(self, experiment_id: str, seeds: int) -> ExperimentPublic:
        """`seeds` more seeds in every cell of an ended experiment, their runs queued
        (seed by seed, as at creation). Its verdicts say from then on that seeds were
        added after looking: the first results decided that more were needed."""
        experiment = self.get(experiment_id)
        if experiment.status in (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING):
            raise Conflict(
                f"experiment {experiment_id} is {experiment.status}; add seeds once it has ended"
            )
        old = experiment.design
        try:
            design = old.model_copy(update={"seeds": old.seeds + seeds})
            design = ExperimentCreate.model_validate(design.model_dump(mode="json"))
        except ValidationError as exc:
            raise TooManySeeds(_first_message(exc)) from None
        placed = [(cell, run) for cell, run in queue_order(design) if run.seed >= old.seeds]
        self.runs.check_room(len(placed))
        stored = _placed(design, placed)
        self.store.extend_experiment(experiment_id, design.model_dump_json(), old.seeds, stored)
        self._analysis.pop(experiment_id, None)
        with self._one_update(experiment_id):
            self.runs.queue_stored([run.run_id for run in stored])
        return self.get(experiment_id)

    def cancel(self, experiment_id: str) -> ExperimentPublic:
        """Cancel every queued or running run; the finished ones keep their results."""
        experiment = self.get(experiment_id)
        active = [r.id for r in experiment.runs if r.status.active]
        if not active:
            raise Conflict(f"experiment {experiment_id} is {experiment.status}; nothing to cancel")
        with self._one_update(experiment_id):
            for run_id in active:
                self.runs.cancel(run_id)
        return self.get(experiment_id)

    def resume(self, experiment_id: str) -> ExperimentPublic:
        """Queue every interrupted or failed run again (from its checkpoint)."""
        experiment = self.get(experiment_id)
        resumable = [r.id for r in experiment.runs if r.status.resumable]
        if not resumable:
            raise Conflict(
                f"experiment {experiment_id} is {experiment.status} and has no interrupted or "
                "failed runs to resume"
            )
        self.runs.check_room(len(resumable))
        with self._one_update(experiment_id):
            for run_id in resumable:
                self.runs.resume(run_id)
        return self.get(experiment_id)

    def delete(self, experiment_id: str) -> None:
        experiment = self.get(experiment_id)
        active = sum(r.status.active for r in experiment.runs)
        if active:
            raise Conflict(
                f"experiment {experiment_id} has {active} active run(s); cancel it before "
                "deleting it"
            )
        self.store.delete_experiment(experiment_id)
        for run in experiment.runs:
            self.runs.forget(run.id)
        for cache in (self._seq, self._analysis, self._progress_published):
            cache.pop(experiment_id, None)
        self.hub.end(experiment_topic(experiment_id), DeletedMessage(id=experiment_id).text())

    # -- inside the network ------------------------------------------------

    def diagnostics(self, experiment_id: str, layer: str | None = None) -> ExperimentDiagnostics:
        """Each cell's seed means of the diagnostics, of `layer` alone or of every layer;
        computed from the stored points at every call (the page asks when a run ends).
        Raises UnknownLayer for a layer no run recorded."""
        design = ExperimentCreate.model_validate_json(self._row(experiment_id)["design"])
        names = layer_order(self.store.experiment_layers(experiment_id))
        layers = chosen_layers(names, layer)
        points: dict[str, list[tuple[int, Document | None]]] = {}
        for row in self.store.experiment_diagnostics(experiment_id, layer):
            text = row["diagnostics"]
            recorded = None if text is None else stored_diagnostics(text)
            points.setdefault(row["run_id"], []).append((row["step"], recorded))
        runs = [
            RunDiagnostics(
                factors=factors,
                arm=row["arm"],
                status=row["status"],
                points=points.get(row["id"], []),
            )
            for row, factors in self._places(experiment_id, design)
        ]
        cells = average_cells(design.cells(), runs, layers)
        return ExperimentDiagnostics(id=experiment_id, layers=names, layer=layer, cells=cells)

    # -- export -----------------------------------------------------------

    def export(self, experiment_id: str) -> ExperimentExport:
        experiment = self.get(experiment_id)
        design = experiment.design
        points: dict[str, list[PointPublic]] = {}
        for row in self.store.experiment_points(experiment_id):
            points.setdefault(row["run_id"], []).append(point_public(row))
        public = {run.id: run for run in experiment.runs}
        runs, curves = [], []
        for row, factors in self._places(experiment_id, design):
            run = public[row["id"]]
            place = {"factors": factors, "seed": row["seed"], "arm": row["arm"]}
            run_points = points.get(run.id, [])
            runs.append(
                ExperimentRunRow(
                    run_id=run.id,
                    **place,
                    status=run.status,
                    test_correct=_test_correct(row["test_accuracy"]),
                    summary=summarize_run(run, run_points),
                )
            )
            curves.extend(
                ExperimentCurveRow(run_id=run.id, **place, **p.model_dump()) for p in run_points
            )
        overview = ExperimentOverview(**experiment.model_dump(exclude={"runs", "cells"}))
        return ExperimentExport(experiment=overview, runs=runs, curves=curves)

    def export_csv(self, experiment_id: str, part: ExportPart) -> str:
        """One table of the export: `runs` (one row per run) or `curves` (one row
        per evaluation of a run). Each varied field is a column of its own."""
        export = self.export(experiment_id)
        factors = list(export.experiment.design.vary)
        place = ["run_id", *factors, "seed", "arm"]
        if part == "curves":
            return PointCsv(export.curves).text(
                place,
                (
                    [c.run_id, *(c.factors[f] for f in factors), c.seed, c.arm]
                    for c in export.curves
                ),
            )
        summary = [
            "test_loss",
            "test_accuracy",
            "log_loss",
            "best_val_acc",
            "best_val_acc_step",
            *(f"steps_to_{m:.2f}" for m in MILESTONES),
            "wall_time",
        ]
        return csv_text(
            [*place, "status", *summary],
            (
                [
                    run.run_id,
                    *(run.factors[f] for f in factors),
                    run.seed,
                    run.arm,
                    run.status.value,
                    run.summary.test_loss,
                    run.summary.test_accuracy,
                    run.summary.log_loss,
                    run.summary.best_val_acc,
                    run.summary.best_val_acc_step,
                    *run.summary.steps_to.values(),
                    run.summary.wall_time,
                ]
                for run in export.runs
            ),
        )

    # -- the experiment's stream ------------------------------------------

    def _next_seq(self, experiment_id: str) -> int:
        if experiment_id not in self._seq:
            self._seq[experiment_id] = self._row(experiment_id)["last_seq"]
        seq = self._seq[experiment_id] + 1
        # Stored before it is sent: a restarted server never hands it out again.
        self.store.set_experiment_seq(experiment_id, seq)
        self._seq[experiment_id] = seq
        return seq

    def _publish(self, experiment_id: str) -> None:
        seq = self._next_seq(experiment_id)
        experiment = self.get(experiment_id)
        message = ExperimentMessage(seq=seq, experiment=experiment)
        self.hub.publish(experiment_topic(experiment_id), message.text(), seq)

    def _publish_progress(self, experiment_id: str) -> None:
        now = time.monotonic()
        if now - self._progress_published.get(experiment_id, 0.0) < PROGRESS_PUBLISH_INTERVAL:
            return
        self._progress_published[experiment_id] = now
        row = self._row(experiment_id)
        runs = [self.runs.from_row(r) for r in self.store.experiment_runs(experiment_id)]
        overview = self._overview(row, runs)
        seq = self._next_seq(experiment_id)
        message = ExperimentProgressMessage(
            seq=seq, id=experiment_id, status=overview["status"], progress=overview["progress"]
        )
        self.hub.publish(experiment_topic(experiment_id), message.text(), seq)

    def _on_run(self, run: RunPublic, kind: RunEventKind) -> None:
        experiment_id = run.experiment_id
        if experiment_id is None:
            return
        if kind == "status" and run.status != RunStatus.RUNNING:
            # Ended, or queued again by a resume: the finished runs changed.
            self._analysis.pop(experiment_id, None)
        if experiment_id in self._quiet:
            return
        if kind == "status":
            self._publish(experiment_id)
        else:
            self._publish_progress(experiment_id)

    @contextlib.contextmanager
    def _one_update(self, experiment_id: str) -> Iterator[None]:
        """Changes to many runs at once, then one update of the experiment."""
        self._quiet.add(experiment_id)
        try:
            yield
        finally:
            self._quiet.discard(experiment_id)
            self._publish(experiment_id)


def _placed(design: ExperimentCreate, placed: list[tuple[int, PlannedRun]]) -> list[PlacedRun]:
    return [
        PlacedRun(
            run_id=uuid.uuid4().hex[:12],
            label=_run_label(design, run),
            config=run.config,
            cell=cell,
            arm=run.arm,
        )
        for cell, run in placed
    ]


def _test_correct(accuracy: float | None) -> int | None:
    """Correct test images from the stored accuracy (the store keeps no count): exact,
    since the accuracy is a count over the 10,000 test images."""
    if accuracy is None or not math.isfinite(accuracy):
        return None
    return round(accuracy * TEST_IMAGES)


def _first_message(error: ValidationError) -> str:
    return error.errors()[0]["msg"].removeprefix("Value error, ")


def _progress(runs: list[RunPublic], eta_seconds: float | None = None) -> ExperimentProgress:
    counts = Counter(run.status for run in runs)
    return ExperimentProgress(
        runs={status: counts[status] for status in RunStatus if counts[status]},
        steps=sum(run.step for run in runs),
        total_steps=sum(run.total_steps for run in runs),
        eta_seconds=eta_seconds,
    )
