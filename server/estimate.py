"""How long a set of runs would take on this server, from the speed of the runs
it has already finished.

Rough on purpose, and says so by returning None ("unknown") rather than guess:
the only evidence is this server's own completed runs of the same architecture
(the CNN is ~50x slower per step than the paper's MLP, so one cannot stand in
for the other). A run's wall time, start to finish, already holds its start-up,
its evaluations and the sharing of the CPU with the runs beside it. Start-up is
a fixed cost (seconds of TensorFlow's import and tracing, whatever the length),
so where the finished runs have different lengths a straight line, wall =
fixed + steps x per step, is fitted to them: a few 20-step runs must not make a
4,000-step run look like hours. With one length only, the rate is total seconds
over total steps. The planned runs share the workers evenly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from bnlab.model.config import RunConfig
from bnlab.server.schemas import RunPublic
from bnlab.server.status import RunStatus

# The newest completed runs the estimate reads: recent enough to be this
# machine as it is now, enough to smooth one odd run out.
BASIS_RUNS = 200


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: a planned architecture never finished a run here
    basis: dict[str, int]  # completed runs measured, by architecture


@dataclass(frozen=True)
class RunTime:
    """Wall seconds of one run of an architecture: `fixed` + steps x `per_step`."""

    fixed: float
    per_step: float
    runs: int  # completed runs it was measured on

    def seconds(self, steps: int) -> float:
        return self.fixed + steps * self.per_step


def run_times(finished: Iterable[RunPublic]) -> dict[str, RunTime]:
    """Per architecture, how a run's wall time grows with its steps, from the completed runs."""
    samples: dict[str, list[tuple[int, float]]] = {}
    for run in finished:
        if run.status != RunStatus.COMPLETED or not (run.started_at and run.finished_at):
            continue
        wall = (run.finished_at - run.started_at).total_seconds()
        if wall <= 0 or run.step <= 0:
            continue
        samples.setdefault(run.config.arch, []).append((run.step, wall))
    return {arch: _fit(points) for arch, points in samples.items()}


def _fit(points: list[tuple[int, float]]) -> RunTime:
    steps = [s for s, _ in points]
    walls = [w for _, w in points]
    if len(set(steps)) > 1:
        line = stats.linregress(steps, walls)
        # A line that says a run costs nothing to start, or that longer runs are quicker,
        # is noise over too narrow a range of lengths: fall back to the plain rate.
        if line.slope > 0 and line.intercept >= 0:
            return RunTime(
                fixed=float(line.intercept), per_step=float(line.slope), runs=len(points)
            )
    return RunTime(fixed=0.0, per_step=sum(walls) / sum(steps), runs=len(points))


def estimate(planned: Sequence[RunConfig], finished: Iterable[RunPublic], workers: int) -> Estimate:
    """Wall seconds for `planned` on `workers` workers, or None when an
    architecture they use has never finished a run here."""
    times = run_times(finished)
    basis = {arch: time.runs for arch, time in times.items()}
    if any(config.arch not in times for config in planned):
        return Estimate(seconds=None, basis=basis)
    total = sum(times[config.arch].seconds(config.steps) for config in planned)
    return Estimate(seconds=total / max(1, min(workers, len(planned))), basis=basis)
