"""SQLite storage of runs, their evaluation points and final test metrics.

The server process is the only writer (workers report through the executor),
so one connection used from the event loop is enough. WAL keeps readers and
the writer out of each other's way; synchronous=FULL makes every commit
durable, so a run marked completed keeps its metrics even through a power cut.
Opening a file brings its schema up to date (bnlab.server.storage.migrations).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...model.config import ArmName, RunConfig
from ...model.events import EvalPoint, StartEvent, TestMetrics, finite_or_none
from ..status import ACTIVE, RunStatus, check_transition
from .migrations import SchemaError, migrate
from .points import POINT_COLUMNS, flatten_point

# Column names come from code (the point's fields), never from users.
_INSERT_POINT = (
    f"INSERT OR REPLACE INTO points (run_id, seq, {', '.join(POINT_COLUMNS)})"
    f" VALUES ({', '.join('?' * (2 + len(POINT_COLUMNS)))})"
)


@dataclass(frozen=True)
class PlacedRun:
    """A run of an experiment as it is first stored: its place in the design."""

    run_id: str
    label: str
    config: RunConfig
    cell: int  # index into the design's cells
    arm: ArmName


class StoreError(Exception):
    """The database could not be read or written; the message is for the user."""


def now() -> datetime:
    return datetime.now(UTC)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA synchronous=FULL")
            # Migrations first: a file this code refuses is not even switched to WAL.
            migrate(self.db)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
        except SchemaError as exc:
            self.db.close()
            raise StoreError(f"cannot use the database {self.path}: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            with self.db:  # a transaction: committed, or rolled back on error
                return self.db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({self.path}): {exc}") from None

    # -- runs -------------------------------------------------------------

    def insert_run(
        self, run_id: str, label: str, config: RunConfig, comparison_id: str | None = None
    ) -> sqlite3.Row:
        self._write(
            "INSERT INTO runs (id, label, comparison_id, config, status, total_steps, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                label,
                comparison_id,
                config.model_dump_json(),
                RunStatus.QUEUED,
                config.steps,
                now().isoformat(),
            ),
        )
        return self.get_run(run_id)

    def insert_comparison(self, comparison_id: str) -> None:
        self._write(
            "INSERT INTO comparisons (id, created_at) VALUES (?, ?)",
            (comparison_id, now().isoformat()),
        )

    def get_run(self, run_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()

    def list_runs(
        self, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[sqlite3.Row], int]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        total = self.db.execute(f"SELECT COUNT(*) FROM runs {where}", params).fetchone()[0]
        rows = self.db.execute(
            f"SELECT * FROM runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return rows, total

    def comparison_runs(self, comparison_id: str) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
        comparison = self.db.execute(
            "SELECT * FROM comparisons WHERE id = ?", (comparison_id,)
        ).fetchone()
        runs = self.db.execute(
            "SELECT * FROM runs WHERE comparison_id = ? ORDER BY rowid", (comparison_id,)
        ).fetchall()
        return comparison, runs

    def set_status(
        self, run_id: str, status: RunStatus, *, error: str | None = None, last_seq: int
    ) -> None:
        row = self.get_run(run_id)
        check_transition(RunStatus(row["status"]), status)
        stamp = now().isoformat()
        if status == RunStatus.QUEUED:  # resumed: the old ending no longer holds
            self._write(
                "UPDATE runs SET status = ?, finished_at = NULL, error = NULL, last_seq = ?"
                " WHERE id = ?",
                (status, last_seq, run_id),
            )
        elif status == RunStatus.RUNNING:
            self._write(
                # A resumed run keeps its first start.
                "UPDATE runs SET status = ?, started_at = COALESCE(started_at, ?), last_seq = ?"
                " WHERE id = ?",
                (status, stamp, last_seq, run_id),
            )
        else:
            self._write(
                "UPDATE runs SET status = ?, finished_at = ?, error = ?, last_seq = ? WHERE id = ?",
                (status, stamp, error, last_seq, run_id),
            )

    def set_progress(self, run_id: str, step: int, last_seq: int) -> None:
        self._write(
            "UPDATE runs SET step = MAX(step, ?), last_seq = ? WHERE id = ?",
            (step, last_seq, run_id),
        )

    def set_started(self, run_id: str, start: StartEvent, last_seq: int) -> None:
        """What the run's start event says of where and how it trains."""
        self._write(
            "UPDATE runs SET device = ?, training_path = ?, stack_size = ?, last_seq = ?"
            " WHERE id = ?",
            (start.device, start.path.value, start.stack_size, last_seq, run_id),
        )

    def set_test_metrics(self, run_id: str, metrics: TestMetrics, last_seq: int) -> None:
        self._write(
            "UPDATE runs SET test_loss = ?, test_accuracy = ?, log_loss = ?, last_seq = ?"
            " WHERE id = ?",
            (
                finite_or_none(metrics.test_loss),
                finite_or_none(metrics.test_accuracy),
                finite_or_none(metrics.log_loss),
                last_seq,
                run_id,
            ),
        )

    def interrupt_unfinished(self) -> list[str]:
        """Runs a previous server process left queued or running become interrupted."""
        marks = ", ".join("?" * len(ACTIVE))
        rows = self.db.execute(
            f"SELECT id, status, last_seq FROM runs WHERE status IN ({marks})", tuple(ACTIVE)
        ).fetchall()
        for row in rows:  # one at a time: a crash half-way leaves the rest for next time
            self.set_status(
                row["id"],
                RunStatus.INTERRUPTED,
                error=f"the server stopped while this run was {row['status']}",
                last_seq=row["last_seq"] + 1,
            )
        return [row["id"] for row in rows]

    def delete_run(self, run_id: str) -> None:
        self._write("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- experiments ------------------------------------------------------

    def insert_experiment(
        self,
        experiment_id: str,
        label: str | None,
        design_json: str,
        runs: Iterable[PlacedRun],
    ) -> None:
        """The experiment and every one of its runs, queued, in one transaction:
        a failure stores nothing."""
        stamp = now().isoformat()
        try:
            with self.db:
                self.db.execute(
                    "INSERT INTO experiments (id, label, created_at, design) VALUES (?, ?, ?, ?)",
                    (experiment_id, label, stamp, design_json),
                )
                self._insert_placed(experiment_id, runs, stamp)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({self.path}): {exc}") from None

    def extend_experiment(
        self, experiment_id: str, design_json: str, seeds_before: int, runs: Iterable[PlacedRun]
    ) -> None:
        """More seeds for an ended experiment: its new design and the new seeds' runs,
        queued, in one transaction. `seeds_before` is kept from the first extension:
        the seeds the experiment had when its results were first seen."""
        try:
            with self.db:
                self.db.execute(
                    "UPDATE experiments SET design = ?,"
                    " seeds_before_extension = COALESCE(seeds_before_extension, ?) WHERE id = ?",
                    (design_json, seeds_before, experiment_id),
                )
                self._insert_placed(experiment_id, runs, now().isoformat())
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({self.path}): {exc}") from None

    def _insert_placed(self, experiment_id: str, runs: Iterable[PlacedRun], stamp: str) -> None:
        self.db.executemany(
            "INSERT INTO runs (id, label, config, status, total_steps, created_at,"
            " experiment_id, cell, seed, arm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run.run_id,
                    run.label,
                    run.config.model_dump_json(),
                    RunStatus.QUEUED,
                    run.config.steps,
                    stamp,
                    experiment_id,
                    run.cell,
                    run.config.seed,
                    run.arm,
                )
                for run in runs
            ],
        )

    def get_experiment(self, experiment_id: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM experiments WHERE id = ?", (experiment_id,)
        ).fetchone()

    def list_experiments(self) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM experiments ORDER BY created_at DESC, rowid DESC"
        ).fetchall()

    def experiment_runs(self, experiment_id: str) -> list[sqlite3.Row]:
        """The experiment's runs in the order they were queued."""
        return self.db.execute(
            "SELECT * FROM runs WHERE experiment_id = ? ORDER BY rowid", (experiment_id,)
        ).fetchall()

    def experiment_points(self, experiment_id: str) -> list[sqlite3.Row]:
        """Every point of every run of the experiment, by run then step."""
        return self.db.execute(
            "SELECT points.* FROM points JOIN runs ON runs.id = points.run_id"
            " WHERE runs.experiment_id = ? ORDER BY runs.rowid, points.step",
            (experiment_id,),
        ).fetchall()

    def experiment_layers(self, experiment_id: str) -> list[list[str]]:
        """The distinct lists of layer names (in network order) that the experiment's runs
        recorded. A run's layers are its network's, the same at every evaluation: SQLite
        reads them out of each run's first recorded point (MIN's row: SQLite's bare column)."""
        rows = self.db.execute(
            "SELECT DISTINCT (SELECT json_group_array(json_extract(value, '$.name'))"
            " FROM json_each(first.diagnostics, '$.layers')) AS names FROM ("
            " SELECT points.diagnostics, MIN(points.step) FROM points"
            " JOIN runs ON runs.id = points.run_id"
            " WHERE runs.experiment_id = ? AND points.diagnostics IS NOT NULL"
            " GROUP BY points.run_id) AS first ORDER BY names",
            (experiment_id,),
        ).fetchall()
        return [json.loads(row["names"]) for row in rows]

    def experiment_diagnostics(
        self, experiment_id: str, layer: str | None = None
    ) -> list[sqlite3.Row]:
        """Every point's `run_id`, `step` and `diagnostics` (JSON; NULL: not recorded) of
        the experiment, by run then step. With `layer`, SQLite keeps that layer alone in
        each point's `layers`: a CNN point's other layers are never sent to Python."""
        diagnostics = "points.diagnostics"
        if layer is not None:
            diagnostics = (
                "json_set(points.diagnostics, '$.layers', json((SELECT json_group_array("
                "json(value)) FROM json_each(points.diagnostics, '$.layers')"
                " WHERE json_extract(value, '$.name') = :layer)))"
            )
        return self.db.execute(
            f"SELECT points.run_id, points.step, {diagnostics} AS diagnostics"
            " FROM points JOIN runs ON runs.id = points.run_id"
            " WHERE runs.experiment_id = :experiment ORDER BY runs.rowid, points.step",
            {"experiment": experiment_id, "layer": layer},
        ).fetchall()

    def set_experiment_seq(self, experiment_id: str, last_seq: int) -> None:
        self._write("UPDATE experiments SET last_seq = ? WHERE id = ?", (last_seq, experiment_id))

    def delete_experiment(self, experiment_id: str) -> None:
        """The experiment and its runs (their points go with them)."""
        try:
            with self.db:
                self.db.execute("DELETE FROM runs WHERE experiment_id = ?", (experiment_id,))
                self.db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({self.path}): {exc}") from None

    # -- points -----------------------------------------------------------

    def add_point(self, run_id: str, seq: int, point: EvalPoint) -> None:
        # One transaction: the point and the run's progress move together.
        try:
            with self.db:
                self.db.execute(_INSERT_POINT, (run_id, seq, *flatten_point(point).values()))
                self.db.execute(
                    "UPDATE runs SET step = MAX(step, ?), last_seq = ? WHERE id = ?",
                    (point.step, seq, run_id),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({self.path}): {exc}") from None

    def has_point(self, run_id: str, step: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM points WHERE run_id = ? AND step = ?", (run_id, step)
        ).fetchone()
        return row is not None

    def drop_points_after(self, run_id: str, step: int) -> None:
        """A resumed run re-does everything after its checkpoint."""
        self._write("DELETE FROM points WHERE run_id = ? AND step > ?", (run_id, step))
        self._write("UPDATE runs SET step = ? WHERE id = ?", (step, run_id))

    def points(
        self, run_id: str, *, since_step: int | None = None, after_seq: int | None = None
    ) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM points WHERE run_id = ?", [run_id]
        if since_step is not None:
            sql += " AND step >= ?"
            params.append(since_step)
        if after_seq is not None:
            sql += " AND seq > ?"
            params.append(after_seq)
        return self.db.execute(sql + " ORDER BY step", params).fetchall()
