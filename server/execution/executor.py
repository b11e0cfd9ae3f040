"""Runs training jobs somewhere else and reports what they say.

`Executor` is the whole interface the rest of the server uses: `submit`,
`cancel`, and an async stream of `TrainingEvent` / `RunEnded` messages. The
scheduler (which run goes next) lives in the run service (`runs.service`); an
executor only runs what it is given, so the Ray executor (`ray_executor`) can
replace worker processes (`processes.ProcessExecutor`) without touching the API,
the store or the stream.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ...model.config import RunConfig
from ...model.events import Event
from ..status import Outcome
from .cluster import ClusterPublic


class ExecutorKind(StrEnum):
    PROCESS = "process"  # worker processes on the server's machine
    RAY = "ray"  # actors on a Ray cluster (execution.ray_executor)


@dataclass(frozen=True)
class TrainingEvent:
    run_id: str
    event: Event
    sent_at: float | None = None  # unix time the worker sent it


@dataclass(frozen=True)
class RunEnded:
    run_id: str
    outcome: Outcome
    error: str | None = None


ExecutorMessage = TrainingEvent | RunEnded


class Executor(Protocol):
    kind: ExecutorKind
    capacity: int  # runs (or stacks) at once; the scheduler starts no more
    stacking: bool  # trains an experiment's compatible runs as stacks (issue #27)

    def submit(self, run_id: str, config: RunConfig, alone: bool = False) -> None:
        """Start the run now (from its checkpoint, if it has one); the caller
        makes sure a slot is free. `alone`: no other run trains or waits, and
        none will share this one's results (server.runs), so an executor that
        splits one machine between its slots may give this run all of it."""

    def submit_stack(self, runs: list[tuple[str, RunConfig]]) -> None:
        """Start `runs` (which share `RunConfig.stack_key`) as one stack on one slot;
        only asked of an executor whose `stacking` is true. Each run reports and ends
        as if it trained alone (execution.stacks)."""

    def cancel(self, run_id: str) -> None:
        """Ask the run to stop; it ends with a `RunEnded(outcome=Outcome.CANCELLED)`."""

    def discard_checkpoint(self, run_id: str) -> None:
        """Forget the run's saved training state (it will not be resumed)."""

    def busy(self) -> int: ...

    def cluster(self) -> ClusterPublic | None:
        """The cluster the runs train on, for /api/health; None: this machine."""

    def messages(self) -> AsyncIterator[ExecutorMessage]: ...

    async def close(self) -> None: ...


def exit_reason(code: int | None, process: str = "the worker process") -> str:
    """Why `process` ended, from its exit code, in words for the run's error."""
    if code is None:
        return f"{process} vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"{process} was killed by {name}{hint}"
    return f"{process} exited with code {code}"
