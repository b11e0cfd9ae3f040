"""The run service: owns every run's lifecycle.

It takes requests (create, cancel, delete), keeps the FIFO queue, hands runs
to the executor as slots free up, turns what workers report into stored points
and status changes, and publishes each change to the live stream with a
per-run sequence number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ...model.config import RunConfig
from ...model.events import EvalEvent, Event, ProgressEvent, StartEvent, TestEvent, TestMetrics
from ..execution.executor import Executor, RunEnded, TrainingEvent
from ..execution.stacks import stack_size
from ..live.hub import Hub
from ..live.messages import (
    DeletedMessage,
    EvalMessage,
    RunChangedMessage,
    RunEventKind,
    RunEventMessage,
)
from ..status import Outcome, RunStatus
from ..storage.points import PointPublic, point_public
from ..storage.store import Store, StoreError
from .schemas import ComparisonPublic, RunPublic

log = logging.getLogger("bnlab.runs")
PROGRESS_PUBLISH_INTERVAL = 1.0  # seconds: "progress about once a second"
RETRY_INTERVAL = 2.0  # seconds between attempts to write what the database refused
RUNS_TOPIC = "runs"


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class QueueFull(Exception):
    pass


@dataclass
class _LiveState:
    """What is known of an active run beyond its stored row."""

    seq: int = 0
    step: int = 0
    steps_per_sec: float | None = None
    eta_seconds: float | None = None
    published_at: float = 0.0


def default_label(config: RunConfig, named: Collection[str] = ()) -> str:
    """ "BN · cnn · adagrad 0.01", and the fields in `named` whatever their values (an
    experiment's varied fields: its cell at init scale 1 or dropout 0.5 must say so)."""
    bn = "BN" if config.batch_norm else "no-BN"
    # The knobs that change the network itself show only when set, so the
    # legend can tell a sigmoid CNN or a 10x initialisation from the recipe.
    arch = f"{config.arch} {config.activation}" if config.activation else config.arch
    parts = [bn, arch, f"{config.optimizer} {config.learning_rate:g}"]
    shown = {"arch", "optimizer", "learning_rate", "batch_norm"}
    if config.activation:
        shown.add("activation")
    if config.init_scale != 1 or "init_scale" in named:
        parts.append(f"init scale {config.init_scale:g}")
        shown.add("init_scale")
    for name in named:
        if name not in shown:
            title = RunConfig.model_fields[name].title or name
            parts.append(f"{title} {_value(getattr(config, name))}".lower())
    return " · ".join(parts)


def _value(value: object) -> str:
    if value is None:
        return "network's own"
    return f"{value:g}" if isinstance(value, float) else str(value)


class RunService:
    def __init__(self, store: Store, executor: Executor, hub: Hub, max_queued: int) -> None:
        self.store = store
        self.executor = executor
        self.hub = hub
        self.max_queued = max_queued
        self._queue: deque[str] = deque()
        self._live: dict[str, _LiveState] = {}
        self._consumer: asyncio.Task | None = None
        self._retrier: asyncio.Task | None = None
        self._pending_ends: list[RunEnded] = []  # recorded once the database lets us
        # Called with each published run state (the experiments service listens).
        self.listeners: list[Callable[[RunPublic, RunEventKind], None]] = []

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        interrupted = self.store.interrupt_unfinished()
        if interrupted:
            log.warning("marked %d unfinished run(s) as interrupted", len(interrupted))
        self._consumer = asyncio.create_task(self._consume(), name="bnlab-executor-messages")
        self._retrier = asyncio.create_task(self._retry(), name="bnlab-retry")

    async def stop(self) -> None:
        for task in (self._consumer, self._retrier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.executor.close()

    # -- reading ----------------------------------------------------------

    def from_row(self, row) -> RunPublic:
        """The run as the API shows it: its stored row and, while it trains, its live state."""
        live = self._live.get(row["id"])
        metrics = None
        if row["test_accuracy"] is not None:
            metrics = TestMetrics(
                test_loss=row["test_loss"],
                test_accuracy=row["test_accuracy"],
                log_loss=row["log_loss"],
            )
        return RunPublic(
            id=row["id"],
            label=row["label"],
            comparison_id=row["comparison_id"],
            experiment_id=row["experiment_id"],
            config=RunConfig.from_stored(row["config"]),
            status=row["status"],
            step=max(row["step"], live.step) if live else row["step"],
            total_steps=row["total_steps"],
            steps_per_sec=live.steps_per_sec if live else None,
            eta_seconds=live.eta_seconds if live else None,
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            test_metrics=metrics,
            error=row["error"],
            device=row["device"],
            path=row["training_path"],
            stack_size=row["stack_size"],
            last_seq=live.seq if live else row["last_seq"],
        )

    def get(self, run_id: str) -> RunPublic:
        row = self.store.get_run(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return self.from_row(row)

    def list_runs(
        self, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[RunPublic], int]:
        """The newest runs first (with `status` only, if given), and how many there are."""
        rows, total = self.store.list_runs(status, limit, offset)
        return [self.from_row(row) for row in rows], total

    def points(
        self, run_id: str, *, since_step: int | None = None, after_seq: int | None = None
    ) -> list[PointPublic]:
        """The run's validation points (NotFound for an unknown run)."""
        self.get(run_id)
        rows = self.store.points(run_id, since_step=since_step, after_seq=after_seq)
        return [point_public(row) for row in rows]

    def comparison(self, comparison_id: str) -> ComparisonPublic:
        row, runs = self.store.comparison_runs(comparison_id)
        if row is None:
            raise NotFound(f"no comparison with id {comparison_id!r}")
        return ComparisonPublic(
            id=comparison_id, created_at=row["created_at"], runs=[self.from_row(r) for r in runs]
        )

    def queue_length(self) -> int:
        return len(self._queue)

    # -- requests ---------------------------------------------------------

    def check_room(self, runs: int) -> None:
        """Raise QueueFull unless `runs` more runs may wait."""
        if len(self._queue) + runs > self.max_queued:
            raise QueueFull(
                f"the queue is full ({len(self._queue)} runs waiting, at most "
                f"{self.max_queued}); try again when some have finished"
            )

    def create_run(self, config: RunConfig, label: str | None = None) -> RunPublic:
        self.check_room(1)
        run_id = self._add(config, label)
        self._settle()
        return self.get(run_id)

    def _add(self, config: RunConfig, label: str | None, comparison_id: str | None = None) -> str:
        """Store and queue a new run, without starting it yet."""
        run_id = uuid.uuid4().hex[:12]
        row = self.store.insert_run(run_id, label or default_label(config), config, comparison_id)
        self._live[run_id] = _LiveState()
        self._queue.append(run_id)
        self._publish_runs(self.from_row(row))
        return run_id

    def queue_stored(self, run_ids: list[str]) -> list[RunPublic]:
        """Queue runs another service has just stored (an experiment's), in order;
        the caller has checked the room with `check_room`."""
        for run_id in run_ids:
            self._live[run_id] = _LiveState()
            self._queue.append(run_id)
        for run_id in run_ids:
            self._publish_runs(self.get(run_id))
        self._settle()
        return [self.get(run_id) for run_id in run_ids]

    def create_comparison(
        self, config: RunConfig, label: str | None
    ) -> tuple[str, list[RunPublic]]:
        self.check_room(2)
        comparison_id = uuid.uuid4().hex[:12]
        self.store.insert_comparison(comparison_id)
        run_ids = []
        with_bn = config if config.batch_norm else config.twin()
        for twin in (with_bn, with_bn.twin()):  # the BN run first, as the API promises
            twin_label = f"{label} ({'BN' if twin.batch_norm else 'no-BN'})" if label else None
            run_ids.append(self._add(twin, twin_label, comparison_id))
        # Both stored and queued before either starts: no watcher sees one twin
        # training before the other exists.
        self._settle()
        return comparison_id, [self.get(run_id) for run_id in run_ids]

    def cancel(self, run_id: str) -> RunPublic:
        run = self.get(run_id)
        if run.status == RunStatus.QUEUED and run_id in self._queue:
            self._queue.remove(run_id)
            self._set_status(run_id, RunStatus.CANCELLED, "cancelled before it started")
        elif run.status.active:  # running (or queued in the store but not yet dispatched)
            self.executor.cancel(run_id)
        else:
            raise Conflict(
                f"run {run_id} is already {run.status}; only active runs can be cancelled"
            )
        return self.get(run_id)

    def resume(self, run_id: str) -> RunPublic:
        run = self.get(run_id)
        if not run.status.resumable:
            raise Conflict(
                f"run {run_id} is {run.status}; only interrupted or failed runs can be resumed"
            )
        self.check_room(1)
        self._set_status(run_id, RunStatus.QUEUED)
        self._queue.append(run_id)
        self._settle()
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.status.active:
            raise Conflict(f"run {run_id} is {run.status}; cancel it before deleting it")
        if run.experiment_id is not None:  # its experiment's cells would lose a seed
            raise Conflict(
                f"run {run_id} belongs to experiment {run.experiment_id}; delete the experiment"
            )
        self.store.delete_run(run_id)
        self.forget(run_id)

    def forget(self, run_id: str) -> None:
        """After the run's row is gone from the store (deleted here, or with its
        experiment): drop its training state and tell its watchers."""
        self.executor.discard_checkpoint(run_id)
        self._live.pop(run_id, None)
        deleted = DeletedMessage(id=run_id).text()
        self.hub.end(run_topic(run_id), deleted)
        self.hub.publish(RUNS_TOPIC, deleted)

    # -- scheduling -------------------------------------------------------

    def _schedule(self) -> None:
        while self._queue and self.executor.busy() < self.executor.capacity:
            run_id = self._queue[0]
            try:
                row = self.store.get_run(run_id)
                config = RunConfig.from_stored(row["config"])
                stack = self._stack_of(run_id, row, config)
                for member, _ in stack or [(run_id, config)]:
                    self._set_status(member, RunStatus.RUNNING)
            except StoreError:
                # Stays first in the queue; the retry tick tries again.
                log.exception("could not start run %s", run_id)
                return
            started = stack or [(run_id, config)]
            for member, _ in started:
                self._queue.remove(member)
            try:
                if stack:
                    self.executor.submit_stack(stack)
                else:
                    self.executor.submit(run_id, config, alone=self._alone(row))
            except Exception as exc:  # could not even start a process
                log.exception("could not start run %s", run_id)
                # Ended like any other run, so a database that refuses this write too
                # leaves it pending for the retry tick instead of "running" forever.
                self._pending_ends += [
                    RunEnded(member, Outcome.FAILED, f"could not start a worker: {exc}")
                    for member, _ in started
                ]

    def _stack_of(self, run_id: str, row, config: RunConfig) -> list[tuple[str, RunConfig]] | None:
        """The stack the queue's first run starts in (issue #27): it and the queued runs
        of its experiment that can train with it as one program, spread over the free
        slots. None: the run trains in a process of its own (a run of no experiment, a
        config that does not stack, an executor that does not stack)."""
        key = config.stack_key()
        if not self.executor.stacking or row["experiment_id"] is None or key is None:
            return None
        members = [(run_id, config)]
        keys = {key}  # the experiment's groups of compatible runs waiting
        for other in list(self._queue)[1:]:
            other_row = self.store.get_run(other)
            if other_row["experiment_id"] == row["experiment_id"]:
                other_config = RunConfig.from_stored(other_row["config"])
                other_key = other_config.stack_key()
                if other_key is not None:
                    keys.add(other_key)
                if other_key == key:
                    members.append((other, other_config))
        free = self.executor.capacity - self.executor.busy()
        return members[: stack_size(len(members), free, len(keys))]

    def _alone(self, row) -> bool:
        """Whether the run about to start may have the machine to itself: no other
        run trains or waits, and it belongs to no experiment or comparison. A
        grouped run always trains on its slot's share, whatever happens to run
        beside it: thread counts change a run's float rounding, and an
        experiment resumed after a crash must end with the same numbers as one
        never interrupted (issue #14), twins must train alike."""
        return (
            self.executor.busy() == 0
            and not self._queue
            and row["experiment_id"] is None
            and row["comparison_id"] is None
        )

    # -- what workers report ----------------------------------------------

    async def _consume(self) -> None:
        async for message in self.executor.messages():
            try:
                if isinstance(message, TrainingEvent):
                    self._on_event(message.run_id, message.event, message.sent_at)
                elif isinstance(message, RunEnded):
                    self._pending_ends.append(message)
            except StoreError:
                log.exception("could not record what run %s reported", message.run_id)
            except Exception:
                log.exception("error handling a message of run %s", message.run_id)
            self._settle()

    async def _retry(self) -> None:
        """While the database refuses writes (locked, disk full), keep trying to
        record how runs ended and to start queued ones."""
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            self._settle()

    def _settle(self) -> None:
        # Loops because starting queued runs can end one (a worker that would not start),
        # whose end frees its slot for the next.
        while True:
            while self._pending_ends:
                try:
                    self._on_end(self._pending_ends[0])
                except StoreError:
                    log.exception(
                        "could not record the end of run %s", self._pending_ends[0].run_id
                    )
                    return
                except Exception:
                    log.exception("error ending run %s", self._pending_ends[0].run_id)
                self._pending_ends.pop(0)
            try:
                self._schedule()
            except Exception:  # whatever it is, the consumer task must live on
                log.exception("could not start queued runs")
                return
            if not self._pending_ends:
                return

    def _live_state(self, run_id: str) -> _LiveState:
        live = self._live.get(run_id)
        if live is None:  # continue from what is stored, never restart at 1
            row = self.store.get_run(run_id)
            live = self._live[run_id] = _LiveState(seq=row["last_seq"] if row else 0)
        return live

    def _next_seq(self, run_id: str) -> int:
        live = self._live_state(run_id)
        live.seq += 1
        return live.seq

    def _on_event(self, run_id: str, event: Event, sent_at: float | None = None) -> None:
        live = self._live_state(run_id)
        if isinstance(event, StartEvent):
            seq = self._next_seq(run_id)
            self.store.set_started(run_id, event, seq)
            # Resumed from a checkpoint, or started over without one (a Ray node
            # that cannot see the checkpoint directory): what follows is trained
            # again, so no point of an earlier attempt stays beyond it.
            self.store.drop_points_after(run_id, event.first_step)
            live.step = event.first_step
            self._publish_status(run_id, "status", seq)
        elif isinstance(event, EvalEvent):
            if self.store.has_point(run_id, event.step):
                # A resumed run repeats its checkpoint's evaluation in case the first
                # report was lost (model/training.py); with the point stored, the
                # repeat is the same numbers again, and clients already have it.
                return
            seq = self._next_seq(run_id)
            self.store.add_point(run_id, seq, event)
            live.step = max(live.step, event.step)
            point = PointPublic(seq=seq, **event.model_dump(exclude={"type"}))
            message = EvalMessage(seq=seq, point=point, sent_at=sent_at)
            self.hub.publish(run_topic(run_id), message.text(), seq)
        elif isinstance(event, ProgressEvent):
            live.step = event.step
            if event.elapsed > 0 and event.step > 0:
                live.steps_per_sec = event.step / event.elapsed
                live.eta_seconds = (event.total_steps - event.step) / live.steps_per_sec
            now = time.monotonic()
            if now - live.published_at >= PROGRESS_PUBLISH_INTERVAL:
                live.published_at = now
                seq = self._next_seq(run_id)
                # Stored too (once a second): after a restart the run's sequence
                # continues past every number a client has already seen.
                self.store.set_progress(run_id, event.step, seq)
                self._publish_status(run_id, "progress", seq)
        elif isinstance(event, TestEvent):
            seq = self._next_seq(run_id)
            self.store.set_test_metrics(run_id, event, seq)
            self._publish_status(run_id, "test", seq)

    def _on_end(self, message: RunEnded) -> None:
        status = message.outcome.status
        row = self.store.get_run(message.run_id)
        if row is None or not RunStatus(row["status"]).active:
            return  # deleted meanwhile, or already settled
        if status == RunStatus.COMPLETED and row["test_accuracy"] is None:
            status, message = (
                RunStatus.FAILED,
                RunEnded(
                    message.run_id, Outcome.FAILED, "the worker finished without test metrics"
                ),
            )
        self._set_status(message.run_id, status, message.error)
        if not status.resumable:  # finished for good: its training state is not needed
            self.executor.discard_checkpoint(message.run_id)

    # -- publishing -------------------------------------------------------

    def _set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        seq = self._next_seq(run_id)
        self.store.set_status(run_id, status, error=error, last_seq=seq)
        if not status.active:
            self._live.pop(run_id, None)  # the stored row is now the whole truth
        self._publish_status(run_id, "status", seq)

    def _publish_status(self, run_id: str, kind: RunEventKind, seq: int) -> None:
        """Publish the run's state under `seq`, which the caller has already stored
        (so a restarted server never hands out a number a client has seen)."""
        run = self.get(run_id)
        message = RunEventMessage(type=kind, seq=seq, run=run)
        self.hub.publish(run_topic(run_id), message.text(), seq)
        self._publish_runs(run)
        for listener in self.listeners:
            try:
                listener(run, kind)
            except Exception:  # a listener's trouble must not stop the run's own record
                log.exception("a listener failed on run %s", run_id)

    def _publish_runs(self, run: RunPublic) -> None:
        self.hub.publish(RUNS_TOPIC, RunChangedMessage(run=run).text())
