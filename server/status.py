"""Run status, in one place: the statuses, how a worker can say a run ended, which
statuses are active, terminal or resumable, and which status may follow which.

The page keeps its copy of the names in frontend/js/status.js (it only knows the
server through its API); tests/server/test_status.py holds the two together.
"""

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
        """Waiting for or holding a worker: cannot be deleted, can be cancelled."""
        return self in ACTIVE

    @property
    def terminal(self) -> bool:
        """Nothing more will happen to the run unless a user resumes it."""
        return self in TERMINAL

    @property
    def resumable(self) -> bool:
        return self in RESUMABLE


class Outcome(StrEnum):
    """How a worker (or the executor on its behalf) says a run ended: each is the
    terminal status the run takes, see `status`."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"
    FAILED = "failed"

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.value)


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
ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
# A run that ended with a result the statistics count: completed, or diverged (a
# failure of its arm, never dropped). Cancelled, failed and interrupted runs have none.
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.DIVERGED})
TERMINAL = frozenset(RunStatus) - ACTIVE
# Derived, not listed: a status is resumable exactly when it may go back to the queue.
RESUMABLE = frozenset(s for s in TERMINAL if RunStatus.QUEUED in TRANSITIONS[s])


class InvalidTransition(Exception):
    pass


def check_transition(old: RunStatus, new: RunStatus) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"a {old} run cannot become {new}")
