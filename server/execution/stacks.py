"""Stacks: many runs of one experiment trained as one compiled program (issue #27).

Runs whose configs share `RunConfig.stack_key` train together in `model.stacked`,
each as it would alone, but in one process and one compiled step. Here is the
process side: which runs make a stack (`plan_stacks`, `stack_size`) and the worker
that trains them (`run_stack_worker`). A stack worker is a long-lived process, one
per worker slot: it imports TensorFlow and reads MNIST once and then trains stack
after stack, so an experiment pays TensorFlow's start-up once per slot rather than
once per run. The per-run path (one fresh process per run, `worker.run_worker`)
stays as it was, for the CNN where it does not stack (model.stack_paths) and for
`--no-stack`.

The worker and the executor talk over one duplex pipe, in JSON: the executor sends
a `StackCommand` (train these runs, or cancel some of them), the worker sends
`StackReport`s (a run's event or outcome, or the job's end). A run cancelled alone
ends at once and its later events are dropped; its model trains on in the stack,
which stops only when every run of it has been cancelled. `train_stack_job` speaks
that protocol through two callables, not the pipe itself, so that the Ray
executor's stack actor (`ray_driver.StackActor`) trains a stack with the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

from ...model.stack_paths import MAX_STACK
from ..status import Outcome
from .placement import limit_threads, pin
from .worker import WorkerMessage, ending, require_gpu, title_process

T = TypeVar("T")

# The largest stack planned (the hard cap, model.stack_paths.MAX_STACK). The planner
# does not know the size this machine measured best (its timing depends on the
# worker's threads and device): a stack worker trains a planned stack larger than that
# as parts of that size, one after the other (model.stacked.train_stack), so planning
# large only ever moves runs from a queue to a worker that trains them as fast.


def stack_size(runs: int, slots: int, groups: int = 1) -> int:
    """How many of `runs` compatible runs one stack takes when `slots` worker slots
    are free for `groups` groups of compatible runs (BN and no-BN are two): each group
    gets its share of the slots and spreads its runs over them (each slot's cores
    train one stack), at most MAX_STACK in one."""
    share = max(1, slots // max(1, groups))
    return max(1, min(MAX_STACK, math.ceil(runs / share)))


def plan_stacks(keys: Sequence[tuple | None], slots: int) -> list[list[int]]:
    """Group runs (by index, in order) into stacks: runs with the same key, in the
    order they come, `stack_size` at a time; a run whose key is None trains alone."""
    groups: dict[tuple, list[int]] = {}
    alone: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            alone.append([i])
        else:
            groups.setdefault(key, []).append(i)
    stacks = []
    for members in groups.values():
        size = stack_size(len(members), slots, len(groups))
        stacks += [members[i : i + size] for i in range(0, len(members), size)]
    return sorted(stacks + alone, key=lambda stack: stack[0])


def checkpoint_dir(root: Path, run_ids: Sequence[str]) -> Path:
    """Where a stack keeps its state: named by its runs, so the same runs queued again
    (an experiment resumed after a restart) continue from it."""
    digest = hashlib.sha1(",".join(sorted(run_ids)).encode()).hexdigest()[:16]
    return root / f"stack-{digest}"


def discard_checkpoints_of(root: Path, run_id: str, keep: Sequence[Path] = ()) -> None:
    """Forget every stack checkpoint that holds `run_id` (its run ended for good, or
    was deleted), but those in `keep` (stacks still training)."""
    for directory in root.glob("stack-*"):
        if directory in keep:
            continue
        with contextlib.suppress(OSError):
            if run_id in (directory / "runs.txt").read_text().split():
                shutil.rmtree(directory, ignore_errors=True)


class StackCommand(BaseModel):
    """From the executor to a stack worker."""

    kind: Literal["train", "cancel"]
    job: str
    run_ids: list[str]
    configs: list[str] = []  # with "train": each run's RunConfig as JSON


class StackReport(BaseModel):
    """From a stack worker to the executor: one run's message, or the job's end."""

    job: str
    run_id: str | None = None
    message: WorkerMessage | None = None
    done: bool = False  # the stack ended and the worker waits for the next


def run_stack_worker(
    conn: Connection,
    data_dir: str | None,
    checkpoints: str,
    gpu: str | None,
    threads: int,
    cores: set[int] | None,
) -> None:
    """A stack worker's life: set up once, then train each stack it is sent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides, as for run_worker
    title_process("bnlab-stack")
    pin(cores)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    limit_threads(threads)
    raw = None
    while True:
        try:
            command = StackCommand.model_validate_json(conn.recv_bytes())
        except (EOFError, OSError):  # the server closed the pipe: nothing left to do
            return
        if command.kind != "train":  # a cancel that came after its job ended
            continue
        if raw is None:
            raw = _prepare(conn, command, data_dir, gpu)
            if raw is None:
                continue
        train_stack_job(
            command,
            raw,
            Path(checkpoints),
            lambda report: _send(conn, report),
            lambda: _cancels(conn),
        )


def _cancels(conn: Connection) -> list[StackCommand]:
    """The commands waiting on the pipe (while a stack trains, only cancels come)."""
    commands = []
    while conn.poll():
        commands.append(StackCommand.model_validate_json(conn.recv_bytes()))
    return commands


def _send(conn: Connection, report: StackReport) -> None:
    try:
        conn.send_bytes(report.model_dump_json().encode())
    except OSError:  # the server is gone (killed): nobody to train for
        os._exit(1)


def _prepare(conn: Connection, command: StackCommand, data_dir: str | None, gpu: str | None):
    """MNIST read once for every stack to come, in a worker whose GPU TensorFlow sees
    (`require_gpu`); None when either failed, the job's runs failed with the reason."""
    from ...model.data import read_raw_mnist

    try:
        require_gpu(gpu)
        return read_raw_mnist(data_dir)
    except Exception as exc:  # every run of the job fails with the message
        for run_id in command.run_ids:
            _send(conn, StackReport(job=command.job, run_id=run_id, message=ending(exc)))
        _send(conn, StackReport(job=command.job, done=True))
        return None


def train_stack_job(
    command: StackCommand,
    raw,
    checkpoints: Path,
    send: Callable[[StackReport], None],
    cancels: Callable[[], Iterable[StackCommand]],
) -> None:
    """Train one stack and `send` each run's events and outcome, then `done`; `cancels`
    gives the cancel commands that came since it was last asked (between compiled
    windows). Its state is kept in `checkpoint_dir(checkpoints, ...)`."""
    from ...model.config import RunConfig
    from ...model.data import split_mnist
    from ...model.events import TestMetrics
    from ...model.stacked import train_stack

    run_ids = command.run_ids
    ended: set[str] = set()

    def report(run_id: str, message: WorkerMessage) -> None:
        if message.outcome is not None:
            ended.add(run_id)
        send(StackReport(job=command.job, run_id=run_id, message=message))

    def on_event(index: int, event) -> None:
        if run_ids[index] not in ended:
            message = WorkerMessage(event=event.model_dump_json(), sent_at=time.time())
            report(run_ids[index], message)

    def should_stop() -> bool:
        for cancel in cancels():
            for run_id in cancel.run_ids:
                if cancel.job == command.job and run_id in run_ids and run_id not in ended:
                    report(run_id, WorkerMessage(outcome=Outcome.CANCELLED))
        return len(ended) == len(run_ids)

    directory = checkpoint_dir(checkpoints, run_ids)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "runs.txt").write_text("\n".join(run_ids))
    failed = False
    try:
        configs = [RunConfig.model_validate_json(c) for c in command.configs]

        def on_outcome(index: int, outcome) -> None:
            # A part of a stack split to this machine's size ends before the others.
            if run_ids[index] not in ended:
                ending_ = ending(None if isinstance(outcome, TestMetrics) else outcome)
                report(run_ids[index], ending_)

        outcomes = train_stack(
            configs,
            on_event,
            should_stop,
            data=split_mnist(raw),
            checkpoint_dir=directory,
            on_outcome=on_outcome,
        )
    except Exception as exc:
        traceback.print_exc()
        for run_id in run_ids:
            if run_id not in ended:
                report(run_id, ending(exc))
        failed = True  # failed runs may be resumed: keep what the stack had done
    else:
        for run_id, outcome in zip(run_ids, outcomes, strict=True):
            if run_id not in ended:
                report(run_id, ending(None if isinstance(outcome, TestMetrics) else outcome))
    if not failed:  # every run ended for good (completed, diverged or cancelled)
        shutil.rmtree(directory, ignore_errors=True)
    send(StackReport(job=command.job, done=True))


def stacked(items: Sequence[T], key: Callable[[T], tuple | None], slots: int) -> list[list[T]]:
    """`plan_stacks` over items rather than indices."""
    return [[items[i] for i in stack] for stack in plan_stacks([key(x) for x in items], slots)]
