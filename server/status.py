"""The run status machine: the one place that says which status may follow which."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # the server stopped while the run was queued or running

    @property
    def active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def resumable(self) -> bool:
        return self in (RunStatus.INTERRUPTED, RunStatus.FAILED)


TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset(
        {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.INTERRUPTED}
    ),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.DIVERGED,
            RunStatus.INTERRUPTED,
        }
    ),
    RunStatus.COMPLETED: frozenset(),
    # A failed or interrupted run may be resumed from its last checkpoint.
    RunStatus.FAILED: frozenset({RunStatus.QUEUED}),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.DIVERGED: frozenset(),
    RunStatus.INTERRUPTED: frozenset({RunStatus.QUEUED}),
}


class InvalidTransition(Exception):
    pass


def check_transition(old: RunStatus, new: RunStatus) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"a {old} run cannot become {new}")
