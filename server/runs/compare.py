"""What `/api/compare` says about runs: milestones, best accuracy, BN speedup."""

from __future__ import annotations

from datetime import datetime

from ..experiments.statistics import MILESTONES, SPEEDUP_AT, first_step_reaching
from ..storage.points import PointPublic
from .schemas import PairSpeedup, RunPublic, RunSummary


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def summarize_run(run: RunPublic, points: list[PointPublic]) -> RunSummary:
    scored = [p for p in points if p.val_acc is not None]
    best = max(scored, key=lambda p: (p.val_acc, -p.step), default=None)
    metrics = run.test_metrics
    return RunSummary(
        test_loss=metrics.test_loss if metrics else None,
        test_accuracy=metrics.test_accuracy if metrics else None,
        log_loss=metrics.log_loss if metrics else None,
        best_val_acc=best.val_acc if best else None,
        best_val_acc_step=best.step if best else None,
        steps_to={f"{m:.2f}": first_step_reaching(points, m) for m in MILESTONES},
        # Training time as the run itself counted it (evaluations included),
        # which continues across a resume, unlike the gap between timestamps.
        wall_time=points[-1].elapsed if points else _seconds(run.started_at, run.finished_at),
    )


def twins_key(run: RunPublic) -> tuple | None:
    """What a run's BN/no-BN twin shares with it: its comparison, or within an
    experiment the config but for batch norm (the same cell and seed); None for a
    single run, which has no twin."""
    if run.comparison_id:
        return ("comparison", run.comparison_id)
    if run.experiment_id:
        return ("experiment", run.experiment_id, run.config.model_dump_json(exclude={"batch_norm"}))
    return None


def pair_speedups(runs: list[RunPublic], summaries: dict[str, RunSummary]) -> list[PairSpeedup]:
    """For every pair of twins with both runs selected (a comparison's, or an
    experiment's seed in one cell): the BN speedup."""
    pairs = []
    by_pair: dict[tuple, dict[bool, list[RunPublic]]] = {}
    for run in runs:
        key = twins_key(run)
        if key is not None:
            by_pair.setdefault(key, {}).setdefault(run.config.batch_norm, []).append(run)
    for arms in by_pair.values():
        # Exactly one run a side, or no pair: which of two alike would be the twin?
        if sorted((bn, len(r)) for bn, r in arms.items()) != [(False, 1), (True, 1)]:
            continue
        twins = {bn: r[0] for bn, r in arms.items()}
        bn_steps = summaries[twins[True].id].steps_to[SPEEDUP_AT]
        plain_steps = summaries[twins[False].id].steps_to[SPEEDUP_AT]
        speedup = plain_steps / bn_steps if bn_steps and plain_steps else None
        pairs.append(
            PairSpeedup(
                comparison_id=twins[True].comparison_id,
                experiment_id=twins[True].experiment_id,
                bn=twins[True].id,
                no_bn=twins[False].id,
                speedup=speedup,
            )
        )
    return pairs
