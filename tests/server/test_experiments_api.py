"""Experiments through a real server (bnlab.server.testing): worker processes
training the paper's MLP on the real MNIST, a real SQLite file, HTTP and the
experiment's websocket; a server killed in the middle and resumed. The same
service logic, step by step with a fake executor, is in test_experiments.py."""

from __future__ import annotations

import csv
import io
import signal
import time
from typing import Any

import pytest
from websockets.sync.client import connect

from bnlab.server.testing import ServerProcess, receive
from tests.server.test_experiment import BAD_DESIGNS

# Two cells x two seeds x two arms = 8 short runs; unshifted images as in TINY.
DESIGN = {
    "label": "tiny",
    "base": {
        "arch": "mlp",
        "steps": 60,
        "eval_every": 20,
        "train_subset": 1000,
        "batch_size": 32,
        "dropout": 0.0,
        "optimizer": "adam",
        "max_shift": 0,
        # BN's moving averages must catch up within 60 steps for the test set.
        "bn_decay": 0.5,
        "diagnostics": "off",  # as in TINY: the service is the subject here
    },
    "vary": {"learning_rate": [0.01, 0.02]},
    "seeds": 2,
}
RUNS = 8


def wait_experiment(
    server: ServerProcess, experiment_id: str, *statuses: str, timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = server.http.get(f"/api/experiments/{experiment_id}").json()
        if experiment["status"] in statuses:
            return experiment
        time.sleep(0.3)
    raise AssertionError(f"experiment never got {statuses}: {experiment['progress']}")


def assert_close(got: Any, want: Any, path: str = "") -> None:
    """Equal, but for floats equal to rounding (relative 1e-5)."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9), path
    else:
        assert got == want, path


def until_completed(ws) -> list[dict[str, Any]]:
    """An experiment stream's messages up to the one saying it completed."""
    messages = []
    while True:
        message = receive(ws, timeout=240)
        messages.append(message)
        state = message.get("experiment") or message
        if state["status"] == "completed" and message["type"] != "experiment_progress":
            return messages


@pytest.fixture(scope="module")
def watched(server) -> dict[str, Any]:
    """The design run to the end without interruption, watched by two websockets:
    one from the start, one that joins half-way with the first one's last seq."""
    created = server.post("/api/experiments", DESIGN)
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    with server.ws(f"/ws/experiments/{experiment_id}") as first:
        head = [receive(first, timeout=60) for _ in range(3)]
        after_seq = head[-1]["seq"]
        # Read only after `first` ends: it buffers every frame meanwhile (by default a
        # client stops reading at 16, and then misses the server's keepalive pongs).
        late_url = f"{server.ws_url}/ws/experiments/{experiment_id}?after_seq={after_seq}"
        with connect(late_url, open_timeout=10, max_queue=None) as late:
            stream = head + until_completed(first)
            resumed = until_completed(late)
    final = server.http.get(f"/api/experiments/{experiment_id}").json()
    return {
        "created": created.json(),
        "stream": stream,
        "after_seq": after_seq,
        "resumed": resumed,
        "final": final,
    }


def test_an_experiment_trains_every_twin_and_answers_honestly(watched):
    created, final = watched["created"], watched["final"]
    assert created["status"] in ("queued", "running")
    assert len(created["runs"]) == RUNS
    design = created["design"]  # as posted, every other run field at its default
    assert {k: design["base"][k] for k in DESIGN["base"]} == DESIGN["base"]
    assert (design["vary"], design["seeds"], design["label"]) == (
        DESIGN["vary"],
        DESIGN["seeds"],
        DESIGN["label"],
    )
    assert final["status"] == "completed"
    assert final["progress"]["runs"] == {"completed": RUNS}
    assert [c["factors"] for c in final["cells"]] == [
        {"learning_rate": 0.01},
        {"learning_rate": 0.02},
    ]
    for cell in final["cells"]:
        for name, arm in cell["arms"].items():
            assert arm["n"] == arm["n_finished"] == 2
            # The arm is its runs: the mean of their test accuracies (60 steps are
            # too few for every arm to learn much, so no more is asserted).
            accuracies = [
                r["test_metrics"]["test_accuracy"]
                for r in final["runs"]
                if r["config"]["learning_rate"] == cell["factors"]["learning_rate"]
                and r["config"]["batch_norm"] == (name == "bn")
            ]
            assert arm["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
            assert len(accuracies) == 2 and all(0 < a < 1 for a in accuracies), accuracies
            assert [p["step"] for p in arm["curve"]] == [0, 20, 40, 60]
        effect = cell["effect"]
        assert effect["n_pairs"] == 2
        assert effect["verdict"] == "not_enough_seeds"  # 2 seeds can never give p < 0.05
        assert "2" in effect["sentence"]


def test_the_stream_sends_a_snapshot_then_each_update_once_in_order(watched):
    stream = watched["stream"]
    assert stream[0]["type"] == "experiment_snapshot"
    seqs = [m["seq"] for m in stream]
    assert seqs == sorted(set(seqs)), "sequence numbers strictly increase, none twice"
    kinds = {m["type"] for m in stream[1:]}
    assert kinds <= {"experiment", "experiment_progress"} and "experiment" in kinds
    # Every run's end reached the stream: the updates show 1..8 completed runs.
    finished = {
        m["experiment"]["progress"]["runs"].get("completed", 0)
        for m in stream[1:]
        if m["type"] == "experiment"
    }
    assert set(range(1, RUNS + 1)) <= finished
    assert stream[-1]["experiment"]["cells"] == watched["final"]["cells"]


def test_a_client_resuming_from_a_seq_gets_everything_after_it_exactly_once(watched):
    snapshot, *updates = watched["resumed"]
    assert snapshot["type"] == "experiment_snapshot"
    assert snapshot["seq"] >= watched["after_seq"]
    seqs = [m["seq"] for m in updates]
    assert all(s > snapshot["seq"] for s in seqs)
    # Exactly what the first client saw after the late one's snapshot.
    assert seqs == [m["seq"] for m in watched["stream"] if m["seq"] > snapshot["seq"]]


def test_export_gives_one_row_per_run_and_the_curves_in_long_form(server, watched):
    experiment_id = watched["final"]["id"]
    export = server.http.get(f"/api/experiments/{experiment_id}/export?format=json").json()
    assert [r["run_id"] for r in export["runs"]] == [r["id"] for r in watched["final"]["runs"]]
    assert len(export["curves"]) == RUNS * 4
    # The page's polled load leaves the per-layer diagnostics out unless asked for.
    assert not any("diagnostics" in row for row in export["curves"])
    full = server.http.get(f"/api/experiments/{experiment_id}/export?format=json&diagnostics=true")
    # asked for, each row has them: null here, as the design trains with diagnostics off
    assert all(row["diagnostics"] is None for row in full.json()["curves"])
    text = server.http.get(f"/api/experiments/{experiment_id}/export?format=csv&part=runs")
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert [(r["learning_rate"], r["seed"], r["arm"]) for r in rows[:4]] == [
        ("0.01", "0", "bn"),
        ("0.01", "0", "no_bn"),
        ("0.02", "0", "bn"),
        ("0.02", "0", "no_bn"),
    ]
    by_id = {r["id"]: r for r in watched["final"]["runs"]}
    for row in rows:
        assert row["status"] == "completed"
        tested = by_id[row["run_id"]]["test_metrics"]["test_accuracy"]
        assert float(row["test_accuracy"]) == pytest.approx(tested)
    curves = server.http.get(f"/api/experiments/{experiment_id}/export?format=csv&part=curves")
    assert len(list(csv.DictReader(io.StringIO(curves.text)))) == RUNS * 4
    bad = server.http.get(f"/api/experiments/{experiment_id}/export?format=xml")
    assert bad.status_code == 422 and "format" in bad.json()["detail"]


def test_cell_means_count_runs_without_diagnostics_out_and_refuse_an_unknown_layer(server, watched):
    """The design trains with diagnostics off: every run evaluated, none recorded."""
    experiment_id = watched["final"]["id"]
    answer = server.http.get(f"/api/experiments/{experiment_id}/diagnostics")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["layers"] == [] and len(body["cells"]) == 2
    for cell in body["cells"]:
        for arm in cell["arms"].values():
            assert (arm["n"], arm["recorded"], arm["not_recorded"]) == (2, 0, 2)
            assert arm["level"] is None and arm["steps"] == []
    refused = server.http.get(f"/api/experiments/{experiment_id}/diagnostics?layer=fc1")
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("layer: no layer 'fc1'"), refused.text


def test_a_finished_experiment_is_listed_and_deleted_with_its_runs(server, watched):
    experiment_id = watched["final"]["id"]
    listed = server.http.get("/api/experiments").json()["items"]
    assert experiment_id in [e["id"] for e in listed]
    run_id = watched["final"]["runs"][0]["id"]
    assert server.http.delete(f"/api/runs/{run_id}").status_code == 409  # one of its cells
    assert server.http.delete(f"/api/experiments/{experiment_id}").status_code == 204
    assert server.http.get(f"/api/experiments/{experiment_id}").status_code == 404
    assert server.http.get(f"/api/runs/{run_id}").status_code == 404


@pytest.mark.parametrize(("body", "loc", "words"), BAD_DESIGNS)
def test_a_bad_design_is_refused_naming_the_field_and_nothing_is_stored(server, body, loc, words):
    before = server.http.get("/api/runs").json()["total"]
    experiments = len(server.http.get("/api/experiments").json()["items"])
    response = server.post("/api/experiments", body)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == ".".join(loc)
    for word in words:
        assert word in response.json()["detail"]
    assert server.http.get("/api/runs").json()["total"] == before
    assert len(server.http.get("/api/experiments").json()["items"]) == experiments


@pytest.mark.parametrize(("body", "loc", "words"), BAD_DESIGNS[::4])
def test_a_plan_refuses_a_bad_design_as_creating_it_would(server, body, loc, words):
    planned = server.post("/api/experiments/plan", body)
    created = server.post("/api/experiments", body)
    assert planned.status_code == created.status_code == 422
    assert planned.json() == created.json()


def test_a_plan_says_what_a_design_would_start_and_starts_nothing(server):
    before = server.http.get("/api/experiments").json()["items"]
    plan = server.post("/api/experiments/plan", DESIGN)
    assert plan.status_code == 200, plan.text
    assert {k: plan.json()[k] for k in ("cells", "runs", "total_steps", "workers")} == {
        "cells": 2,
        "runs": RUNS,
        "total_steps": RUNS * 60,
        "workers": 2,
    }
    assert server.http.get("/api/experiments").json()["items"] == before


def test_more_than_200_runs_is_refused_with_the_count(server):
    body = {"vary": {"learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, "seeds": 17}
    response = server.post("/api/experiments", body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("seeds: ")
    assert "204 runs" in response.json()["detail"]


def test_presets_name_each_claim_with_a_design_the_api_takes(server):
    presets = server.http.get("/api/experiments/presets").json()["items"]
    assert [p["name"] for p in presets] == [
        "speed",
        "learning-rate",
        "initialization",
        "saturating",
        "regularization",
    ]
    assert all(p["hypothesis"] and p["design"]["seeds"] >= 1 for p in presets)


def test_unknown_experiments_are_404(server):
    for method, path in [
        ("GET", "/api/experiments/nope"),
        ("POST", "/api/experiments/nope/cancel"),
        ("POST", "/api/experiments/nope/resume"),
        ("DELETE", "/api/experiments/nope"),
        ("GET", "/api/experiments/nope/export"),
        ("GET", "/api/experiments/nope/diagnostics"),
    ]:
        assert server.http.request(method, path).status_code == 404, path


def test_a_restart_interrupts_the_unfinished_runs_and_one_resume_finishes_the_same(
    start_server, tmp_path, watched
):
    # The first cell of DESIGN alone: its 4 runs are that cell's runs (the same configs
    # and seeds), and a cell's statistics are its own runs', so the resumed answer can be
    # held against the uninterrupted one at half the cost of the whole design.
    first_cell = {**DESIGN, "vary": {"learning_rate": DESIGN["vary"]["learning_rate"][:1]}}
    db = tmp_path / "restart.db"
    server = start_server(db)
    experiment_id = server.post("/api/experiments", first_cell).json()["id"]

    def some_done(e: dict) -> bool:
        # A third of the training done and some of it unfinished: stacked runs (the
        # default) all end together, runs of their own one by one.
        progress = e["progress"]
        return progress["steps"] >= progress["total_steps"] // 3 and (
            progress["runs"].get("queued", 0) + progress["runs"].get("running", 0)
        )

    deadline = time.monotonic() + 240
    while not some_done(before := server.http.get(f"/api/experiments/{experiment_id}").json()):
        assert time.monotonic() < deadline, before["progress"]
        time.sleep(0.2)
    server.stop(signal.SIGKILL)  # a crash, mid-experiment

    server = start_server(db)
    after = server.http.get(f"/api/experiments/{experiment_id}").json()
    assert after["status"] == "interrupted"
    for old, new in zip(before["runs"], after["runs"], strict=True):
        if old["status"] == "completed":  # finished runs are left exactly as they were
            assert new == old
        else:
            assert new["status"] == "interrupted"
    assert server.post(f"/api/experiments/{experiment_id}/resume").status_code == 202
    done = wait_experiment(server, experiment_id, "completed")
    assert done["progress"]["runs"] == {"completed": RUNS // 2}
    # Same seeds, same runs: the cell's own figures are the uninterrupted experiment's
    # (its corrected ones depend on how many cells it is one of: Holm's family). The
    # runs trained in stacks of another size there (two cells' runs, not one's), which
    # may round the curves' last bits differently; the test images each got right are
    # the same, so every test figure is too.
    [cell], whole = done["cells"], watched["final"]["cells"][0]
    assert_close(cell["arms"], whole["arms"])
    own = ("n_pairs", "n_zero", "p_value", "raw_interval", "effect_size", "p_bn_ahead", "speedup")
    assert {k: cell["effect"][k] for k in own} == {k: whole["effect"][k] for k in own}
    assert cell["effect"]["difference"]["mean"] == whole["effect"]["difference"]["mean"]
    assert (cell["effect"]["cells"], whole["effect"]["cells"]) == (1, 2)


def test_a_claim_that_does_not_fit_is_a_422_naming_the_exact_field(server):
    body = {
        **DESIGN,
        "claim": {
            "statement": "BN helps",
            "contrasts": [{"kind": "effect", "cell": {"learning_rate": 0.5}}],
        },
    }
    response = server.post("/api/experiments", body)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "claim.contrasts.0.cell.learning_rate"
    assert error["loc"] == ["body", "claim", "contrasts", 0, "cell", "learning_rate"]
    assert "0.5" in error["msg"] and "0.01" in error["msg"]


def test_a_plan_says_what_the_seeds_can_detect_and_warns_when_nothing(server):
    plan = server.post("/api/experiments/plan", DESIGN).json()  # two seeds, two cells
    assert plan["power"]["seeds"] == 2 and plan["power"]["cells"] == 2
    assert plan["power"]["cell"]["possible"] is False and plan["power"]["claim"] is None
    assert len(plan["warnings"]) == 1 and "at least" in plan["warnings"][0]


def test_seeds_are_added_only_to_an_ended_experiment_and_checked(server):
    assert server.post("/api/experiments/nope/seeds", {"seeds": 1}).status_code == 404
    bad = server.post("/api/experiments/nope/seeds", {"seeds": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "seeds"
