"""How long a set of runs would take on this server, from the speed of the runs
it has already finished.

Rough on purpose, and says so: it returns None ("unknown") rather than guess when
an architecture never finished a run here (the CNN is far slower per step than the
paper's MLP, bench/RESULTS.md, so one cannot stand in for the other), and it lists what else it had
to assume. A run's wall time, start to finish, already holds its start-up, its
evaluations and the sharing of the CPU with the runs beside it. Planned runs are
an experiment's, which always train on a worker's share of the cores, so they are
timed by the runs of experiments and comparisons, which did too; a single run may
have had every core to itself (server.runs), and single runs are used only for an
architecture no grouped run has finished, with the estimate saying so. It is
modelled as

    wall = start-up + steps x per step + evaluations x per evaluation

and runs are comparable only with the same architecture and diagnostics level:
diagnostics trace their measures at start-up (about doubling a short MLP run) and
measure at every evaluation. Each such group is fitted on its own by non-negative
least squares (scipy's `nnls`: no cost can be below zero), with only the terms its
runs can tell apart:

- evaluations need runs that evaluate at different intervals (`eval_every`);
  otherwise their cost is folded into the cost per step, at the measured runs'
  interval, and a planned run evaluating at another interval is timed as if it did
  not (the estimate says so);
- start-up needs runs of different lengths, so that a few 20-step test runs cannot
  make a 4,000-step run look like hours; with one length only, or a fit that says
  longer runs are free, the rate is total seconds over total steps.

A planned level no finished run of its architecture had is timed from that
architecture's runs of every level, and the estimate says so. The planned runs
share the workers evenly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...model.config import RunConfig
from ...model.events import TrainingPath
from ..execution.stacks import plan_stacks
from ..runs.schemas import RunPublic
from ..status import RunStatus

# scipy: imported where used (statistics.py says why).

# The newest completed runs the estimate read: recent enough to be this
# machine as it is now, enough to smooth one odd run out.
BASIS_RUNS = 200


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: a planned architecture never finished a run here
    basis: dict[str, int]  # completed runs measured, by architecture
    assumptions: list[str] = field(default_factory=list)  # what the estimate had to assume


@dataclass(frozen=True)
class RunTime:
    """Wall seconds of one run of a group: `fixed` + steps x `per_step` + evaluations x
    `per_eval`. When the group's runs all evaluate at one interval, `per_eval` is 0 and
    `eval_every` is that interval, whose evaluations `per_step` includes."""

    fixed: float
    per_step: float
    per_eval: float
    runs: int  # completed runs it was measured on
    eval_every: int | None = None

    def seconds(self, config: RunConfig) -> float:
        evaluations = len(config.eval_steps())
        return self.fixed + config.steps * self.per_step + evaluations * self.per_eval


@dataclass(frozen=True)
class _Sample:
    steps: int
    evaluations: int
    eval_every: int
    wall: float


def _samples(
    finished: Iterable[RunPublic], stacked: bool = False
) -> dict[tuple[str, str], list[_Sample]]:
    """The completed runs' wall times, by (architecture, diagnostics level): of the runs
    that trained alone, or (`stacked`) each stacked run's share of its stack's time."""
    groups: dict[tuple[str, str], list[_Sample]] = {}
    for run in finished:
        if run.status != RunStatus.COMPLETED or not (run.started_at and run.finished_at):
            continue
        if (run.path == TrainingPath.STACKED) != stacked:
            continue
        wall = (run.finished_at - run.started_at).total_seconds() / (run.stack_size or 1)
        if wall <= 0 or run.step <= 0:
            continue
        config = run.config
        sample = _Sample(config.steps, len(config.eval_steps()), config.eval_every, wall)
        groups.setdefault((config.arch, str(config.diagnostics)), []).append(sample)
    return groups


def _fit(samples: Sequence[_Sample]) -> RunTime:
    from scipy import optimize

    walls = np.array([s.wall for s in samples])
    steps = np.array([s.steps for s in samples], dtype=np.float64)
    evaluations = np.array([s.evaluations for s in samples], dtype=np.float64)
    intervals = {s.eval_every for s in samples}
    if len(intervals) > 1:
        terms = np.column_stack([np.ones_like(steps), steps, evaluations])
        # Scaled columns: the rank says whether the runs tell the three costs apart.
        if np.linalg.matrix_rank(terms / np.linalg.norm(terms, axis=0)) == 3:
            (fixed, per_step, per_eval), _ = optimize.nnls(terms, walls)
            if per_step > 0:
                return RunTime(float(fixed), float(per_step), float(per_eval), len(samples))
    # One interval: it is in per_step, and the plan says so when a run differs. Several
    # that the fit could not tell apart: no one interval to name.
    interval = intervals.pop() if len(intervals) == 1 else None
    if len(set(steps)) > 1:
        terms = np.column_stack([np.ones_like(steps), steps])
        (fixed, per_step), _ = optimize.nnls(terms, walls)
        # A fit that says longer runs cost nothing more is noise over too narrow a range
        # of lengths: fall back to the plain rate.
        if per_step > 0:
            return RunTime(float(fixed), float(per_step), 0.0, len(samples), interval)
    return RunTime(0.0, float(walls.sum() / steps.sum()), 0.0, len(samples), interval)


def run_times(finished: Iterable[RunPublic]) -> dict[tuple[str, str], RunTime]:
    """By (architecture, diagnostics level), how a run's wall time grows with its steps
    and evaluations, from the completed runs."""
    return {group: _fit(samples) for group, samples in _samples(finished).items()}


def _grouped(run: RunPublic) -> bool:
    return run.experiment_id is not None or run.comparison_id is not None


def _shared_basis(finished: Iterable[RunPublic]) -> tuple[list[RunPublic], set[str]]:
    """The runs to time an experiment's runs by: those of experiments and comparisons,
    and single runs only for an architecture none of those finished (returned too)."""
    runs = list(finished)
    grouped = {r.config.arch for r in runs if _grouped(r) and r.status == RunStatus.COMPLETED}
    basis = [r for r in runs if _grouped(r) or r.config.arch not in grouped]
    return basis, {r.config.arch for r in basis if not _grouped(r)}


def estimate(
    planned: Sequence[RunConfig],
    finished: Iterable[RunPublic],
    workers: int,
    stacking: bool = False,
) -> Estimate:
    """Wall seconds for `planned` on `workers` workers, or None when an
    architecture they use has never finished a run here. With `stacking` the
    planned runs that stack are grouped as the server will group them
    (execution.stacks) and each stack costs its runs' shares, as measured on
    the stacked runs that finished here."""
    finished, singles = _shared_basis(finished)
    in_stacks = _samples(finished, stacked=True)
    stack_times = {group: _fit(runs) for group, runs in in_stacks.items()}
    # A group known only from stacks times its runs' shares: all there is to go by.
    samples = {**in_stacks, **_samples(finished)}
    times = {group: _fit(runs) for group, runs in samples.items()}
    by_arch: dict[str, list[_Sample]] = {}
    for (arch, _), runs in samples.items():
        by_arch.setdefault(arch, []).extend(runs)
    basis = {arch: len(runs) for arch, runs in by_arch.items()}
    if any(config.arch not in by_arch for config in planned):
        return Estimate(seconds=None, basis=basis)
    pooled = {arch: _fit(runs) for arch, runs in by_arch.items()}
    assumptions: dict[str, None] = {}  # in the order they arise, each once
    for arch in sorted(singles & {config.arch for config in planned}):
        assumptions[
            f"no {arch.upper()} run of an experiment or comparison finished here: timed as "
            "its single runs, which may have had every core to themselves (it may take longer)"
        ] = None
    seconds = []
    for config in planned:
        name, level = config.arch.upper(), str(config.diagnostics)
        stacks = stacking and config.stack_key() is not None
        time = stack_times.get((config.arch, level)) if stacks else None
        if stacks and time is None:
            assumptions[
                f"no stacked {name} run with diagnostics {level} finished here: its runs are "
                "timed as runs of their own (stacks train faster)"
            ] = None
        time = time or times.get((config.arch, level))
        if time is None:
            time = pooled[config.arch]
            measured = sorted(lvl for arch, lvl in samples if arch == config.arch)
            assumptions[
                f"no {name} run with diagnostics {level} finished here: timed as its runs "
                f"with diagnostics {' and '.join(measured)}"
            ] = None
        if time.eval_every is not None and time.eval_every != config.eval_every:
            assumptions[
                f"the {name} runs measured evaluate every {time.eval_every} steps: runs "
                f"evaluating every {config.eval_every} are timed as if they did too"
            ] = None
        seconds.append(time.seconds(config))
    # The workers share the stacks (or the runs) evenly; a stack costs its runs' shares.
    keys = [config.stack_key() if stacking else None for config in planned]
    stacks = plan_stacks(keys, workers)
    total = sum(seconds[i] for stack in stacks for i in stack)
    return Estimate(
        seconds=total / max(1, min(workers, len(stacks))),
        basis=basis,
        assumptions=list(assumptions),
    )


def remaining(
    pending: Sequence[RunPublic],
    finished: Iterable[RunPublic],
    workers: int,
    stacking: bool = False,
) -> float | None:
    """Wall seconds left for an experiment's `pending` (queued and running) runs, by the
    model a plan is timed with (`estimate`): their whole time, by the share of their
    steps still to train. None when that model cannot tell (see `estimate`)."""
    if not pending:
        return 0.0
    whole = estimate([run.config for run in pending], finished, workers, stacking)
    total = sum(run.total_steps for run in pending)
    if whole.seconds is None or total <= 0:
        return None
    left = sum(max(0, run.total_steps - run.step) for run in pending)
    return whole.seconds * left / total
