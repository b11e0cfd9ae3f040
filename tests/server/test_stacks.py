"""Stacked training through a real server (issue #27): an experiment's MLP runs train
as stacks in long-lived stack workers, and each is still a run of its own: its
status, points, test metrics and live stream, the same numbers as the per-run path
(`--no-stack`) to float tolerance, cancelled and failed one stack at a time.
The stacked trainer itself, model by model against solo runs, is tested in
tests/model/test_stacked.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bnlab.model.config import RunConfig
from bnlab.server.execution.stacks import plan_stacks
from bnlab.server.testing import ServerProcess
from tests.server import test_experiments_api
from tests.server.samples import TINY
from tests.server.test_experiments_api import wait_experiment

# The experiments' tiny design, shorter, with diagnostics (each model of a stack
# measures its own): 2 cells x 2 seeds x 2 arms = 8 runs, a BN and a no-BN stack.
DESIGN = {
    "label": "stacked",
    "base": {**test_experiments_api.DESIGN["base"], "steps": 40, "diagnostics": "basic"},
    # A model that diverges stops alone while its stack trains on: tested model by
    # model in tests/model/test_stacked.py (a diverging run's later bits are chaos).
    "vary": {"learning_rate": [0.01, 0.02]},
    "seeds": 2,
}
RUNS = 8
# Trains until cancelled or killed. Without diagnostics, as the next experiment a
# test trains once it has stopped one (NEXT): what the stacks measure is the first
# test's subject, and tracing the measures costs each stack seconds.
LONG_RUNS = {"steps": 100_000, "eval_every": 1000, "diagnostics": "off"}
NEXT = {**DESIGN, "label": "next", "base": {**DESIGN["base"], "diagnostics": "off"}}
# Each model of a stack trains as its run alone, up to float rounding: a few of the
# 500 evaluation images may fall on the other side of a decision boundary.
ACCURACY_TOLERANCE = 0.01


def finished_alike(experiment: dict[str, Any]) -> bool:
    """Every run of DESIGN completed, none failed or was left behind."""
    return [run["status"] for run in experiment["runs"]] == ["completed"] * RUNS


def place(run: dict[str, Any]) -> tuple:
    return (run["config"]["learning_rate"], run["config"]["seed"], run["config"]["batch_norm"])


@pytest.fixture(scope="module")
def stacked(server) -> dict[str, Any]:
    experiment_id = server.post("/api/experiments", DESIGN).json()["id"]
    return wait_experiment(server, experiment_id, "completed", timeout=300)


def test_an_experiments_runs_train_in_stacks_and_each_is_a_run_of_its_own(server, stacked):
    runs = stacked["runs"]
    assert finished_alike(stacked)
    assert {run["path"] for run in runs} == {"stacked"}
    # BN and no-BN apart, one stack each on the server's two slots.
    assert {run["stack_size"] for run in runs} == {RUNS // 2}
    for run in runs:
        points = server.http.get(f"/api/runs/{run['id']}/metrics").json()["points"]
        assert [p["step"] for p in points] == [0, 20, 40]
        assert all(p["diagnostics"] is not None for p in points)
        assert 0.0 <= run["test_metrics"]["test_accuracy"] <= 1.0
    # Every run its own numbers: no two models of a stack are the same model.
    assert len({run["test_metrics"]["test_loss"] for run in runs}) == RUNS


def test_the_per_run_path_gives_the_same_runs(start_server, tmp_path, stacked):
    """`--no-stack`: each run in a process of its own, as before stacks; the same
    test accuracies, run by run, to float tolerance. One cell of DESIGN is enough to
    compare (each per-run run pays a process and TensorFlow's start-up)."""
    alone = start_server(tmp_path / "alone.db", extra=["--no-stack"])
    one_cell = {**DESIGN, "vary": {"learning_rate": DESIGN["vary"]["learning_rate"][:1]}}
    experiment_id = alone.post("/api/experiments", one_cell).json()["id"]
    single = wait_experiment(alone, experiment_id, "completed", timeout=300)
    assert len(single["runs"]) == RUNS // 2
    assert {run["path"] for run in single["runs"]} == {"single"}
    assert {run["stack_size"] for run in single["runs"]} == {1}
    by_place = {place(run): run for run in stacked["runs"]}
    for run in single["runs"]:
        twin = by_place[place(run)]
        assert run["status"] == twin["status"] == "completed", place(run)
        difference = run["test_metrics"]["test_accuracy"] - twin["test_metrics"]["test_accuracy"]
        assert abs(difference) <= ACCURACY_TOLERANCE, (place(run), difference)


def test_a_single_run_beside_stacks_trains_in_a_process_of_its_own(server):
    run = server.post("/api/runs", {**TINY, "steps": 10}).json()
    done = server.wait_status(run["id"], "completed")
    assert (done["path"], done["stack_size"]) == ("single", 1)


def start_training(server: ServerProcess) -> str:
    """An experiment of DESIGN's runs made long enough to train until stopped, once its
    stacks have taken their first steps."""
    long = {**DESIGN, "label": "long", "base": {**DESIGN["base"], **LONG_RUNS}}
    experiment_id = server.post("/api/experiments", long).json()["id"]
    deadline = time.monotonic() + 120
    while server.http.get(f"/api/experiments/{experiment_id}").json()["progress"]["steps"] == 0:
        assert time.monotonic() < deadline, "the stacks never started"
        time.sleep(0.2)
    return experiment_id


def _stack_worker_pids(server: ServerProcess) -> list[int]:
    """The stack workers (`bnlab-stack`), not a single run's worker on its way out."""
    return [pid for pid in server.worker_pids() if _title(pid) == "bnlab-stack"]


def _title(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # gone
        return None


def test_cancelling_an_experiment_cancels_its_stacks_and_the_worker_trains_the_next(server):
    experiment_id = start_training(server)
    workers = set(_stack_worker_pids(server))
    assert server.post(f"/api/experiments/{experiment_id}/cancel").status_code == 202
    ended = wait_experiment(server, experiment_id, "cancelled", timeout=60)
    assert ended["progress"]["runs"] == {"cancelled": RUNS}
    # The stack workers stay, TensorFlow loaded, and train the next stack.
    again = server.post("/api/experiments", NEXT).json()["id"]
    assert finished_alike(wait_experiment(server, again, "completed", timeout=300))
    assert workers & set(_stack_worker_pids(server)), "the stack workers were not kept"


def test_a_stack_worker_killed_fails_only_its_own_runs_with_the_reason(server):
    # The module's server: the test ends with it training both slots again.
    experiment_id = start_training(server)
    victim = _stack_worker_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        runs = server.http.get(f"/api/experiments/{experiment_id}").json()["runs"]
        failed = [run for run in runs if run["status"] == "failed"]
        if len(failed) == RUNS // 2:
            break
        assert time.monotonic() < deadline, [run["status"] for run in runs]
        time.sleep(0.2)
    for run in failed:
        assert "stack's worker process was killed by SIGKILL" in run["error"]
    # The other stack trains on; cancel it, and the server trains again on both slots.
    assert [run["status"] for run in runs].count("running") == RUNS // 2
    server.post(f"/api/experiments/{experiment_id}/cancel")
    wait_experiment(server, experiment_id, "cancelled", "failed", "completed", timeout=60)
    again = server.post("/api/experiments", NEXT).json()["id"]
    assert finished_alike(wait_experiment(server, again, "completed", timeout=300))


def _mlp(**fields) -> RunConfig:
    return RunConfig(**{"arch": "mlp", "steps": 20, "eval_every": 10, **fields})


def test_runs_are_grouped_into_stacks_by_key_and_size():
    configs = [
        _mlp(seed=0),
        RunConfig(),
        _mlp(seed=1, batch_norm=False),
        _mlp(steps=10),
        _mlp(seed=2),
    ]
    keys = [c.stack_key() for c in configs]
    # One slot: as few stacks as the keys allow; the CNN alone.
    assert plan_stacks(keys, slots=1) == [[0, 4], [1], [2], [3]]
    # Two slots: compatible runs spread over both.
    assert plan_stacks([_mlp(seed=s).stack_key() for s in range(5)], slots=2) == [
        [0, 1, 2],
        [3, 4],
    ]
    # Two groups (BN, no-BN) on two slots: a slot each, not two half stacks of each.
    arms = [_mlp(seed=s, batch_norm=s % 2 == 0).stack_key() for s in range(8)]
    assert plan_stacks(arms, slots=2) == [[0, 2, 4, 6], [1, 3, 5, 7]]
