"""The time estimate of planned runs from the runs this server finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bnlab.model.config import RunConfig
from bnlab.server.experiments.estimate import RunTime, estimate, remaining, run_times
from bnlab.server.runs.schemas import RunPublic

START = datetime(2026, 1, 1, tzinfo=UTC)


def finished(
    arch: str,
    steps: int,
    seconds: float,
    status: str = "completed",
    eval_every: int | None = None,
    diagnostics: str = "off",
    grouped: bool = True,
) -> RunPublic:
    """A run of an experiment (`grouped`), or a single run."""
    return RunPublic(
        id=f"{arch}-{steps}-{seconds}-{grouped}",
        label="x",
        comparison_id=None,
        experiment_id="e" if grouped else None,
        config=RunConfig(
            arch=arch,
            steps=steps,
            eval_every=eval_every or min(steps, 100),
            diagnostics=diagnostics,
        ),
        status=status,
        step=steps,
        total_steps=steps,
        created_at=START,
        started_at=START,
        finished_at=START + timedelta(seconds=seconds),
    )


def planned(
    arch: str = "mlp", steps: int = 2000, eval_every: int = 100, diagnostics: str = "off"
) -> RunConfig:
    return RunConfig(arch=arch, steps=steps, eval_every=eval_every, diagnostics=diagnostics)


def test_runs_of_one_length_give_total_seconds_over_total_steps():
    runs = [finished("mlp", 1000, 4.0), finished("mlp", 1000, 6.0), finished("cnn", 100, 10.0)]
    times = run_times(runs)
    assert times[("mlp", "off")] == RunTime(0.0, pytest.approx(10.0 / 2000), 0.0, 2, 100)
    assert times[("cnn", "off")] == RunTime(0.0, pytest.approx(0.1), 0.0, 1, 100)


def test_runs_of_several_lengths_separate_start_up_from_the_steps():
    # 5 s to start, then 2 ms a step (evaluations, every 20 steps, included)
    runs = [
        finished("mlp", steps, 5.0 + 0.002 * steps + noise, eval_every=20)
        for steps, noise in [(20, 0.1), (20, -0.1), (1000, 0.05), (4000, -0.05)]
    ]
    slope, intercept = np.polyfit([20, 20, 1000, 4000], [r_wall(r) for r in runs], 1)
    time = run_times(runs)[("mlp", "off")]
    assert (time.fixed, time.per_step, time.per_eval, time.runs) == (
        pytest.approx(intercept),
        pytest.approx(slope),
        0.0,
        4,
    )
    # tiny test-sized runs must not make a long run look like hours
    assert time.seconds(planned(steps=4000, eval_every=20)) == pytest.approx(13.0, rel=0.02)


def test_runs_evaluating_at_different_intervals_price_an_evaluation():
    # 3 s to start, 2 ms a step, 50 ms an evaluation: lstsq's numbers, and a planned run
    # at an interval none of them had is timed right.
    def wall(steps: int, every: int) -> float:
        return 3.0 + 0.002 * steps + 0.05 * len(planned(steps=steps, eval_every=every).eval_steps())

    shapes = [(200, 10), (1000, 100), (2000, 50), (600, 20)]
    runs = [finished("mlp", s, wall(s, e), eval_every=e) for s, e in shapes]
    terms = [[1, s, len(planned(steps=s, eval_every=e).eval_steps())] for s, e in shapes]
    want, *_ = np.linalg.lstsq(np.array(terms, float), [r_wall(r) for r in runs], rcond=None)
    time = run_times(runs)[("mlp", "off")]
    assert [time.fixed, time.per_step, time.per_eval] == pytest.approx(list(want))
    assert time.eval_every is None
    got = estimate([planned(steps=3000, eval_every=500)], runs, workers=1)
    assert got.seconds == pytest.approx(wall(3000, 500))
    assert got.assumptions == []


def test_each_diagnostics_level_is_timed_by_its_own_runs():
    # basic diagnostics double an MLP run here; the estimate must not average them away
    runs = [finished("mlp", 1000, 4.0), finished("mlp", 1000, 8.0, diagnostics="basic")]
    off = estimate([planned(steps=1000)], runs, workers=1)
    basic = estimate([planned(steps=1000, diagnostics="basic")], runs, workers=1)
    assert (off.seconds, basic.seconds) == (pytest.approx(4.0), pytest.approx(8.0))
    assert off.basis == basic.basis == {"mlp": 2}


def test_what_the_estimate_assumes_is_said():
    runs = [finished("mlp", 1000, 4.0, eval_every=50)]
    got = estimate([planned(steps=1000, eval_every=50, diagnostics="full")], runs, workers=1)
    assert got.seconds == pytest.approx(4.0)
    assert got.assumptions == [
        "no MLP run with diagnostics full finished here: timed as its runs with diagnostics off"
    ]
    got = estimate([planned(steps=1000, eval_every=200)] * 2, runs, workers=1)
    assert got.assumptions == [
        "the MLP runs measured evaluate every 50 steps: runs evaluating every 200 are timed "
        "as if they did too"
    ]


def test_a_line_that_makes_no_sense_falls_back_to_the_plain_rate():
    # the longer run was quicker: load noise, not a negative cost per step
    runs = [finished("mlp", 100, 10.0), finished("mlp", 200, 8.0)]
    assert run_times(runs)[("mlp", "off")] == RunTime(0.0, pytest.approx(18.0 / 300), 0.0, 2, 100)


def r_wall(run) -> float:
    return (run.finished_at - run.started_at).total_seconds()


def test_runs_that_did_not_complete_say_nothing_about_speed():
    runs = [finished("mlp", 1000, 1.0, status) for status in ("failed", "cancelled", "diverged")]
    assert run_times(runs) == {}


def test_planned_runs_share_the_workers():
    four = [planned()] * 4
    got = estimate(four, [finished("mlp", 1000, 5.0)], workers=2)
    # 4 runs x 2,000 steps x 5 ms on 2 workers
    assert got.seconds == pytest.approx(20.0)
    assert got.basis == {"mlp": 1}
    # one run cannot use two workers
    assert estimate(four[:1], [finished("mlp", 1000, 5.0)], workers=2).seconds == 10.0


def test_an_architecture_never_finished_here_makes_the_estimate_unknown():
    got = estimate([planned("cnn", steps=100, eval_every=50)], [finished("mlp", 1000, 5.0)], 2)
    assert got.seconds is None and got.basis == {"mlp": 1}


def test_single_runs_time_an_experiment_only_where_no_grouped_run_finished():
    # A single run may have had every core to itself; an experiment's runs share them.
    single, shared = finished("mlp", 1000, 2.0, grouped=False), finished("mlp", 1000, 3.0)
    plan = [planned(steps=1000)]
    both = estimate(plan, [single, shared], workers=1)
    assert both.seconds == pytest.approx(3.0)
    assert both.basis == {"mlp": 1} and both.assumptions == []
    only_single = estimate(plan, [single, finished("cnn", 100, 9.0)], workers=1)
    assert only_single.seconds == pytest.approx(2.0) and only_single.basis == {"mlp": 1, "cnn": 1}
    assert only_single.assumptions == [
        "no MLP run of an experiment or comparison finished here: timed as its single runs, "
        "which may have had every core to themselves (it may take longer)"
    ]


def stacked_run(steps: int, seconds: float, stack_size: int, i: int) -> RunPublic:
    run = finished("mlp", steps, seconds)
    return run.model_copy(update={"id": f"s{i}", "path": "stacked", "stack_size": stack_size})


def test_stacked_runs_are_timed_by_their_share_of_a_stack_and_grouped_as_the_server_will():
    # Four runs per stack took 8 s together: 2 s each of the stack's time.
    runs = [stacked_run(1000, 8.0, 4, i) for i in range(4)]
    got = estimate([planned(steps=1000, eval_every=100)] * 8, runs, workers=2, stacking=True)
    # Two stacks of four on two workers, side by side: 4 x 2 s each.
    assert got.seconds == pytest.approx(8.0) and got.assumptions == []
    # A server that does not stack trains them one by one, as runs of their own; with
    # only stacked runs to go by, their shares are all there is.
    alone = estimate([planned(steps=1000, eval_every=100)] * 8, runs, workers=2)
    assert alone.seconds == pytest.approx(8 * 2.0 / 2)


def test_stacks_with_no_stacked_run_measured_are_timed_as_runs_of_their_own_and_say_so():
    got = estimate([planned(steps=1000)] * 4, [finished("mlp", 1000, 5.0)], 2, stacking=True)
    assert got.seconds == pytest.approx(4 * 5.0 / 2)
    assert any("no stacked MLP run" in a for a in got.assumptions)


def _pending(steps: int, done: int, status: str = "running") -> RunPublic:
    run = finished("mlp", steps, 1.0, status=status)
    return run.model_copy(update={"id": f"pending-{steps}-{done}", "step": done})


def test_an_experiments_time_left_is_the_plans_model_by_the_steps_left():
    basis = [finished("mlp", 1000, 4.0), finished("mlp", 1000, 6.0)]
    whole = estimate([planned(steps=1000, eval_every=100)] * 2, basis, workers=2).seconds
    pending = [_pending(1000, 250), _pending(1000, 0, status="queued")]
    assert remaining(pending, basis, workers=2) == pytest.approx(whole * 1750 / 2000)
    # Nothing of the architecture finished here: the plan cannot tell, nor can this.
    assert remaining(pending, [finished("cnn", 100, 10.0)], workers=2) is None
    assert remaining([], basis, workers=2) == 0.0
