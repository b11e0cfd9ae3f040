"""REST behaviour on a real server with real workers."""

import csv
import io
import json
import math

import pytest
from websockets.exceptions import ConnectionClosed

from bnlab.server.live.messages import CloseCode
from tests.server.samples import LONG, TINY


def test_a_run_trains_to_completion_with_stored_test_metrics(server):
    created = server.post("/api/runs", {**TINY, "label": "my run"})
    assert created.status_code == 201
    run = created.json()
    assert run["status"] in ("queued", "running") and run["label"] == "my run"
    assert run["config"]["steps"] == 20 and run["total_steps"] == 20
    done = server.wait_status(run["id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["step"] == 20 and done["device"] == "CPU:0"
    # learnt (chance is 0.1); 20 steps on 500 test images say no more than that
    assert 0.5 < done["test_metrics"]["test_accuracy"] <= 1
    assert done["started_at"] and done["finished_at"] >= done["started_at"]
    points = server.http.get(f"/api/runs/{run['id']}/metrics").json()["points"]
    assert [p["step"] for p in points] == [0, 5, 10, 15, 20]
    assert points[0]["val_loss"] == pytest.approx(math.log(10), abs=1e-4)
    seqs = [p["seq"] for p in points]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    later = server.http.get(f"/api/runs/{run['id']}/metrics", params={"since_step": 10}).json()
    assert [p["step"] for p in later["points"]] == [10, 15, 20]
    text = server.http.get(f"/api/runs/{run['id']}/metrics.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert float(rows[-1]["val_acc"]) == points[-1]["val_acc"]


def test_a_comparison_trains_twins_and_compare_reports_speedup(server):
    created = server.post("/api/comparisons", {**TINY, "seed": 11})
    assert created.status_code == 201, created.text
    body = created.json()
    bn, plain = body["runs"]
    assert bn["config"]["batch_norm"] is True and plain["config"]["batch_norm"] is False
    assert bn["config"]["seed"] == plain["config"]["seed"] == 11
    assert bn["comparison_id"] == plain["comparison_id"] == body["id"]
    for run in (bn, plain):
        assert server.wait_status(run["id"], "completed", "failed")["status"] == "completed"
    assert server.http.get(f"/api/comparisons/{body['id']}").json()["runs"][0]["id"] == bn["id"]
    compare = server.http.get("/api/compare", params={"runs": f"{bn['id']},{plain['id']}"}).json()
    summaries = {r["run"]["id"]: r["summary"] for r in compare["runs"]}
    for run_id, summary in summaries.items():
        assert 0 <= summary["test_accuracy"] <= 1 and summary["wall_time"] > 0
        assert set(summary["steps_to"]) == {"0.97", "0.98", "0.99"}
        assert summary["best_val_acc"] >= max(
            p["val_acc"] for r in compare["runs"] if r["run"]["id"] == run_id for p in r["points"]
        )
    assert summaries[bn["id"]]["test_accuracy"] > 0.5  # BN's MLP learns fast; no-BN's stalls
    # identical initial weights and batches: the same step-0 evaluation
    first = {r["run"]["id"]: r["points"][0] for r in compare["runs"]}
    assert first[bn["id"]]["val_loss"] == first[plain["id"]]["val_loss"]
    (pair,) = compare["pairs"]
    assert (pair["bn"], pair["no_bn"], pair["comparison_id"]) == (bn["id"], plain["id"], body["id"])
    assert "speedup" in pair
    exported = server.http.get(
        "/api/export", params={"runs": f"{bn['id']},{plain['id']}", "format": "json"}
    ).json()
    assert [r["run"]["config"]["batch_norm"] for r in exported["runs"]] == [True, False]
    rows = list(
        csv.DictReader(
            io.StringIO(
                server.http.get("/api/export", params={"runs": f"{bn['id']},{plain['id']}"}).text
            )
        )
    )
    assert len(rows) == 10 and {r["batch_norm"] for r in rows} == {"True", "False"}


def test_cancel_a_running_run(server):
    run = server.post("/api/runs", LONG).json()
    server.wait_for(run["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    response = server.http.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 202
    assert server.wait_status(run["id"], "cancelled", timeout=30)["status"] == "cancelled"
    again = server.http.post(f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_delete_is_refused_while_active_and_removes_everything_after(server):
    run = server.post("/api/runs", LONG).json()
    refused = server.http.delete(f"/api/runs/{run['id']}")
    assert refused.status_code == 409 and "cancel" in refused.json()["detail"]
    server.http.post(f"/api/runs/{run['id']}/cancel")
    server.wait_status(run["id"], "cancelled", timeout=30)
    assert server.http.delete(f"/api/runs/{run['id']}").status_code == 204
    assert server.http.get(f"/api/runs/{run['id']}").status_code == 404
    assert server.http.get(f"/api/runs/{run['id']}/metrics").status_code == 404


def test_list_is_newest_first_filterable_and_paginated(server):
    ids = [
        server.post("/api/runs", {**TINY, "steps": 5, "eval_every": 5}).json()["id"]
        for _ in range(3)
    ]
    for run_id in ids:
        server.wait_status(run_id, "completed", "failed")
    page = server.http.get("/api/runs", params={"limit": 2}).json()
    assert [r["id"] for r in page["items"]] == ids[::-1][:2]
    assert page["total"] >= 3
    rest = server.http.get("/api/runs", params={"limit": 2, "offset": 1}).json()
    assert rest["items"][0]["id"] == ids[1]
    completed = server.http.get("/api/runs", params={"status": "completed"}).json()
    assert all(r["status"] == "completed" for r in completed["items"])
    bad = server.http.get("/api/runs", params={"status": "sleeping"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10**12}, "steps"),
        ({"batch_size": 100_000}, "batch_size"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"eval_every": 1, "steps": 100_000}, "eval_every"),
        ({"arch": "resnet"}, "arch"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_configurations_are_refused_naming_the_field(server, body, field):
    before = server.http.get("/api/runs").json()["total"]
    response = server.post("/api/runs", body)
    assert response.status_code == 422
    assert field in response.json()["detail"]
    assert any(e["field"] == field for e in response.json()["errors"])
    assert server.http.get("/api/runs").json()["total"] == before  # nothing stored


def test_a_comparison_refuses_batch_norm(server):
    response = server.post("/api/comparisons", {**TINY, "batch_norm": False})
    assert response.status_code == 422 and "batch_norm" in response.json()["detail"]


def test_unknown_ids_are_404_with_a_message(server):
    for path in (
        "/api/runs/nope",
        "/api/runs/nope/metrics",
        "/api/runs/nope/metrics.csv",
        "/api/comparisons/nope",
        "/api/compare?runs=nope",
    ):
        response = server.http.get(path)
        assert response.status_code == 404, path
        assert "nope" in response.json()["detail"]
    assert server.http.post("/api/runs/nope/cancel").status_code == 404
    assert server.http.delete("/api/runs/nope").status_code == 404
    empty = server.http.get("/api/compare", params={"runs": ","})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("runs: ")
    assert [e["field"] for e in empty.json()["errors"]] == ["runs"]


def test_health_reports_workers_queue_and_tensorflow(server):
    health = server.http.get("/api/health").json()
    assert health["status"] == "ok" and health["tensorflow"].startswith("2.21")
    assert health["workers"]["total"] == 2 and health["devices"] == ["CPU"]
    # No NVIDIA driver here: TensorFlow's own devices are known at once, and agree.
    assert health["tensorflow_devices"] == ["CPU"] and health["device_warning"] is None
    assert health["queue"] >= 0
    assert health["executor"] == "process" and health["cluster"] is None


def test_openapi_documents_every_route(server):
    spec = server.http.get("/openapi.json").json()
    for path in (
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/metrics.csv",
        "/api/runs/{run_id}/cancel",
        "/api/comparisons",
        "/api/comparisons/{comparison_id}",
        "/api/compare",
        "/api/export",
        "/api/health",
    ):
        assert path in spec["paths"], path
    assert "batch_norm" not in spec["components"]["schemas"]["ComparisonCreate"]["properties"]
    assert server.http.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [({"steps": True}, "steps"), ({"seed": "7"}, "seed"), ({"batch_norm": "no"}, "batch_norm")],
)
def test_wrong_types_are_refused_not_coerced(server, body, field):
    response = server.post("/api/runs", body)
    assert response.status_code == 422 and field in response.json()["detail"]


def test_a_deleted_runs_stream_is_told_and_closed(server):
    run = server.post("/api/runs", {**TINY, "steps": 5}).json()
    server.wait_status(run["id"], "completed")
    with server.ws(f"/ws/runs/{run['id']}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        assert server.http.delete(f"/api/runs/{run['id']}").status_code == 204
        assert json.loads(ws.recv(timeout=10)) == {"type": "deleted", "id": run["id"]}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == CloseCode.NOT_FOUND
