"""How long a set of runs would take on this server, from the speed of the runs
it has already finished.

Rough on purpose, and says so by returning None ("unknown") rather than guess:
the only evidence is this server's own completed runs of the same architecture
(the CNN is ~50x slower per step than the paper's MLP, so one cannot stand in
for the other). A run's wall time, start to finish, already holds its start-up,
its evaluations and the sharing of the CPU with the runs beside it, so the
rate is total seconds over total steps of those runs, and the planned runs
share the workers evenly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def seconds_per_step(finished: Iterable[RunPublic]) -> dict[str, tuple[float, int]]:
    """Per architecture: wall seconds per step over the completed runs, and how many."""
    seconds: dict[str, float] = {}
    steps: dict[str, int] = {}
    runs: dict[str, int] = {}
    for run in finished:
        if run.status != RunStatus.COMPLETED or not (run.started_at and run.finished_at):
            continue
        wall = (run.finished_at - run.started_at).total_seconds()
        if wall <= 0 or run.step <= 0:
            continue
        arch = run.config.arch
        seconds[arch] = seconds.get(arch, 0.0) + wall
        steps[arch] = steps.get(arch, 0) + run.step
        runs[arch] = runs.get(arch, 0) + 1
    return {arch: (seconds[arch] / steps[arch], runs[arch]) for arch in seconds}


def estimate(planned: Sequence[RunConfig], finished: Iterable[RunPublic], workers: int) -> Estimate:
    """Wall seconds for `planned` on `workers` workers, or None when an
    architecture they use has never finished a run here."""
    rates = seconds_per_step(finished)
    basis = {arch: runs for arch, (_, runs) in rates.items()}
    if any(config.arch not in rates for config in planned):
        return Estimate(seconds=None, basis=basis)
    total = sum(config.steps * rates[config.arch][0] for config in planned)
    return Estimate(seconds=total / max(1, min(workers, len(planned))), basis=basis)
