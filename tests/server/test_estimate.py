"""The time estimate of planned runs from the runs this server finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bnlab.model.config import RunConfig
from bnlab.server.estimate import RunTime, estimate, run_times
from bnlab.server.schemas import RunPublic

START = datetime(2026, 1, 1, tzinfo=UTC)


def finished(arch: str, steps: int, seconds: float, status: str = "completed") -> RunPublic:
    return RunPublic(
        id=f"{arch}-{steps}-{seconds}",
        label="x",
        comparison_id=None,
        config=RunConfig(arch=arch, steps=steps, eval_every=min(steps, 100)),
        status=status,
        step=steps,
        total_steps=steps,
        created_at=START,
        started_at=START,
        finished_at=START + timedelta(seconds=seconds),
    )


def test_runs_of_one_length_give_total_seconds_over_total_steps():
    runs = [finished("mlp", 1000, 4.0), finished("mlp", 1000, 6.0), finished("cnn", 100, 10.0)]
    times = run_times(runs)
    assert times["mlp"] == RunTime(fixed=0.0, per_step=pytest.approx(10.0 / 2000), runs=2)
    assert times["cnn"] == RunTime(fixed=0.0, per_step=pytest.approx(0.1), runs=1)


def test_runs_of_several_lengths_separate_start_up_from_the_steps():
    # 5 s to start, then 2 ms a step; as numpy's least squares line has it
    runs = [
        finished("mlp", steps, 5.0 + 0.002 * steps + noise)
        for steps, noise in [(20, 0.1), (20, -0.1), (1000, 0.05), (4000, -0.05)]
    ]
    slope, intercept = np.polyfit([20, 20, 1000, 4000], [r_wall(r) for r in runs], 1)
    time = run_times(runs)["mlp"]
    assert (time.fixed, time.per_step, time.runs) == (
        pytest.approx(intercept),
        pytest.approx(slope),
        4,
    )
    # tiny test-sized runs must not make a long run look like hours
    assert time.seconds(4000) == pytest.approx(13.0, rel=0.02)


def test_a_line_that_makes_no_sense_falls_back_to_the_plain_rate():
    # the longer run was quicker: load noise, not a negative cost per step
    runs = [finished("mlp", 100, 10.0), finished("mlp", 200, 8.0)]
    assert run_times(runs)["mlp"] == RunTime(fixed=0.0, per_step=pytest.approx(18.0 / 300), runs=2)


def r_wall(run) -> float:
    return (run.finished_at - run.started_at).total_seconds()


def test_runs_that_did_not_complete_say_nothing_about_speed():
    runs = [finished("mlp", 1000, 1.0, status) for status in ("failed", "cancelled", "diverged")]
    assert run_times(runs) == {}


def test_planned_runs_share_the_workers():
    planned = [RunConfig(arch="mlp", steps=2000, eval_every=100)] * 4
    got = estimate(planned, [finished("mlp", 1000, 5.0)], workers=2)
    # 4 runs x 2,000 steps x 5 ms on 2 workers
    assert got.seconds == pytest.approx(20.0)
    assert got.basis == {"mlp": 1}
    # one run cannot use two workers
    assert estimate(planned[:1], [finished("mlp", 1000, 5.0)], workers=2).seconds == 10.0


def test_an_architecture_never_finished_here_makes_the_estimate_unknown():
    planned = [RunConfig(arch="cnn", steps=100, eval_every=50)]
    got = estimate(planned, [finished("mlp", 1000, 5.0)], workers=2)
    assert got.seconds is None and got.basis == {"mlp": 1}
