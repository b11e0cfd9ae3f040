"""Schema migrations: how a database file moves from the schema it was written
with to the one this code reads.

The file's schema version is SQLite's `PRAGMA user_version` (0 in a new file and
in one written by release 0.1.0, which had no versions). `MIGRATIONS[i]` takes a
database from version i to i + 1. `migrate` applies every missing one in order,
each in its own transaction together with the new version number, so a failing
migration leaves the file exactly as the previous one left it. A file newer than
the code is refused and never touched: an older release must not write into a
schema it does not know.

To change the schema, append a function to `MIGRATIONS`:

    def _add_experiments(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE experiments (id TEXT PRIMARY KEY, ...)")
        db.execute("ALTER TABLE runs ADD COLUMN experiment_id TEXT")

Never edit or reorder a migration that has been released: databases out there
already carry its number. A migration is run with `db.execute` statement by
statement (not `executescript`, which would commit half-way), and may read and
rewrite rows in Python when SQL alone cannot say it. The store enforces foreign
keys only after migrating (so a table can be rebuilt, SQLite's way to change a
column); each migration must leave them consistent, which is checked before it
commits. Add a test that upgrades `tests/fixtures/release-0.1.0.sql` through it
(tests/server/test_store.py shows how).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

Migration = Callable[[sqlite3.Connection], None]


class SchemaError(Exception):
    """The database cannot be brought to this code's schema; the message is for the user."""


def _initial_schema(db: sqlite3.Connection) -> None:
    """The schema of release 0.1.0. `IF NOT EXISTS`: a 0.1.0 database has version 0
    and the tables already, and goes through this migration unchanged."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            comparison_id TEXT,
            config TEXT NOT NULL,
            status TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            total_steps INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT,
            device TEXT,
            test_loss REAL,
            test_accuracy REAL,
            log_loss REAL,
            last_seq INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS runs_by_age ON runs (created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status)")
    db.execute(
        """CREATE TABLE IF NOT EXISTS points (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            step INTEGER NOT NULL,
            val_loss REAL,
            val_acc REAL,
            train_loss REAL,
            examples_per_sec REAL,
            elapsed REAL NOT NULL,
            p15 REAL,
            p50 REAL,
            p85 REAL,
            PRIMARY KEY (run_id, step)
        )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS comparisons (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        )"""
    )


def _add_experiments(db: sqlite3.Connection) -> None:
    """Experiments, and each run's place in one: its cell (an index into the
    design's cells), seed and arm. Columns on runs rather than a link table: a
    run belongs to at most one experiment, and every query about an experiment
    is then one SELECT over runs. `last_seq` numbers the experiment's stream, so
    a restarted server continues past every number a client has seen."""
    db.execute(
        """CREATE TABLE experiments (
            id TEXT PRIMARY KEY,
            label TEXT,
            created_at TEXT NOT NULL,
            design TEXT NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("ALTER TABLE runs ADD COLUMN experiment_id TEXT REFERENCES experiments (id)")
    db.execute("ALTER TABLE runs ADD COLUMN cell INTEGER")
    db.execute("ALTER TABLE runs ADD COLUMN seed INTEGER")
    db.execute("ALTER TABLE runs ADD COLUMN arm TEXT")
    db.execute("CREATE INDEX runs_by_experiment ON runs (experiment_id)")
    db.execute("CREATE INDEX experiments_by_age ON experiments (created_at)")


def _add_diagnostics(db: sqlite3.Connection) -> None:
    """Each point's diagnostics (issue #17; bnlab.model.events.Diagnostics) as one JSON
    document, not columns: what it holds varies with the network (its layers, by name,
    each with histograms), and no query looks inside it. NULL: not recorded (diagnostics
    off, or a point stored before they existed), which every older row becomes."""
    db.execute("ALTER TABLE points ADD COLUMN diagnostics TEXT")


def _add_training_path(db: sqlite3.Connection) -> None:
    """How each run trained (issue #27; bnlab.model.events.TrainingPath): alone, or as
    one model of a stack, and the stack's size. NULL: not known (a run stored before
    stacks existed, which trained alone, or one that has not started)."""
    db.execute("ALTER TABLE runs ADD COLUMN training_path TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN stack_size INTEGER")


def _add_seed_extension(db: sqlite3.Connection) -> None:
    """The seeds an experiment had when it was first extended with more (issue #26):
    NULL, never extended. Its verdicts then say seeds were added after looking."""
    db.execute("ALTER TABLE experiments ADD COLUMN seeds_before_extension INTEGER")


MIGRATIONS: list[Migration] = [
    _initial_schema,
    _add_experiments,
    _add_diagnostics,
    _add_training_path,
    _add_seed_extension,
]


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring `db` to version `len(migrations)`; returns the version it had.

    `db` must not be inside a transaction. Raises `SchemaError` for a file
    newer than the code or for a migration SQLite refused, after rolling that
    migration back (earlier ones stay applied)."""
    target = len(migrations)
    found = schema_version(db)
    if found > target:
        raise SchemaError(
            f"the database has schema version {found}, but this BN Lab knows versions up to "
            f"{target}: it was written by a newer BN Lab. Upgrade BN Lab, or point it at "
            "another database file; this one was left untouched."
        )
    for version in range(found, target):
        # IMMEDIATE: take the write lock before reading the version again, so two
        # processes starting on one file cannot both apply the same migration.
        db.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(db) == version:
                migrations[version](db)
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaError(
                        f"upgrading the database to schema version {version + 1} would leave "
                        f"{len(broken)} row(s) pointing at rows that do not exist; "
                        f"it was left at version {version}"
                    )
                db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:  # SQLite itself rolls back after some errors
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise SchemaError(
                    f"upgrading the database to schema version {version + 1} failed: {exc}; "
                    f"it was left at version {version}"
                ) from exc
            raise
    return found
