"""Where a run's threads go: how many TensorFlow threads each of the runs training at
once gets, and which cores each worker is pinned to."""

from __future__ import annotations

import contextlib
import os


def threads_per_run(concurrent: int) -> int:
    """TensorFlow threads for each of `concurrent` runs training at once: an equal
    share of the cores this process may use (its affinity, not the machine's count),
    at least one. On 2 cores two runs at once with one thread each train exactly
    twice as fast as one of them alone, and as a rule faster
    than with TensorFlow's default pools, which each take every core and fight
    (issue #14 §4; bench/concurrency.py and bench/RESULTS.md, "Concurrency")."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, concurrent))


def cores_for(slot: int, concurrent: int) -> set[int] | None:
    """The cores the run in `slot` (0 .. concurrent-1) of `concurrent` at once is
    pinned to: its own contiguous share of the cores this process may use, so that
    no two runs' threads take turns on one core and none migrates away from its
    core's cache. On the 2-vCPU VM of bench/concurrency.py it measured within noise
    of leaving the placement to the scheduler (bench/RESULTS.md, "Concurrency"); it
    is what the thread split assumes, and on a host with per-core caches or SMT
    siblings the scheduler has more ways to get it wrong. None (the scheduler places
    it) when one run has every core, or when there are more runs than cores:
    pinned, two of three runs would share one core while the third had the other
    to itself."""
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
