"""Runs train in worker processes on the server's machine: one fresh process per run,
or, for an experiment's stacks (`stacks`), one long-lived stack worker per slot."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from ...model.config import RunConfig
from ...model.environment import nvidia_driver_present
from ...model.events import event_adapter
from ..status import Outcome
from .cluster import ClusterPublic
from .executor import ExecutorKind, ExecutorMessage, RunEnded, TrainingEvent, exit_reason
from .placement import cores_for, pin, threads_per_run
from .stacks import (
    StackCommand,
    StackReport,
    checkpoint_dir,
    discard_checkpoints_of,
    run_stack_worker,
)
from .worker import WorkerMessage, run_worker

CANCEL_GRACE = 10.0  # seconds a cancelled worker gets to stop by itself
# What a fork server imports before it forks workers: TensorFlow and the trainers,
# the 4-6 s of CPU each spawned worker would otherwise spend on its imports.
PRELOAD = ["bnlab.server.execution.worker", "bnlab.model.training", "bnlab.model.stacked"]


def worker_context(gpus: list[str]) -> multiprocessing.context.BaseContext:
    """How worker processes start. Each run is still a process of its own (its
    death fails only it); what differs is the start. Forked from a fork server that
    has imported TensorFlow and run no op, a worker trains seconds sooner: TensorFlow
    is unsafe to fork only once its runtime has started (thread pools, a CUDA
    context), and each forked worker starts its own (its pools sized and its cores
    pinned before its first op, as a spawned one). Where an NVIDIA driver is present
    the import itself may touch CUDA, which a fork cannot survive, so GPU machines
    spawn each worker fresh, setting CUDA_VISIBLE_DEVICES before TensorFlow loads."""
    if gpus or nvidia_driver_present():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server starts with the first worker, not with the server: a server
    # that never trains never pays for the import.
    context.set_forkserver_preload(PRELOAD)
    return context


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


@dataclass
class _StackWorker:
    """A long-lived stack worker on one slot, and the stack it trains (if any)."""

    slot: int
    process: multiprocessing.process.BaseProcess
    conn: Connection  # duplex: commands out, reports in
    job: str | None = None
    runs: list[str] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    last_end: RunEnded | None = None  # the stack's last run's end, told once the slot is free
    kill_timer: asyncio.TimerHandle | None = None


class ProcessExecutor:
    """Each run in a process of its own (`worker_context`: forked from a fork
    server, or spawned on a GPU machine), pinned to one GPU by CUDA_VISIBLE_DEVICES
    when there are GPUs.
    Workers talk back over a pipe the event loop watches, so a worker's death
    is seen the moment its end of the pipe closes."""

    kind = ExecutorKind.PROCESS

    def __init__(
        self,
        capacity: int,
        gpus: list[str],
        data_dir: str | None,
        checkpoints: Path,
        stacking: bool = True,
    ) -> None:
        self.capacity = capacity
        self.stacking = stacking
        self.checkpoints = checkpoints  # one directory per run below it
        self.gpus = gpus
        self.data_dir = data_dir
        self._ctx = worker_context(gpus)
        self._jobs: dict[str, _Job] = {}
        self._queue: asyncio.Queue[ExecutorMessage] = asyncio.Queue()
        self._reaping: set[asyncio.Task] = set()
        self._stack_workers: dict[int, _StackWorker] = {}  # by slot
        self._stacked: dict[str, _StackWorker] = {}  # run id -> the worker training it

    def busy(self) -> int:
        return len(self._jobs) + sum(1 for w in self._stack_workers.values() if w.job)

    def cluster(self) -> ClusterPublic | None:
        return None

    def _free_slot(self) -> int:
        used = {job.slot for job in self._jobs.values()}
        used |= {w.slot for w in self._stack_workers.values() if w.job}
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
        job = _Job(run_id, process, parent, cancel, slot, alone)
        self._jobs[run_id] = job

        def started() -> None:
            loop.add_reader(parent.fileno(), self._on_readable, job)
            self._place_alone()

        def failed(exc: BaseException) -> None:
            parent.close()
            self._finish(job, Outcome.FAILED, f"could not start its worker: {exc}")

        self._start(process, child, started, failed)

    def _start(
        self,
        process: multiprocessing.process.BaseProcess,
        child: Connection,
        started: Callable[[], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        """Start `process` off the event loop, then call `started` (or `failed`). A
        forked worker's start waits until the fork server has imported TensorFlow
        (seconds; a minute on a cold install), and the loop serves HTTP, websockets
        and the other runs' events meanwhile. Until `started`, the process has no pid
        and is not alive: nothing kills, pins or joins it."""

        async def launch() -> None:
            try:
                await asyncio.to_thread(process.start)
            except Exception as exc:  # no fork server, no memory: the run fails, not the server
                child.close()
                failed(exc)
                return
            child.close()  # only the worker holds its end now: its death closes the pipe
            started()

        task = asyncio.get_running_loop().create_task(launch())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _place_alone(self) -> None:
        """Keep a run started alone off the cores of the runs beside it: while
        others train it is confined to its slot's share, as if it had started with
        them, and once it is alone again it has every core back. Its pools keep
        their size; only where their threads run changes (bench/concurrency.py)."""
        for job in self._jobs.values():  # running jobs only: `_finish` drops ended ones
            if job.alone and job.process.pid is not None:  # started (`_start`)
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
        # A run that ended inside a stack still training (diverged, cancelled) leaves
        # the stack's state alone: the stack removes it when it ends for good.
        training = [
            checkpoint_dir(self.checkpoints, w.runs) for w in self._stack_workers.values() if w.job
        ]
        discard_checkpoints_of(self.checkpoints, run_id, keep=training)

    def cancel(self, run_id: str) -> None:
        if run_id in self._stacked:
            self._cancel_stacked(run_id)
            return
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

    # -- stacks -----------------------------------------------------------

    def submit_stack(self, runs: list[tuple[str, RunConfig]]) -> None:
        """Train `runs` as one stack on a free slot's stack worker (started if the slot
        has none, or its last one died): one slot, however many runs."""
        slot = self._free_slot()
        worker = self._stack_workers.get(slot)
        if worker is None or not worker.process.is_alive():
            worker = self._start_stack_worker(slot)
        run_ids = [run_id for run_id, _ in runs]
        worker.job = run_ids[0]  # a stack is named by its first run
        worker.runs, worker.ended, worker.cancelled, worker.last_end = run_ids, set(), set(), None
        for run_id in run_ids:
            self._stacked[run_id] = worker
        command = StackCommand(
            kind="train",
            job=worker.job,
            run_ids=run_ids,
            configs=[config.model_dump_json() for _, config in runs],
        )
        worker.conn.send_bytes(command.model_dump_json().encode())

    def _start_stack_worker(self, slot: int) -> _StackWorker:
        parent, child = self._ctx.Pipe(duplex=True)
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        process = self._ctx.Process(
            target=run_stack_worker,
            args=(
                child,
                self.data_dir,
                str(self.checkpoints),
                gpu,
                threads_per_run(self.capacity),
                cores_for(slot, self.capacity),
            ),
            name=f"bnlab-stacks-{slot}",
            daemon=True,
        )
        # Commands sent before it has started wait in the pipe.
        worker = self._stack_workers[slot] = _StackWorker(slot, process, parent)

        def started() -> None:
            asyncio.get_running_loop().add_reader(parent.fileno(), self._on_stack_readable, worker)

        def failed(exc: BaseException) -> None:
            parent.close()
            if self._stack_workers.get(slot) is worker:
                del self._stack_workers[slot]
            for run_id in worker.runs:
                self._end_stacked(worker, run_id, Outcome.FAILED, f"could not start: {exc}")
            self._end_stack(worker)

        self._start(process, child, started, failed)
        return worker

    def _on_stack_readable(self, worker: _StackWorker) -> None:
        try:
            report = StackReport.model_validate_json(worker.conn.recv_bytes())
        except (EOFError, OSError):
            self._stack_worker_gone(worker)
            return
        if report.job != worker.job:
            return
        message = report.message
        if report.done:
            self._end_stack(worker)
        elif message is not None and report.run_id in worker.runs:
            if message.event is not None and report.run_id not in worker.ended:
                event = event_adapter.validate_json(message.event)
                self._queue.put_nowait(TrainingEvent(report.run_id, event, message.sent_at))
            if message.outcome is not None:
                self._end_stacked(worker, report.run_id, message.outcome, message.error)

    def _end_stacked(
        self, worker: _StackWorker, run_id: str, outcome: Outcome, error: str | None
    ) -> None:
        if run_id in worker.ended:
            return
        worker.ended.add(run_id)
        self._stacked.pop(run_id, None)
        end = RunEnded(run_id, outcome, error)
        if len(worker.ended) < len(worker.runs):
            self._queue.put_nowait(end)
        else:  # the last: told when the slot is free, as a run's end always is
            worker.last_end = end

    def _end_stack(self, worker: _StackWorker) -> None:
        for run_id in worker.runs:  # a worker that ended a stack without a word on a run
            self._end_stacked(worker, run_id, Outcome.FAILED, "the stack ended without it")
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        last, worker.job, worker.last_end, worker.kill_timer = worker.last_end, None, None, None
        if last is not None:
            self._queue.put_nowait(last)

    def _stack_worker_gone(self, worker: _StackWorker) -> None:
        """The stack worker's pipe closed: it died (or was killed), failing what it trained."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        if self._stack_workers.get(worker.slot) is worker:
            del self._stack_workers[worker.slot]

        async def after_exit() -> None:
            await asyncio.to_thread(worker.process.join, 10)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
            reason = exit_reason(worker.process.exitcode, "the stack's worker process")
            for run_id in worker.runs:
                if run_id in worker.cancelled:
                    self._end_stacked(worker, run_id, Outcome.CANCELLED, None)
                else:
                    self._end_stacked(worker, run_id, Outcome.FAILED, reason)
            self._end_stack(worker)

        task = loop.create_task(after_exit())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _cancel_stacked(self, run_id: str) -> None:
        worker = self._stacked[run_id]
        if run_id in worker.cancelled or worker.job is None:
            return
        worker.cancelled.add(run_id)
        command = StackCommand(kind="cancel", job=worker.job, run_ids=[run_id])
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(command.model_dump_json().encode())
        if worker.cancelled | worker.ended >= set(worker.runs) and worker.kill_timer is None:
            # Every run of the stack cancelled: it stops between windows, or is
            # terminated after the grace period, like a run's worker.
            worker.kill_timer = asyncio.get_running_loop().call_later(
                CANCEL_GRACE, self._terminate_stack, worker
            )

    def _terminate_stack(self, worker: _StackWorker) -> None:
        if worker.job is not None and worker.process.is_alive():
            worker.process.terminate()

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
            if job.process.pid is None:  # still starting (`_start`): it sees its cancel
                continue
            await asyncio.to_thread(job.process.join, 5)
            if job.process.is_alive():
                job.process.kill()
        self._jobs.clear()
        for worker in list(self._stack_workers.values()):
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(worker.conn.fileno())
            worker.conn.close()  # an idle worker ends by itself when its pipe closes
            if worker.job is not None and worker.process.is_alive():
                worker.process.terminate()
        for worker in list(self._stack_workers.values()):
            if worker.process.pid is None:  # still starting: its pipe is closed already
                continue
            await asyncio.to_thread(worker.process.join, 5)
            if worker.process.is_alive():
                worker.process.kill()
        self._stack_workers.clear()
