"""A database written by release 0.1.0 (before schema versions), served by a real
server after the upgrade: every run, point, comparison, label, configuration and
test metric as the release stored it. And a database newer than the code, which
`bnlab serve` refuses with a message and leaves as it was."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys

from bnlab.model.config import RunConfig
from bnlab.server.storage.migrations import MIGRATIONS, schema_version
from bnlab.server.testing import free_port, receive
from tests.server.samples import release_dump

LEFT_ACTIVE = {"queued", "running"}  # by the release's server when it died


def point_json(row) -> dict:
    keys = ("seq", "step", "val_loss", "val_acc", "train_loss", "examples_per_sec", "elapsed")
    return {
        **{k: row[k] for k in keys},
        "probe": {k: row[k] for k in ("p15", "p50", "p85")},
        "diagnostics": None,  # not recorded: the release had no diagnostics
    }


def test_a_release_database_is_served_intact_after_the_upgrade(start_server, release_db):
    dump = release_dump()
    server = start_server(release_db, workers=1)
    assert schema_version(sqlite3.connect(release_db)) == len(MIGRATIONS)

    listed = server.http.get("/api/runs", params={"limit": 500}).json()
    assert listed["total"] == 9
    served = {run["id"]: run for run in listed["items"]}
    for row in dump.execute("SELECT * FROM runs"):
        run = served[row["id"]]
        assert run["label"] == row["label"]
        assert run["comparison_id"] == row["comparison_id"]
        assert run["config"] == RunConfig.from_stored(row["config"]).model_dump(mode="json")
        assert run["total_steps"] == row["total_steps"] and run["device"] == row["device"]
        metrics = run["test_metrics"]
        if row["test_accuracy"] is None:
            assert metrics is None
        else:
            assert metrics == {k: row[k] for k in ("test_loss", "test_accuracy", "log_loss")}
        if row["id"] in LEFT_ACTIVE:
            assert run["status"] == "interrupted"
            assert run["error"] == f"the server stopped while this run was {row['status']}"
            assert run["last_seq"] == row["last_seq"] + 1
        else:
            assert run["status"] == row["status"] and run["error"] == row["error"]
            assert run["last_seq"] == row["last_seq"]
            assert (run["started_at"] is None) == (row["started_at"] is None)
            assert (run["finished_at"] is None) == (row["finished_at"] is None)

        points = server.http.get(f"/api/runs/{row['id']}/metrics").json()["points"]
        stored = dump.execute("SELECT * FROM points WHERE run_id = ? ORDER BY step", [row["id"]])
        assert points == [point_json(p) for p in stored]

    assert served["old-config"]["config"]["max_shift"] == 0
    assert served["completed-bn"]["label"] == "Ünïcödé · 批量归一化 · BN ✓"

    comparison = server.http.get("/api/comparisons/cmp000000001").json()
    assert [r["id"] for r in comparison["runs"]] == ["completed-bn", "completed-no"]
    assert comparison["created_at"].startswith(
        dump.execute("SELECT created_at FROM comparisons").fetchone()[0][:19]
    )
    compared = server.http.get("/api/compare", params={"runs": "completed-bn,completed-no"})
    [pair] = compared.json()["pairs"]
    assert pair["bn"] == "completed-bn" and pair["speedup"] is None  # no-BN never reached 98 %

    text = server.http.get("/api/runs/diverged/metrics.csv").text
    diverged = list(csv.reader(io.StringIO(text)))
    assert diverged[0] == [
        "step",
        "val_loss",
        "val_acc",
        "train_loss",
        "examples_per_sec",
        "elapsed",
        "p15",
        "p50",
        "p85",
    ]
    assert diverged[2] == ["10", "", "0.098", "", "", "2.5", "", "", ""]

    with server.ws("/ws/runs/completed-no") as ws:
        snapshot = receive(ws)
    assert snapshot["type"] == "snapshot" and len(snapshot["points"]) == 3


def test_a_run_the_release_left_running_resumes_and_completes(start_server, release_db):
    server = start_server(release_db, workers=1)
    assert server.run("running")["status"] == "interrupted"
    resumed = server.http.post("/api/runs/running/resume")
    assert resumed.status_code == 202
    run = server.wait_status("running", "completed", "failed")
    assert run["status"] == "completed" and run["test_metrics"] is not None
    first_start = release_dump().execute("SELECT started_at FROM runs WHERE id = 'running'")
    assert run["started_at"].startswith(first_start.fetchone()[0][:19])  # kept its first start


def test_serve_refuses_a_database_newer_than_the_code_and_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 7}")
    db.commit()
    db.close()
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "bnlab", "serve", "--port", str(free_port()), "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("bnlab serve: error: cannot use the database")
    assert f"schema version {len(MIGRATIONS) + 7}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert path.read_bytes() == before
