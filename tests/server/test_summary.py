"""What /api/compare computes from a run and its points: milestones, best
validation accuracy, wall time and the BN speedup of a comparison."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bnlab.model.config import RunConfig
from bnlab.model.events import ProbePercentiles
from bnlab.model.events import TestMetrics as Metrics
from bnlab.server.runs.compare import first_step_reaching, pair_speedups, summarize_run
from bnlab.server.runs.schemas import RunPublic
from bnlab.server.storage.points import PointPublic

START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PROBE = ProbePercentiles(p15=-1.0, p50=0.0, p85=1.0)


def run(
    run_id: str = "r",
    *,
    batch_norm: bool = True,
    comparison_id: str | None = None,
    experiment_id: str | None = None,
    seed: int = 0,
    metrics: Metrics | None = None,
    finished: datetime | None = None,
) -> RunPublic:
    return RunPublic(
        id=run_id,
        label=run_id,
        comparison_id=comparison_id,
        experiment_id=experiment_id,
        config=RunConfig(batch_norm=batch_norm, seed=seed),
        status="completed" if finished else "running",
        step=0,
        total_steps=100,
        created_at=START,
        started_at=START,
        finished_at=finished,
        test_metrics=metrics,
    )


def curve(*accuracies: float | None, every: int = 100) -> list[PointPublic]:
    return [
        PointPublic(
            seq=i + 1,
            step=i * every,
            val_loss=0.1,
            val_acc=acc,
            train_loss=0.1,
            examples_per_sec=10.0,
            elapsed=2.0 * i,
            probe=PROBE,
        )
        for i, acc in enumerate(accuracies)
    ]


def test_the_first_step_reaching_an_accuracy_counts_reaching_it_exactly():
    points = curve(0.5, None, 0.97, 0.98, 0.96, 0.99)
    assert first_step_reaching(points, 0.97) == 200
    assert first_step_reaching(points, 0.98) == 300
    assert first_step_reaching(points, 0.995) is None
    assert first_step_reaching([], 0.5) is None


def test_a_summary_has_the_milestones_the_best_accuracy_and_the_test_metrics():
    metrics = Metrics(test_loss=0.05, test_accuracy=0.985, log_loss=0.06)
    points = curve(0.5, 0.975, 0.99, None, 0.99, 0.985)
    summary = summarize_run(run(metrics=metrics), points)
    assert summary.steps_to == {"0.97": 100, "0.98": 200, "0.99": 200}
    # A tie on accuracy goes to the earlier step; an evaluation without accuracy is skipped.
    assert (summary.best_val_acc, summary.best_val_acc_step) == (0.99, 200)
    assert (summary.test_loss, summary.test_accuracy, summary.log_loss) == (0.05, 0.985, 0.06)
    assert summary.wall_time == 10.0  # the run's own clock at its last evaluation


def test_a_run_without_points_takes_its_wall_time_from_its_timestamps():
    finished = START.replace(minute=1, second=30)
    summary = summarize_run(run(finished=finished), [])
    assert summary.wall_time == 90.0
    assert summary.best_val_acc is None and summary.best_val_acc_step is None
    assert summary.steps_to == {"0.97": None, "0.98": None, "0.99": None}
    assert summary.test_accuracy is None
    assert summarize_run(run(), []).wall_time is None  # not finished: no time to tell


def test_the_speedup_is_no_bn_steps_over_bn_steps_to_98_percent():
    bn = run("bn", comparison_id="c")
    plain = run("plain", batch_norm=False, comparison_id="c")
    summaries = {
        "bn": summarize_run(bn, curve(0.9, 0.98, every=100)),  # 98 % at step 100
        "plain": summarize_run(plain, curve(0.9, 0.95, 0.97, 0.981, every=100)),  # at 300
    }
    [pair] = pair_speedups([plain, bn], summaries)
    assert (pair.comparison_id, pair.bn, pair.no_bn) == ("c", "bn", "plain")
    assert pair.speedup == pytest.approx(3.0)


def test_no_speedup_when_a_twin_never_reaches_98_percent():
    bn = run("bn", comparison_id="c")
    plain = run("plain", batch_norm=False, comparison_id="c")
    summaries = {"bn": summarize_run(bn, curve(0.99)), "plain": summarize_run(plain, curve(0.5))}
    [pair] = pair_speedups([bn, plain], summaries)
    assert pair.speedup is None


def test_only_comparisons_with_both_twins_selected_make_a_pair():
    alone = run("alone", comparison_id="c1")
    single = run("single")
    summaries = {r.id: summarize_run(r, curve(0.99)) for r in (alone, single)}
    assert pair_speedups([alone, single], summaries) == []


def test_an_experiments_twins_pair_by_cell_and_seed():
    """'Open runs' on a cell selects its runs: each seed's BN and no-BN run are twins
    (the same config but batch norm), as a comparison's two runs are."""
    runs = [
        run(f"{arm}{seed}", batch_norm=arm == "bn", experiment_id="e", seed=seed)
        for seed in (0, 1)
        for arm in ("bn", "plain")
    ]
    runs.append(run("other-bn", experiment_id="e2", seed=0))  # another experiment's
    summaries = {r.id: summarize_run(r, curve(0.9, 0.98, every=100)) for r in runs}
    pairs = pair_speedups(runs, summaries)
    assert [(p.experiment_id, p.comparison_id, p.bn, p.no_bn) for p in pairs] == [
        ("e", None, "bn0", "plain0"),
        ("e", None, "bn1", "plain1"),
    ]
