"""The store on a real SQLite file, in-process: schema migrations (an empty file,
a release 0.1.0 file, a newer file, a failing migration) and every write the
run service relies on."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from bnlab.model.config import RunConfig
from bnlab.model.events import EvalEvent, ProbePercentiles, StartEvent, TrainingPath
from bnlab.model.events import TestMetrics as Metrics
from bnlab.server.status import InvalidTransition, RunStatus
from bnlab.server.storage.migrations import MIGRATIONS, SchemaError, migrate, schema_version
from bnlab.server.storage.points import POINT_COLUMNS, point_public
from bnlab.server.storage.store import Store, StoreError
from tests.server.samples import release_dump, sample_diagnostics

CONFIG = RunConfig(arch="mlp", steps=20, eval_every=10)
TABLES = ("runs", "points", "comparisons")


def rows(db: sqlite3.Connection, table: str) -> list[tuple]:
    return [tuple(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]


def columns(db: sqlite3.Connection, table: str) -> list[tuple]:
    # (name, type, notnull, default, primary-key position) of every column, in order
    return [tuple(c)[1:] for c in db.execute(f"PRAGMA table_info({table})")]


def evaluation(
    step: int, val_loss: float = 0.5, p50: float | None = 0.1, diagnostics=None
) -> EvalEvent:
    return EvalEvent(
        step=step,
        val_loss=val_loss,
        val_acc=0.9,
        train_loss=0.4,
        examples_per_sec=1000.0,
        elapsed=1.5,
        probe=ProbePercentiles(p15=-1.0, p50=p50, p85=1.0),
        diagnostics=diagnostics,
    )


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "bnlab.db")
    yield store
    store.close()


# -- migrations -----------------------------------------------------------


def test_an_empty_file_gets_the_release_schema_and_the_experiments(store):
    assert schema_version(store.db) == len(MIGRATIONS)
    release = release_dump()
    for table in TABLES:
        assert columns(store.db, table)[: len(columns(release, table))] == columns(release, table)
    # Migration 2: each run's place in an experiment, and the experiments.
    added = [c[0] for c in columns(store.db, "runs")[len(columns(release, "runs")) :]]
    assert added[:4] == ["experiment_id", "cell", "seed", "arm"]
    # Migration 4: how each run trained, alone or in a stack, and the stack's size.
    assert added[4:] == ["training_path", "stack_size"]
    assert [c[0] for c in columns(store.db, "experiments")] == [
        "id",
        "label",
        "created_at",
        "design",
        "last_seq",
        "seeds_before_extension",  # migration 5: seeds an experiment had when extended
    ]
    # Migration 3: each point's diagnostics, one JSON document.
    added = columns(store.db, "points")[len(columns(release, "points")) :]
    assert added == [("diagnostics", "TEXT", 0, None, 0)]
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    assert {r[0] for r in store.db.execute(indexes)} == {r[0] for r in release.execute(indexes)} | {
        "runs_by_experiment",
        "experiments_by_age",
    }


def test_an_upgraded_release_file_has_the_schema_of_a_new_file(store, release_db):
    upgraded = Store(release_db)
    for table in (*TABLES, "experiments"):
        assert columns(upgraded.db, table) == columns(store.db, table), table
    upgraded.close()


def test_the_points_table_has_a_column_for_every_field_of_a_point(store):
    # A field added to EvalPoint without a migration that adds its column fails here.
    assert [c[0] for c in columns(store.db, "points")] == ["run_id", "seq", *POINT_COLUMNS]


def test_a_release_database_is_upgraded_with_every_row_intact(release_db):
    store = Store(release_db)
    assert schema_version(store.db) == len(MIGRATIONS)
    release = release_dump()
    for table in TABLES:
        width = len(columns(release, table))
        # Every release row, every value; the new columns say "in no experiment".
        assert [row[:width] for row in rows(store.db, table)] == rows(release, table), table
        assert all(set(row[width:]) <= {None} for row in rows(store.db, table)), table
    assert rows(store.db, "experiments") == []
    store.close()


def test_every_run_and_point_of_a_release_database_reads_back(release_db):
    store = Store(release_db)
    runs, total = store.list_runs(limit=500)
    assert total == 9
    assert {r["status"] for r in runs} == set(RunStatus)
    configs = {r["id"]: RunConfig.from_stored(r["config"]) for r in runs}
    assert configs["old-config"].max_shift == 0  # stored before the field existed
    assert configs["diverged"].optimizer == "sgd" and configs["diverged"].learning_rate == 5.0
    assert store.get_run("completed-bn")["label"] == "Ünïcödé · 批量归一化 · BN ✓"
    assert store.get_run("completed-no")["test_accuracy"] == 0.9712

    nulls = point_public(store.points("diverged")[1])
    assert (nulls.val_loss, nulls.train_loss, nulls.examples_per_sec) == (None, None, None)
    assert nulls.probe == ProbePercentiles(p15=None, p50=None, p85=None)
    assert nulls.val_acc == 0.098
    assert [p.step for p in map(point_public, store.points("completed-bn"))] == [0, 10, 20]
    # Diagnostics did not exist: every point says "not recorded".
    points = [point_public(p) for run in runs for p in store.points(run["id"])]
    assert len(points) > 5 and {p.diagnostics for p in points} == {None}

    comparison, twins = store.comparison_runs("cmp000000001")
    assert comparison is not None and [r["id"] for r in twins] == ["completed-bn", "completed-no"]
    store.close()


def test_a_database_at_version_2_keeps_its_points_and_they_say_not_recorded(tmp_path):
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    migrate(db, MIGRATIONS[:2])
    db.execute(
        "INSERT INTO runs (id, label, config, status, total_steps, created_at)"
        " VALUES ('old', 'old', ?, 'completed', 20, '2026-01-01T00:00:00+00:00')",
        (CONFIG.model_dump_json(),),
    )
    db.execute(
        "INSERT INTO points VALUES ('old', 3, 10, 0.5, 0.9, 0.4, 1000.0, 1.5, -1.0, 0.1, 1.0)"
    )
    db.commit()
    db.close()

    store = Store(path)
    assert schema_version(store.db) == len(MIGRATIONS)
    [point] = map(point_public, store.points("old"))
    assert point.model_dump(exclude={"seq"}) == evaluation(10).model_dump(exclude={"type"})
    assert point.diagnostics is None
    store.close()


def test_opening_an_up_to_date_database_again_changes_nothing(tmp_path):
    Store(tmp_path / "a.db").close()
    before = (tmp_path / "a.db").read_bytes()
    Store(tmp_path / "a.db").close()
    assert (tmp_path / "a.db").read_bytes() == before


def test_a_database_newer_than_the_code_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, shiny_new_column TEXT)")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()

    with pytest.raises(StoreError) as refused:
        Store(path)

    message = str(refused.value)
    assert f"schema version {len(MIGRATIONS) + 1}" in message
    assert f"versions up to {len(MIGRATIONS)}" in message
    assert str(path) in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]  # no WAL either


def _add_labels_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE tags (run_id TEXT REFERENCES runs (id), tag TEXT)")
    db.execute("INSERT INTO tags SELECT id, 'release' FROM runs")


def test_an_appended_migration_applies_to_a_release_database(release_db):
    db = sqlite3.connect(release_db)
    assert migrate(db, [*MIGRATIONS, _add_labels_table]) == 0
    assert schema_version(db) == len(MIGRATIONS) + 1
    assert db.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 9
    width = len(columns(release_dump(), "runs"))
    assert [row[:width] for row in rows(db, "runs")] == rows(release_dump(), "runs")


def _half_done_then_broken(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x)")
    db.execute("UPDATE runs SET label = 'overwritten'")
    db.execute("ALTER TABLE no_such_table ADD COLUMN y")


def _raises(db: sqlite3.Connection) -> None:
    db.execute("UPDATE runs SET label = 'overwritten'")
    raise ValueError("a bug in a migration")


def _dangling(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO points (run_id, seq, step, elapsed) VALUES ('nobody', 1, 0, 0.0)")


@pytest.mark.parametrize(
    ("migration", "error"),
    [
        (_half_done_then_broken, "no such table: no_such_table"),
        (_raises, "a bug in a migration"),
        (_dangling, "pointing at rows that do not exist"),
    ],
)
def test_a_failing_migration_is_rolled_back_and_the_version_stays(release_db, migration, error):
    db = sqlite3.connect(release_db)
    with pytest.raises((SchemaError, ValueError), match=error):
        migrate(db, [*MIGRATIONS, migration])
    assert schema_version(db) == len(MIGRATIONS)  # the migrations before it were applied
    assert not db.in_transaction
    width = len(columns(release_dump(), "runs"))
    assert [row[:width] for row in rows(db, "runs")] == rows(release_dump(), "runs")
    width = len(columns(release_dump(), "points"))
    assert [row[:width] for row in rows(db, "points")] == rows(release_dump(), "points")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {*TABLES, "experiments"}


def test_the_store_reports_a_refused_migration_as_a_store_error(tmp_path, monkeypatch):
    broken = [*MIGRATIONS, _dangling]
    monkeypatch.setattr("bnlab.server.storage.store.migrate", lambda db: migrate(db, broken))
    latest = len(MIGRATIONS)
    refused = rf"schema version {latest + 1} .*left at version {latest}"
    with pytest.raises(StoreError, match=refused):
        Store(tmp_path / "x.db")
    assert schema_version(sqlite3.connect(tmp_path / "x.db")) == latest


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        Store(tmp_path / "junk.db")


# -- runs -------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_filter_and_pages(store):
    for i in range(5):
        store.insert_run(f"r{i}", f"run {i}", CONFIG)
    store.set_status("r1", RunStatus.RUNNING, last_seq=1)
    rows_, total = store.list_runs(limit=2, offset=1)
    assert total == 5 and [r["id"] for r in rows_] == ["r3", "r2"]
    running, total = store.list_runs(RunStatus.RUNNING)
    assert total == 1 and [r["id"] for r in running] == ["r1"]


def test_a_new_run_is_queued_with_its_config(store):
    row = store.insert_run("a", "ä label", CONFIG, comparison_id=None)
    assert row["status"] == RunStatus.QUEUED and row["total_steps"] == 20
    assert RunConfig.from_stored(row["config"]) == CONFIG
    assert row["step"] == 0 and row["last_seq"] == 0


def test_status_changes_stamp_times_and_keep_the_first_start(store):
    store.insert_run("a", "a", CONFIG)
    store.set_status("a", RunStatus.RUNNING, last_seq=1)
    first_start = store.get_run("a")["started_at"]
    store.set_status("a", RunStatus.FAILED, error="boom", last_seq=2)
    failed = store.get_run("a")
    assert failed["finished_at"] is not None and failed["error"] == "boom"

    store.set_status("a", RunStatus.QUEUED, last_seq=3)  # resumed
    resumed = store.get_run("a")
    assert resumed["finished_at"] is None and resumed["error"] is None
    store.set_status("a", RunStatus.RUNNING, last_seq=4)
    assert store.get_run("a")["started_at"] == first_start
    assert store.get_run("a")["last_seq"] == 4


def test_a_forbidden_status_change_is_refused_and_not_written(store):
    store.insert_run("a", "a", CONFIG)
    with pytest.raises(InvalidTransition, match="a queued run cannot become completed"):
        store.set_status("a", RunStatus.COMPLETED, last_seq=1)
    assert store.get_run("a")["status"] == RunStatus.QUEUED


def test_unfinished_runs_are_interrupted_through_the_status_machine(release_db):
    store = Store(release_db)
    before = {r["id"]: r for r in store.list_runs(limit=500)[0]}
    assert sorted(store.interrupt_unfinished()) == ["queued", "running"]
    after = {r["id"]: r for r in store.list_runs(limit=500)[0]}
    for run_id, was in (("queued", "queued"), ("running", "running")):
        run = after[run_id]
        assert run["status"] == RunStatus.INTERRUPTED
        assert run["error"] == f"the server stopped while this run was {was}"
        assert run["finished_at"] is not None
        assert run["last_seq"] == before[run_id]["last_seq"] + 1  # clients see a new event
    assert after["running"]["started_at"] == before["running"]["started_at"]
    assert after["running"]["step"] == 7
    for run_id in after.keys() - {"queued", "running"}:
        assert tuple(after[run_id]) == tuple(before[run_id])
    assert store.interrupt_unfinished() == []
    store.close()


def test_test_metrics_are_stored_and_non_finite_ones_become_null(store):
    store.insert_run("a", "a", CONFIG)
    store.set_test_metrics("a", Metrics(test_loss=0.1, test_accuracy=0.97, log_loss=0.2), 5)
    row = store.get_run("a")
    assert (row["test_loss"], row["test_accuracy"], row["log_loss"], row["last_seq"]) == (
        0.1,
        0.97,
        0.2,
        5,
    )
    store.set_test_metrics("a", Metrics(test_loss=math.nan, test_accuracy=0.1, log_loss=1), 6)
    assert store.get_run("a")["test_loss"] is None


def test_device_path_and_progress_are_stored_and_progress_never_goes_back(store):
    store.insert_run("a", "a", CONFIG)
    assert store.get_run("a")["training_path"] is None  # not started: not known
    start = StartEvent(
        total_steps=20, device="CPU:0", parameters=10, path=TrainingPath.STACKED, stack_size=8
    )
    store.set_started("a", start, 1)
    store.set_progress("a", 12, 2)
    store.set_progress("a", 8, 3)
    row = store.get_run("a")
    assert (row["device"], row["step"], row["last_seq"]) == ("CPU:0", 12, 3)
    assert (row["training_path"], row["stack_size"]) == ("stacked", 8)


def test_comparisons_hold_their_runs_in_creation_order(store):
    store.insert_comparison("c1")
    store.insert_run("bn", "bn", CONFIG, "c1")
    store.insert_run("plain", "plain", CONFIG.twin(), "c1")
    store.insert_run("other", "other", CONFIG)
    comparison, runs = store.comparison_runs("c1")
    assert comparison["id"] == "c1" and [r["id"] for r in runs] == ["bn", "plain"]
    assert store.comparison_runs("nope") == (None, [])


# -- points -------------------------------------------------------------------


def test_a_point_reads_back_as_the_event_it_came_from(store):
    store.insert_run("a", "a", CONFIG)
    event = evaluation(10)
    store.add_point("a", 7, event)
    point = point_public(store.points("a")[0])
    assert point.seq == 7
    assert point.model_dump(exclude={"seq"}) == event.model_dump(exclude={"type"})
    row = store.get_run("a")
    assert (row["step"], row["last_seq"]) == (10, 7)  # progress moved with the point


@pytest.mark.parametrize("full", [False, True])
def test_a_point_with_diagnostics_reads_back_as_the_event_it_came_from(store, full):
    store.insert_run("a", "a", CONFIG)
    event = evaluation(10, diagnostics=sample_diagnostics(full=full))
    store.add_point("a", 1, event)
    point = point_public(store.points("a")[0])
    assert point.model_dump(exclude={"seq"}) == event.model_dump(exclude={"type"})
    assert point.diagnostics.level == ("full" if full else "basic")


def test_non_finite_diagnostics_are_stored_as_null(store):
    store.insert_run("a", "a", CONFIG)
    diagnostics = sample_diagnostics(full=True)
    layer = diagnostics.layers[0].model_copy(update={"grad_norm": math.inf})
    landscape = diagnostics.landscape.model_copy(update={"losses": [0.9, math.nan, 1.0, 2.0]})
    diverging = diagnostics.model_copy(update={"layers": [layer], "landscape": landscape})
    store.add_point("a", 1, evaluation(0, diagnostics=diverging))
    # Strict JSON: NaN or Infinity (which json.loads would take) fails the test.
    stored = json.loads(store.points("a")[0]["diagnostics"], parse_constant=pytest.fail)
    assert stored["layers"][0]["grad_norm"] is None
    assert stored["landscape"]["losses"] == [0.9, None, 1.0, 2.0]
    point = point_public(store.points("a")[0])
    assert point.diagnostics.layers[0].grad_norm is None
    assert point.diagnostics.layers[0].weight_norm == 4.0


def test_non_finite_values_of_a_point_are_stored_as_null(store):
    store.insert_run("a", "a", CONFIG)
    store.add_point("a", 1, evaluation(0, val_loss=math.inf, p50=math.nan))
    raw = store.points("a")[0]
    assert raw["val_loss"] is None and raw["p50"] is None and raw["p15"] == -1.0


def test_points_are_read_by_step_and_after_a_sequence_number(store):
    store.insert_run("a", "a", CONFIG)
    for seq, step in ((1, 0), (2, 10), (3, 20)):
        store.add_point("a", seq, evaluation(step))
    store.add_point("a", 4, evaluation(10, val_loss=0.25))  # re-evaluated: replaces
    assert [r["step"] for r in store.points("a")] == [0, 10, 20]
    assert store.points("a")[1]["val_loss"] == 0.25
    assert [r["step"] for r in store.points("a", since_step=10)] == [10, 20]
    assert [(r["step"], r["seq"]) for r in store.points("a", after_seq=2)] == [(10, 4), (20, 3)]


def test_a_resumed_run_drops_the_points_after_its_checkpoint(store):
    store.insert_run("a", "a", CONFIG)
    for seq, step in ((1, 0), (2, 10), (3, 20)):
        store.add_point("a", seq, evaluation(step))
    store.drop_points_after("a", 10)
    assert [r["step"] for r in store.points("a")] == [0, 10]
    assert store.get_run("a")["step"] == 10


def test_deleting_a_run_deletes_its_points_and_nothing_else(store):
    for run_id in ("a", "b"):
        store.insert_run(run_id, run_id, CONFIG)
        store.add_point(run_id, 1, evaluation(0))
    store.delete_run("a")
    assert store.get_run("a") is None and store.points("a") == []
    assert len(store.points("b")) == 1


def test_a_write_the_database_refuses_is_a_store_error(store):
    store.insert_run("a", "a", CONFIG)
    with pytest.raises(StoreError, match="database write failed"):
        store.insert_run("a", "the same id again", CONFIG)
    with pytest.raises(StoreError, match="database write failed"):
        store.add_point("nobody", 1, evaluation(0))  # no such run: the foreign key holds
