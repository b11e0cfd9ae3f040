"""Which implementation each hot gradient uses on the machine at hand.

Some gradients can be computed in more than one way with the same numbers (the
same sums in another order): a convolution's input and kernel gradients by
TensorFlow's backprop kernels or as forward convolutions, the FC layer's input
gradient as ``dy @ W.T`` or ``(W @ dy.T).T``, batch norm's backward by autodiff of
its primitives or in closed form (model/batchnorm.py). Which is fastest depends on the
CPU's kernels: on an AMD EPYC oneDNN's backprop convolutions ran at half the
speed of its forward ones, on an AVX-512 Xeon they are the fast choice
(bench/RESULTS.md). So each is timed on its real shapes the first time a step
is traced, in the run's own thread configuration, the fastest is kept, and the
choice is cached per (CPU model, TensorFlow version, intra-op threads, operation,
shapes) in the per-user cache (model.machine_cache), so that it costs seconds once
per machine rather than every run.

A GPU keeps TensorFlow's own paths (cuDNN's backward kernels) without timing.
`BNLAB_KERNELS` forces paths, for tests and benchmarks: `tf` (TensorFlow's own
everywhere), or `op=path` pairs such as `conv2d.dx=forward,dense.dx=tf`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import tensorflow as tf

from . import machine_cache
from .machine_cache import cpu_model

ENV_VAR = "BNLAB_KERNELS"
CACHE_FILE = "kernels.json"
REFERENCE = "tf"  # every operation's TensorFlow-own path
ROUNDS = 7  # alternating timing rounds per candidate
CALLS_PER_ROUND = 3
# An alternative replaces the reference only when it is clearly faster: on a
# busy machine two paths within a few percent swap places from one timing to
# the next, and a cached choice lasts.
MARGIN = 0.95

# Every operation with a choice, and its candidates (the reference first).
OPERATIONS: dict[str, tuple[str, ...]] = {
    "conv2d.dx": (REFERENCE, "forward"),
    "conv2d.dkernel": (REFERENCE, "forward"),
    "dense.dx": (REFERENCE, "relayout"),
    "batchnorm.grad": (REFERENCE, "closed"),
}

Shape = tuple[int, ...]
Candidate = Callable[..., tf.Tensor]

_memo: dict[str, str] = {}
_recorders: list[dict[str, str]] = []


def cache_path() -> Path:
    return machine_cache.path(CACHE_FILE)


def forced() -> dict[str, str]:
    """The paths `BNLAB_KERNELS` forces; a bad value is an error naming the variable."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return {}
    if value == REFERENCE:
        return dict.fromkeys(OPERATIONS, REFERENCE)
    paths = {}
    for pair in value.split(","):
        op, _, path = pair.strip().partition("=")
        if path not in OPERATIONS.get(op, ()):
            choices = "; ".join(f"{o}={'|'.join(p)}" for o, p in OPERATIONS.items())
            raise ValueError(f"{ENV_VAR}: {pair!r} is not tf or op=path with one of: {choices}")
        paths[op] = path
    return paths


def _dims(shapes: Sequence[Shape | None]) -> str:
    return " ".join("x".join(map(str, shape or ("?",))) for shape in shapes)


def intra_op_threads() -> int:
    """The size of TensorFlow's intra-op pool in this process: as set, else
    TensorFlow's default, one thread per core the process may use."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return (
        configured
        or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0)
        or len(os.sched_getaffinity(0))
    )


def _key(op: str, shapes: Sequence[Shape]) -> str:
    # The thread count is part of the key: a run with one core of its own (one of
    # two at once on 2 cores) may be fastest on another path than a run with two.
    threads = f"{intra_op_threads()} thread(s)"
    return f"{cpu_model()} | TensorFlow {tf.__version__} | {threads} | {op} | {_dims(shapes)}"


def _read_cache() -> dict[str, str]:
    return machine_cache.read(CACHE_FILE)


def _write_cache(key: str, path: str) -> None:
    machine_cache.write(CACHE_FILE, key, path)


def _time(candidates: dict[str, Candidate], shapes: Sequence[Shape]) -> dict[str, float]:
    """Seconds per call of each candidate on random inputs of `shapes`,
    compiled, alternating candidates in every round so load hits all alike.
    The fastest round counts: other jobs on the machine only ever add time."""
    with tf.init_scope():  # out of the step being traced: run for real
        inputs = [tf.random.normal(shape) for shape in shapes]
        compiled = {name: tf.function(fn) for name, fn in candidates.items()}
        for fn in compiled.values():
            fn(*inputs).numpy()  # trace and warm up
        seconds: dict[str, list[float]] = {name: [] for name in compiled}
        for round_ in range(ROUNDS):
            order = list(compiled.items())
            for name, fn in order if round_ % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                for _ in range(CALLS_PER_ROUND):
                    out = fn(*inputs)
                out.numpy()
                seconds[name].append((time.perf_counter() - started) / CALLS_PER_ROUND)
    return {name: min(values) for name, values in seconds.items()}


def on_gpu() -> bool:
    """Whether this process trains on a GPU, where cuDNN's own kernels are kept."""
    return bool(tf.config.list_physical_devices("GPU"))


def choose(op: str, shapes: Sequence[Shape | None], candidates: dict[str, Candidate]) -> str:
    """The path `op` takes for inputs of `shapes` (each candidate takes them
    all as arguments): forced, on a GPU the reference, else the fastest as
    timed once per machine and shape and cached."""
    if tuple(candidates) != OPERATIONS[op]:
        raise ValueError(f"{op}: candidates {tuple(candidates)} are not {OPERATIONS[op]}")
    path = forced().get(op)
    if path is None and (on_gpu() or any(s is None or None in s for s in shapes)):
        path = REFERENCE  # cuDNN's own backward; or shapes unknown until run time
    if path is None:
        key = _key(op, shapes)
        path = _memo.get(key) or _read_cache().get(key)
        if path not in candidates:
            timings = _time(candidates, shapes)
            fastest = min(timings, key=timings.__getitem__)
            clearly = timings[fastest] < MARGIN * timings[REFERENCE]
            path = fastest if clearly else REFERENCE
            _write_cache(key, path)
        _memo[key] = path
    for recorder in _recorders:
        recorder[f"{op} {_dims(shapes)}"] = path
    return path


@contextlib.contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Collect the paths chosen inside the block, as {"op shapes": path}."""
    chosen: dict[str, str] = {}
    _recorders.append(chosen)
    try:
        yield chosen
    finally:
        _recorders.remove(chosen)


def chosen_paths() -> dict[str, str]:
    """Every choice made in this process so far, as {"op shapes": path}."""
    return {key.split(" | ", 3)[3].replace(" | ", " ", 1): path for key, path in _memo.items()}
