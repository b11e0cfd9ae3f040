"""Runs train in worker processes on the server's machine, one process per run."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ...model.config import RunConfig
from ...model.events import event_adapter
from ..status import Outcome
from .cluster import ClusterPublic
from .executor import ExecutorKind, ExecutorMessage, RunEnded, TrainingEvent, exit_reason
from .placement import cores_for, pin, threads_per_run
from .worker import WorkerMessage, run_worker

CANCEL_GRACE = 10.0  # seconds a cancelled worker gets to stop by itself


@dataclass
class _Job:
    run_id: str
    process: multiprocessing.process.BaseProcess
    conn: Connection
    cancel: object  # multiprocessing.Event
    slot: int
    alone: bool = False  # started with every core (its pools sized for all of them)
    ended: bool = False
    kill_timer: asyncio.TimerHandle | None = None
    outcome: tuple[Outcome, str | None] | None = None  # what the worker said, if it did


class ProcessExecutor:
    """Each run in its own spawned process (never forked: TensorFlow is not
    fork-safe), pinned to one GPU by CUDA_VISIBLE_DEVICES when there are GPUs.
    Workers talk back over a pipe the event loop watches, so a worker's death
    is seen the moment its end of the pipe closes."""

    kind = ExecutorKind.PROCESS

    def __init__(
        self, capacity: int, gpus: list[str], data_dir: str | None, checkpoints: Path
    ) -> None:
        self.capacity = capacity
        self.checkpoints = checkpoints  # one directory per run below it
        self.gpus = gpus
        self.data_dir = data_dir
        self._ctx = multiprocessing.get_context("spawn")
        self._jobs: dict[str, _Job] = {}
        self._queue: asyncio.Queue[ExecutorMessage] = asyncio.Queue()
        self._reaping: set[asyncio.Task] = set()

    def busy(self) -> int:
        return len(self._jobs)

    def cluster(self) -> ClusterPublic | None:
        return None

    def _free_slot(self) -> int:
        used = {job.slot for job in self._jobs.values()}
        return next(i for i in range(self.capacity) if i not in used)

    def submit(self, run_id: str, config: RunConfig, alone: bool = False) -> None:
        loop = asyncio.get_running_loop()
        slot = self._free_slot()
        # The cores are split between the runs that may train at once, each slot
        # on its own share; a run alone gets every core, as in `bnlab train`. A
        # TensorFlow process cannot resize its pools later, so a run that joins
        # one training alone gets its slot's share and the first is moved to its
        # own slot's cores (`_place_alone`).
        at_once = 1 if alone else self.capacity
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        parent, child = self._ctx.Pipe(duplex=False)
        cancel = self._ctx.Event()
        process = self._ctx.Process(
            target=run_worker,
            args=(
                config.model_dump_json(),
                self.data_dir,
                str(self.checkpoints / run_id),
                child,
                cancel,
                gpu,
                threads_per_run(at_once),
                cores_for(slot, at_once),
            ),
            name=f"bnlab-run-{run_id}",
            daemon=True,
        )
        process.start()
        child.close()  # only the worker holds the sending end: its death closes the pipe
        job = _Job(run_id, process, parent, cancel, slot, alone)
        self._jobs[run_id] = job
        loop.add_reader(parent.fileno(), self._on_readable, job)
        self._place_alone()

    def _place_alone(self) -> None:
        """Keep a run started alone off the cores of the runs beside it: while
        others train it is confined to its slot's share, as if it had started with
        them, and once it is alone again it has every core back. Its pools keep
        their size; only where their threads run changes (bench/concurrency.py)."""
        for job in self._jobs.values():  # running jobs only: `_finish` drops ended ones
            if job.alone:
                others = len(self._jobs) > 1
                shared = cores_for(job.slot, self.capacity) if others else None
                pin(shared or os.sched_getaffinity(0), job.process.pid)

    def _on_readable(self, job: _Job) -> None:
        try:
            raw = job.conn.recv_bytes()
        except (EOFError, OSError):
            self._reap(job)
            return
        message = WorkerMessage.model_validate_json(raw)
        if message.event is not None:
            event = event_adapter.validate_json(message.event)
            self._queue.put_nowait(TrainingEvent(job.run_id, event, message.sent_at))
        if message.outcome is not None:
            # Reported once the process has exited (`_await_exit`): a RunEnded
            # means the slot is free, so two workers never share a slot's GPU.
            job.outcome = (message.outcome, message.error)

    def _finish(self, job: _Job, outcome: Outcome, error: str | None) -> None:
        if not job.ended:
            job.ended = True
            self._jobs.pop(job.run_id, None)
            self._queue.put_nowait(RunEnded(job.run_id, outcome, error))
            self._place_alone()

    def _reap(self, job: _Job) -> None:
        """The pipe closed: the worker is gone, or going, by its own hand or not."""
        asyncio.get_running_loop().remove_reader(job.conn.fileno())
        job.conn.close()
        if job.kill_timer is not None:
            job.kill_timer.cancel()
        task = asyncio.get_running_loop().create_task(self._await_exit(job))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _await_exit(self, job: _Job) -> None:
        await asyncio.to_thread(job.process.join, 10)
        if job.process.is_alive():  # closed its pipe but hangs: make sure it goes
            job.process.kill()
            await asyncio.to_thread(job.process.join, 5)
        if job.outcome is not None:
            self._finish(job, *job.outcome)
        elif job.cancel.is_set():
            self._finish(job, Outcome.CANCELLED, None)
        else:
            self._finish(job, Outcome.FAILED, exit_reason(job.process.exitcode))

    def discard_checkpoint(self, run_id: str) -> None:
        shutil.rmtree(self.checkpoints / run_id, ignore_errors=True)

    def cancel(self, run_id: str) -> None:
        job = self._jobs.get(run_id)
        if job is None or job.cancel.is_set():
            return
        job.cancel.set()
        # Cooperative first (checked between steps); a worker stuck inside one
        # step (or in start-up) is terminated after the grace period.
        job.kill_timer = asyncio.get_running_loop().call_later(CANCEL_GRACE, self._terminate, job)

    def _terminate(self, job: _Job) -> None:
        if job.process.is_alive():
            job.process.terminate()

    async def messages(self) -> AsyncIterator[ExecutorMessage]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for job in list(self._jobs.values()):
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(job.conn.fileno())
            job.cancel.set()
            if job.process.is_alive():
                job.process.terminate()
        for job in list(self._jobs.values()):
            await asyncio.to_thread(job.process.join, 5)
            if job.process.is_alive():
                job.process.kill()
        self._jobs.clear()
