"""A fake executor for in-process tests of the services: it follows the `Executor`
protocol (bnlab.server.execution.executor) but trains nothing, so each test decides
when a run reports, ends or fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bnlab.model import events
from bnlab.model.config import RunConfig
from bnlab.model.events import Diagnostics, EvalEvent, ProbePercentiles
from bnlab.server.execution.executor import ExecutorMessage, RunEnded, TrainingEvent
from bnlab.server.status import Outcome


class FakeExecutor:
    """An `Executor` (bnlab.server.execution.executor) that runs nothing: it records what it
    is asked and reports what the test says."""

    stacking = False  # the services tests of stacks use a real server (test_stacks.py)

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running: list[str] = []
        self.submitted: list[str] = []
        self.alone: dict[str, bool] = {}  # run -> whether it may have the machine to itself
        self.cancelled: list[str] = []
        self.discarded: list[str] = []
        self._messages: asyncio.Queue[ExecutorMessage] = asyncio.Queue()

    def submit(self, run_id: str, config: RunConfig, alone: bool = False) -> None:
        assert len(self.running) < self.capacity, "submitted with no free slot"
        assert run_id not in self.running, "submitted twice"
        self.running.append(run_id)
        self.submitted.append(run_id)
        self.alone[run_id] = alone

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def discard_checkpoint(self, run_id: str) -> None:
        self.discarded.append(run_id)

    def busy(self) -> int:
        return len(self.running)

    async def messages(self) -> AsyncIterator[ExecutorMessage]:
        while True:
            yield await self._messages.get()

    async def close(self) -> None:
        pass

    # -- what the test makes the "workers" say --------------------------------

    def report(self, run_id: str, event) -> None:
        self._messages.put_nowait(TrainingEvent(run_id, event))

    def end(self, run_id: str, outcome: Outcome, error: str | None = None) -> None:
        self.running.remove(run_id)  # like a real executor: the slot is free once it says so
        self._messages.put_nowait(RunEnded(run_id, outcome, error))

    def complete(self, run_id: str) -> None:
        self.report(run_id, events.TestEvent(test_loss=0.1, test_accuracy=0.97, log_loss=0.1))
        self.end(run_id, Outcome.COMPLETED)

    async def settled(self) -> None:
        """Until the service has handled everything reported so far."""
        while not self._messages.empty():
            await asyncio.sleep(0)
        for _ in range(3):  # the message taken last is handled within a step or two
            await asyncio.sleep(0)


def evaluation(step: int, diagnostics: Diagnostics | None = None) -> EvalEvent:
    return EvalEvent(
        step=step,
        val_loss=0.3,
        val_acc=0.9,
        train_loss=0.3,
        examples_per_sec=100.0,
        elapsed=1.0,
        probe=ProbePercentiles(p15=-1.0, p50=0.0, p85=1.0),
        diagnostics=diagnostics,
    )
