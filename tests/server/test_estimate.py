"""The time estimate of planned runs from the runs this server finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bnlab.model.config import RunConfig
from bnlab.server.estimate import estimate, seconds_per_step
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


def test_the_rate_is_total_seconds_over_total_steps_per_architecture():
    runs = [finished("mlp", 1000, 4.0), finished("mlp", 3000, 8.0), finished("cnn", 100, 10.0)]
    rates = seconds_per_step(runs)
    assert rates["mlp"] == (pytest.approx(12.0 / 4000), 2)
    assert rates["cnn"] == (pytest.approx(0.1), 1)


def test_runs_that_did_not_complete_say_nothing_about_speed():
    runs = [finished("mlp", 1000, 1.0, status) for status in ("failed", "cancelled", "diverged")]
    assert seconds_per_step(runs) == {}


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
