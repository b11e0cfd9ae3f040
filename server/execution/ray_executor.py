"""Runs on a Ray cluster, behind the same `Executor` interface as worker processes.

The server process itself never imports Ray. It starts one child process, the
Ray driver (`server.ray_driver`), and talks to it over a pipe: commands one way
(submit, cancel), and the runs' events, their ends and the cluster's state the
other. Why a child: Ray's core worker ends the process it lives in when it loses
its cluster for good; living in the driver, that takes the driver, and the server
sees its pipe close, fails the runs that were on the cluster with the reason and
keeps serving. A later submit starts a new driver, which reconnects.

Capacity follows the cluster: a GPU cluster gives floor(GPUs / --gpus-per-run)
runs, a CPU-only one a run per CPU (at most --workers, when given). The server's
queue keeps what does not fit, so a run is `running` only while it has its share.

An experiment's compatible runs train as stacks (issue #27, `execution.stacks`), as
on worker processes: a stack is one actor (`ray_driver.StackActor`) on one slot,
with one run's share, however many runs it trains (`ray_driver.Driver.resources`
says why), and each of its runs reports and ends as if it trained alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import shutil
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from ...model.config import RunConfig
from ...model.events import event_adapter
from ..status import Outcome
from .cluster import ClusterPublic
from .executor import ExecutorKind, ExecutorMessage, RunEnded, TrainingEvent, exit_reason
from .stacks import StackCommand, checkpoint_dir, discard_checkpoints_of
from .worker import WorkerMessage

log = logging.getLogger("bnlab.ray")

CPUS_PER_RUN = 1  # a run's share of a CPU-only cluster: TensorFlow's threads on one CPU
# The head's `ray start --system-config` that BN Lab recommends (docs/ray.md, "Failures").
# Ray's GCS declares a node dead after `threshold` missed health checks, each waiting
# `timeout` for an answer, then `period`: a host that stops answering without closing
# its connections (power, network) is noticed after up to threshold x (timeout + period),
# 65 s with Ray's defaults, 8 s with these (measured: bench/RESULTS.md, "Ray node loss").
NODE_HEALTH_CHECKS = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 4,
}
NODE_LOSS_TARGET = 10.0  # seconds: a run on a lost node must fail within this (issue 18)


class DriverCommand(BaseModel):
    """Server to driver."""

    action: Literal["submit", "stack", "cancel"]
    run_id: str  # with "stack", the stack's job (its first run)
    config: str | None = None  # RunConfig JSON, with submit
    checkpoint_dir: str | None = None  # the run's; with "stack", the root of stacks' dirs
    stack: StackCommand | None = None  # with "stack": its runs and their configs


class DriverMessage(BaseModel):
    """Driver to server: a run's message, the cluster's state, or why the driver quits."""

    run_id: str | None = None
    worker: WorkerMessage | None = None  # an event or the outcome, as a worker sends it
    cluster: ClusterPublic | None = None
    fatal: str | None = None  # the driver is ending: every run on the cluster fails with it
    warning: str | None = None  # for the server's log: the cluster works, but not as it should


def run_slots(cluster: ClusterPublic, gpus_per_run: float) -> int:
    """Runs the cluster holds at once, each with its share."""
    if cluster.gpus is not None and cluster.gpus.total > 0:
        return math.floor(cluster.gpus.total / gpus_per_run + 1e-9)
    cpus = cluster.cpus.total if cluster.cpus is not None else 0
    return math.floor(cpus / CPUS_PER_RUN)


def _driver_main(*args: object) -> None:
    # Ray is imported in the child only, never in the server process.
    from .ray_driver import run_driver

    run_driver(*args)


class RayExecutor:
    """Each run, or each stack of an experiment's runs, in an actor of its own on a Ray
    cluster, through the driver process."""

    kind = ExecutorKind.RAY

    def __init__(
        self,
        address: str,
        gpus_per_run: float,
        workers: int | None,
        data_dir: str | None,
        checkpoints: Path,
        stacking: bool = True,
    ) -> None:
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.workers = workers
        self.data_dir = data_dir
        self.checkpoints = checkpoints
        self.stacking = stacking
        self._ctx = multiprocessing.get_context("spawn")
        self._queue: asyncio.Queue[ExecutorMessage] = asyncio.Queue()
        self._runs: set[str] = set()  # every run on the cluster, stacked or not
        # Stacks on the cluster, by job: all their runs, and the stack of each run. A
        # stack holds its slot until its last run ended (the driver tells that once
        # the actor is gone, as a single run's end).
        self._stacks: dict[str, list[str]] = {}
        self._stack_of: dict[str, str] = {}
        self._slots = workers or 1  # until the cluster says how many it holds
        self._cluster = ClusterPublic(address=address, connected=False, error="connecting")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._fatal: str | None = None
        self._reaping: set[asyncio.Task] = set()
        self._start_driver()

    # -- the driver process ---------------------------------------------------------

    def _start_driver(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        self._process = self._ctx.Process(
            target=_driver_main,
            args=(child, self.address, self.gpus_per_run, self.data_dir),
            name="bnlab-ray-driver",
            daemon=True,
        )
        self._process.start()
        child.close()  # only the driver holds the other end: its death closes the pipe
        self._conn, self._fatal = parent, None
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_readable)

    def _send(self, command: DriverCommand) -> None:
        if self._conn is None:
            self._start_driver()
        with contextlib.suppress(OSError):  # a dead driver: its pipe's EOF fails the run
            self._conn.send_bytes(command.model_dump_json().encode())

    def _on_readable(self) -> None:
        try:
            raw = self._conn.recv_bytes()
        except (EOFError, OSError):
            self._driver_gone()
            return
        message = DriverMessage.model_validate_json(raw)
        if message.cluster is not None:
            self._cluster = message.cluster
            if message.cluster.connected:
                slots = run_slots(message.cluster, self.gpus_per_run)
                self._slots = min(slots, self.workers) if self.workers else slots
        if message.fatal is not None:
            self._fatal = message.fatal
        if message.warning is not None:
            log.warning("%s", message.warning)
        if message.run_id is None or message.worker is None:
            return
        worker = message.worker
        if worker.event is not None:
            event = event_adapter.validate_json(worker.event)
            self._queue.put_nowait(TrainingEvent(message.run_id, event, worker.sent_at))
        if worker.outcome is not None and message.run_id in self._runs:
            self._ended(message.run_id)
            self._queue.put_nowait(RunEnded(message.run_id, worker.outcome, worker.error))

    def _ended(self, run_id: str) -> None:
        self._runs.discard(run_id)
        job = self._stack_of.pop(run_id, None)
        if job is not None and not any(r in self._runs for r in self._stacks[job]):
            del self._stacks[job]

    def _driver_gone(self) -> None:
        """The pipe closed: the driver quit (cluster lost) or died. Its runs fail;
        runs submitted from now on go to a new driver."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._conn.fileno())
        self._conn.close()
        self._conn = None
        orphans, self._runs = self._runs, set()
        self._stacks.clear()
        self._stack_of.clear()
        task = loop.create_task(self._fail_runs(self._process, orphans, self._fatal))
        self._process = None
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _fail_runs(
        self, process: multiprocessing.process.BaseProcess, runs: set[str], fatal: str | None
    ) -> None:
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
        reason = fatal or exit_reason(process.exitcode, "the Ray driver process")
        if self._conn is None:  # no new driver meanwhile
            self._cluster = ClusterPublic(address=self.address, connected=False, error=reason)
        for run_id in sorted(runs):
            self._queue.put_nowait(RunEnded(run_id, Outcome.FAILED, reason))

    # -- Executor -------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._slots

    def busy(self) -> int:
        # A stack takes one slot, however many runs it trains.
        return len(self._runs) - len(self._stack_of) + len(self._stacks)

    def cluster(self) -> ClusterPublic | None:
        return self._cluster

    def submit(self, run_id: str, config: RunConfig, alone: bool = False) -> None:
        # Ray places every actor by its resource request, alone or not.
        self._runs.add(run_id)
        self._send(
            DriverCommand(
                action="submit",
                run_id=run_id,
                config=config.model_dump_json(),
                checkpoint_dir=str(self.checkpoints / run_id),
            )
        )

    def submit_stack(self, runs: list[tuple[str, RunConfig]]) -> None:
        """Train `runs` as one stack in one actor, on one slot (`ray_driver.Driver.resources`)."""
        run_ids = [run_id for run_id, _ in runs]
        job = run_ids[0]  # a stack is named by its first run, as on worker processes
        self._runs.update(run_ids)
        self._stacks[job] = run_ids
        self._stack_of.update((run_id, job) for run_id in run_ids)
        command = StackCommand(
            kind="train",
            job=job,
            run_ids=run_ids,
            configs=[config.model_dump_json() for _, config in runs],
        )
        self._send(
            DriverCommand(
                action="stack", run_id=job, checkpoint_dir=str(self.checkpoints), stack=command
            )
        )

    def cancel(self, run_id: str) -> None:
        # A stacked run too: the driver knows its stack, and cancels it alone.
        if run_id in self._runs and self._conn is not None:
            self._send(DriverCommand(action="cancel", run_id=run_id))

    def discard_checkpoint(self, run_id: str) -> None:
        shutil.rmtree(self.checkpoints / run_id, ignore_errors=True)
        # As on worker processes: a stack still training keeps its state until it ends.
        training = [checkpoint_dir(self.checkpoints, runs) for runs in self._stacks.values()]
        discard_checkpoints_of(self.checkpoints, run_id, keep=training)

    async def messages(self) -> AsyncIterator[ExecutorMessage]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        # Closing the pipe ends the driver, and with it every actor it owns: Ray
        # ties a (non-detached) actor's lifetime to the driver that made it.
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()
            self._process = None
