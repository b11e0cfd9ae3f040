"""The worker process: one training run, reported back over a pipe.

Runs in a freshly spawned interpreter; TensorFlow is imported here and only
here, after CUDA_VISIBLE_DEVICES is set so the worker sees just its own GPU.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from pydantic import BaseModel

# Imported for its effect: TensorFlow's log level and CUDA's JIT cache are set before
# this process first imports TensorFlow (bnlab.model.environment).
from bnlab.model import environment  # noqa: F401
from bnlab.server.status import Outcome

if TYPE_CHECKING:
    from bnlab.model.data import RawMnist


class WorkerMessage(BaseModel):
    """What travels from worker to server: an event, or the run's outcome."""

    event: str | None = None  # the event's own JSON (non-finite numbers as null)
    sent_at: float | None = None  # unix time the worker sent it: end-to-end latency
    outcome: Outcome | None = None
    error: str | None = None


def threads_per_run(concurrent: int) -> int:
    """TensorFlow threads for each of `concurrent` runs training at once: an equal
    share of the cores this process may use (its affinity, not the machine's count),
    at least one. On 2 cores two runs at once with one thread each train exactly
    twice as fast as one of them alone (0.99-1.02x of that), and as a rule faster
    than with TensorFlow's default pools, which each take every core and fight
    (issue #14 §4; bench/concurrency.py and bench/RESULTS.md, "Concurrency")."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, concurrent))


def cores_for(slot: int, concurrent: int) -> set[int] | None:
    """The cores the run in `slot` (0 .. concurrent-1) of `concurrent` at once is
    pinned to: its own contiguous share of the cores this process may use, so that
    no two runs' threads take turns on one core and none migrates away from its
    core's cache. On the 2-vCPU VM of bench/concurrency.py it measured within noise
    of leaving the placement to the scheduler (+0.01x); it is what the thread split
    assumes, and on a host with per-core caches or SMT siblings the scheduler has
    more ways to get it wrong. None (the scheduler places it) when one run has
    every core, or when there are more runs than cores: pinned, two of three runs
    would share one core while the third had the other to itself."""
    usable = sorted(os.sched_getaffinity(0))
    if concurrent <= 1 or concurrent > len(usable):
        return None
    slot %= concurrent
    return set(usable[slot * len(usable) // concurrent : (slot + 1) * len(usable) // concurrent])


def pin(cores: set[int] | None, pid: int | None = None) -> None:
    """Confine process `pid` (this one by default) to `cores` (None: leave it). An
    affinity belongs to a thread: every thread running now is moved (numpy's BLAS
    starts some on import, TensorFlow its pools), and threads started later inherit
    it from the thread that starts them."""
    if cores is None:
        return
    with contextlib.suppress(FileNotFoundError):  # the process has ended
        for thread in os.listdir(f"/proc/{pid or 'self'}/task"):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setaffinity(int(thread), cores)


def limit_threads(threads: int) -> None:
    """Size this process's TensorFlow thread pools; only before TensorFlow runs an op."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


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
) -> None:
    """Train the run, sending each event and finally its outcome (never raises).
    The one place where how a run ended becomes an `Outcome`, for worker
    processes and Ray actors alike; `raw` is MNIST already in memory, `threads`
    TensorFlow's pool sizes (`threads_per_run`; None: TensorFlow's defaults)."""

    def on_event(event) -> None:
        send(WorkerMessage(event=event.model_dump_json(), sent_at=time.time()))

    try:
        from bnlab.model.config import RunConfig
        from bnlab.model.data import DataError, split_mnist
        from bnlab.model.events import Cancelled, Diverged
        from bnlab.model.training import train

        config = RunConfig.model_validate_json(config_json)
        data = split_mnist(raw, config.train_subset) if raw is not None else None
        if threads is not None:
            limit_threads(threads)
        try:
            train(
                config,
                on_event,
                should_stop,
                data=data,
                data_dir=data_dir,
                checkpoint_dir=checkpoint_dir,
            )
            send(WorkerMessage(outcome=Outcome.COMPLETED))
        except Cancelled:
            send(WorkerMessage(outcome=Outcome.CANCELLED))
        except Diverged as exc:
            send(WorkerMessage(outcome=Outcome.DIVERGED, error=str(exc)))
        except DataError as exc:
            send(WorkerMessage(outcome=Outcome.FAILED, error=str(exc)))
    except Exception as exc:
        traceback.print_exc()
        send(WorkerMessage(outcome=Outcome.FAILED, error=f"{type(exc).__name__}: {exc}"))
