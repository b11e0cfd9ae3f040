"""The worker process: one training run, reported back over a pipe.

Runs in a fresh process: spawned, TensorFlow imported here after CUDA_VISIBLE_DEVICES
is set so the worker sees just its own GPU; or, on a machine without an NVIDIA driver,
forked from a server that has imported TensorFlow and run nothing
(`processes.worker_context`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

# Imported for its effect: TensorFlow's log level and CUDA's JIT cache are set before
# this process first imports TensorFlow (bnlab.model.environment).
from ...model import environment  # noqa: F401
from ..status import Outcome
from .placement import limit_threads, pin

if TYPE_CHECKING:
    from ...model.data import RawMnist


class GpuUnavailable(Exception):
    """This worker was given a GPU that TensorFlow cannot see (CUDA's libraries are
    missing, most often): its runs fail saying so rather than train on the CPU unnoticed."""


def title_process(title: str) -> None:
    """Name this process `title` where `ps`, `top` and the tests see it (the kernel's
    `comm`, at most 15 characters): a forked worker otherwise looks like its fork
    server, a spawned one like any Python."""
    with contextlib.suppress(OSError):  # not Linux: the name is only a convenience
        Path("/proc/self/comm").write_text(title[:15])


def require_gpu(gpu: str | None) -> None:
    """Raise GpuUnavailable when this process was given GPU `gpu` (None: none, the
    CPU) and TensorFlow lists no GPU. Imports TensorFlow."""
    if gpu is None:
        return
    from ...model.cuda import gpu_missing_message, missing_libraries
    from ...model.device import tensorflow_gpus

    if not tensorflow_gpus():
        why = gpu_missing_message([gpu], [], missing_libraries())
        raise GpuUnavailable(f"{why} (or train on the CPU: bnlab serve --device cpu)")


class WorkerMessage(BaseModel):
    """What travels from worker to server: an event, or the run's outcome."""

    event: str | None = None  # the event's own JSON (non-finite numbers as null)
    sent_at: float | None = None  # unix time the worker sent it: end-to-end latency
    outcome: Outcome | None = None
    error: str | None = None


def run_worker(
    config_json: str,
    data_dir: str | None,
    checkpoint_dir: str,
    conn: Connection,
    cancel,
    gpu: str | None,
    threads: int | None = None,
    cores: set[int] | None = None,
) -> None:
    """Train one run and report over `conn`. `threads`: TensorFlow's pool sizes
    (`threads_per_run`), None leaves TensorFlow's defaults; `cores`: the cores the
    process is pinned to (`cores_for`), None leaves it to the scheduler."""
    # Ctrl-C in the server's terminal reaches the whole process group; the
    # server decides what happens to its workers, so ignore it here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    title_process("bnlab-run")
    pin(cores)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    # Before TensorFlow is imported, so before any op: with --gpus-per-run < 1
    # several workers share a card, and one must not reserve all of its memory
    # (model/device.py sets the same growth again, per device).
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

    def send(message: WorkerMessage) -> None:
        try:
            conn.send_bytes(message.model_dump_json().encode())
        except OSError:  # the server is gone (killed): nobody to train for
            os._exit(1)

    try:
        train_and_report(
            config_json,
            send,
            cancel.is_set,
            data_dir=data_dir,
            checkpoint_dir=checkpoint_dir,
            threads=threads,
            gpu=gpu,
        )
    finally:
        conn.close()


def train_and_report(
    config_json: str,
    send: Callable[[WorkerMessage], None],
    should_stop: Callable[[], bool],
    *,
    raw: RawMnist | None = None,
    data_dir: str | None = None,
    checkpoint_dir: str | None = None,
    threads: int | None = None,
    gpu: str | None = None,
) -> None:
    """Train the run, sending each event and finally its outcome (`ending`; never
    raises), for worker processes and Ray actors alike; `raw` is MNIST already in
    memory, `threads` TensorFlow's pool sizes (`threads_per_run`; None: its defaults),
    `gpu` the GPU this process was given (`require_gpu`; None: none)."""

    def on_event(event) -> None:
        send(WorkerMessage(event=event.model_dump_json(), sent_at=time.time()))

    try:
        from ...model.config import RunConfig
        from ...model.data import split_mnist
        from ...model.training import train

        require_gpu(gpu)
        config = RunConfig.model_validate_json(config_json)
        data = split_mnist(raw, config.train_subset) if raw is not None else None
        if threads is not None:
            limit_threads(threads)
        train(
            config,
            on_event,
            should_stop,
            data=data,
            data_dir=data_dir,
            checkpoint_dir=checkpoint_dir,
        )
    except Exception as exc:
        send(ending(exc))
    else:
        send(ending(None))


def ending(stopped: BaseException | None) -> WorkerMessage:
    """How a training ended, as the message that says so: None when it completed, else
    what stopped it. The one place where that becomes an `Outcome`, for worker
    processes, stacks, Ray actors and `bnlab experiment` alike."""
    from ...model.data import DataError
    from ...model.events import Cancelled, Diverged

    if stopped is None:
        return WorkerMessage(outcome=Outcome.COMPLETED)
    if isinstance(stopped, Cancelled):
        return WorkerMessage(outcome=Outcome.CANCELLED)
    if isinstance(stopped, Diverged | DataError | GpuUnavailable):
        outcome = Outcome.DIVERGED if isinstance(stopped, Diverged) else Outcome.FAILED
        return WorkerMessage(outcome=outcome, error=str(stopped))
    traceback.print_exception(stopped)
    return WorkerMessage(outcome=Outcome.FAILED, error=f"{type(stopped).__name__}: {stopped}")
