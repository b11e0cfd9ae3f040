"""Two runs at once on a CPU: how the cores should be split between them.

    BNLAB_DATA_DIR=../shared/data/mnist python -m bench.concurrency [--steps N] [--reps R]

The same run (the seed CNN, the slow one) trains in spawned worker processes, through
the server's own `run_worker` (bnlab.server.execution.worker), with the thread pool
sizes and cores the server's `ProcessExecutor` gives them. Five sides,
alternated within every repetition (in rotating order) so that machine noise hits
all alike:

- one run alone with every core: a single run on an idle server, or `bnlab train`
  (`threads_per_run(1)` threads, not pinned) — the peer;
- two at once, as a server with two workers trains an experiment's runs or a
  comparison's twins: `threads_per_run(2)` threads each, each pinned to its own
  cores (`cores_for`);
- one of those alone: what each would do with nothing beside it, so that
  "two at once" over twice this is how well the split itself scales;
- a run started with every core joined by one on a worker's share: a single run
  started beside a lone one, for as long as they overlap (the server then confines
  the first to its slot's cores; its pools keep their size);
- two at once with TensorFlow's default pools (each takes every core, and they fight).

Steps/s are counted while every run of a side is training: from the moment the
last one passes its warm-up steps to the moment the first one finishes, from the
runs' own progress events (interpolated between them); evaluations (at the start
and the end only) are outside that window. Summed over the runs. Prints every
repetition, the median of each side and its ratio to one alone, the spread of its
speed over 2-second windows (a run's own steadiness, not the repetitions'), and the kernel
paths each configuration chose (model.kernels times them per thread count).
Target: two at once >= 1.25x one alone. Records the table in bench/RESULTS.md with
the machine and its load average, which matters: the machine may be shared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import numpy as np

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.events import ProgressEvent, StartEvent, event_adapter
from bnlab.server.execution.placement import cores_for, threads_per_run
from bnlab.server.execution.worker import WorkerMessage, run_worker

WARMUP = 20  # steps before the window opens (graph tracing, caches)
WINDOW = 2.0  # seconds: how steady each side is within a run


Placement = tuple[int | None, set[int] | None]  # (threads or None: TF's pools, cores)


@dataclass(frozen=True)
class Side:
    name: str
    placements: tuple[Placement, ...]  # one per run trained at once


def sides() -> list[Side]:
    whole, split = threads_per_run(1), threads_per_run(2)
    pinned = tuple((split, cores_for(slot, 2)) for slot in range(2))
    return [
        Side(f"one run alone ({whole} threads, the single-run setup)", ((whole, None),)),
        Side(f"two at once, {split} thread(s) each, pinned (experiments, twins)", pinned),
        Side(f"one of those alone ({split} thread(s), pinned)", pinned[:1]),
        # While they overlap the server confines the lone run to its slot's cores.
        Side(
            f"{whole} threads joined by {split}, each on its slot's cores (lone run, then another)",
            ((whole, pinned[0][1]), pinned[1]),
        ),
        Side("two at once, TensorFlow's default pools", ((None, None), (None, None))),
    ]


@dataclass
class Run:
    marks: list[tuple[float, int]]  # (unix time sent, step) of each progress event
    kernels: dict[str, str]


def _collect(conns: list[Connection]) -> list[Run]:
    """Read every worker's messages as they come (a worker blocks on a full pipe),
    until each has sent its outcome."""
    runs = {conn: Run([], {}) for conn in conns}
    open_ = set(conns)
    while open_:
        for conn in wait(list(open_)):
            message = WorkerMessage.model_validate_json(conn.recv_bytes())
            if message.outcome is not None:
                if message.outcome != "completed":
                    raise RuntimeError(f"a run ended {message.outcome}: {message.error}")
                open_.remove(conn)
                continue
            event = event_adapter.validate_json(message.event)
            if isinstance(event, StartEvent):
                runs[conn].kernels = event.kernels
            elif isinstance(event, ProgressEvent) and event.step >= WARMUP:
                runs[conn].marks.append((message.sent_at, event.step))
    return [runs[conn] for conn in conns]


def _rate_while_all_train(runs: list[Run], window: float | None = None) -> list[float]:
    """Steps/s summed over `runs` in the time all of them were training: over the
    whole time, or over each `window` seconds of it (how steady the side is)."""
    start = max(run.marks[0][0] for run in runs)
    end = min(run.marks[-1][0] for run in runs)
    if end <= start:
        raise RuntimeError("the runs did not train at the same time: more --steps")
    edges = np.arange(start, end, window) if window else np.array([start])
    edges = np.append(edges, end)
    steps = np.zeros(len(edges) - 1)
    for run in runs:
        times, done = zip(*run.marks, strict=True)
        steps += np.diff(np.interp(edges, times, done))
    return list(steps / np.diff(edges))


def train_side(side: Side, steps: int, data_dir: str | None) -> list[Run]:
    """Train `side`'s runs at once as the server would; what each reported."""
    ctx = multiprocessing.get_context("spawn")
    config = RunConfig(steps=steps, eval_every=steps).model_dump_json()
    conns, workers, cancels = [], [], []  # the cancel events live as long as their workers
    with tempfile.TemporaryDirectory() as checkpoints:
        for slot, (threads, cores) in enumerate(side.placements):
            parent, child = ctx.Pipe(duplex=False)
            cancels.append(ctx.Event())
            args = (config, data_dir, f"{checkpoints}/{slot}", child, cancels[-1], None)
            worker = ctx.Process(target=run_worker, args=(*args, threads, cores))
            worker.start()
            child.close()
            conns.append(parent)
            workers.append(worker)
        runs = _collect(conns)
        for worker in workers:
            worker.join()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per run")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every side")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the workers inherit it
    data_dir = os.environ.get("BNLAB_DATA_DIR")
    chosen: dict[str, dict[str, str]] = {}
    for side in sides():  # untimed: fills the kernel cache for every thread count
        chosen[side.name] = train_side(side, 2 * WARMUP, data_dir)[0].kernels
    rates: dict[str, list[float]] = {side.name: [] for side in sides()}
    windows: dict[str, list[float]] = {side.name: [] for side in sides()}
    load_before, started = os.getloadavg(), time.time()
    for rep in range(args.reps):
        order = sides()[rep % len(rates) :] + sides()[: rep % len(rates)]
        for side in order:
            runs = train_side(side, args.steps, data_dir)
            rates[side.name] += _rate_while_all_train(runs)
            windows[side.name] += _rate_while_all_train(runs, WINDOW)[:-1]  # whole ones
            print(f"rep {rep + 1}: {side.name}: {rates[side.name][-1]:.2f} steps/s", flush=True)
    load_after, minutes = os.getloadavg(), (time.time() - started) / 60
    alone_each = next(iter(rates.values()))
    alone = statistics.median(alone_each)
    lines = [
        f"Machine: {machine()}; {len(os.sched_getaffinity(0))} cores usable.",
        f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f}; "
        f"{minutes:.0f} min (other processes on these cores slow every side; the ratios "
        "are taken in the same run).",
        f"Command: `python -m bench.concurrency --steps {args.steps} --reps {args.reps}` "
        "(seed CNN, batch 64, spawned workers with the server's run_worker; steps/s summed "
        "over the runs while all train; median of the repetitions, rotating order).",
        "",
        f"| | steps/s (sum), median | vs one alone | each repetition vs its one alone "
        f"| steps/s in {WINDOW:g}-s windows, 10th to 90th percentile |",
        "|---|---:|---:|---|---|",
    ]
    for name, values in rates.items():
        rate = statistics.median(values)
        each = ", ".join(f"{v / a:.2f}" for v, a in zip(values, alone_each, strict=True))
        spread = "n/a (more --steps)"
        if windows[name]:
            spread = "{:.1f} to {:.1f}".format(*np.percentile(windows[name], [10, 90]))
        lines.append(f"| {name} | {rate:.2f} | {rate / alone:.2f}x | {each} | {spread} |")
    medians = [statistics.median(values) for values in rates.values()]
    two, one = medians[1], medians[2]
    lines += [
        "",
        f"The split itself: two at once = {two / (2 * one):.2f}x twice one of them alone "
        "(1.00x: nothing lost to sharing the machine). One run alone with every core = "
        f"{alone / (2 * one):.2f} of two one-core runs' work, so no split of the cores "
        f"can beat it by more than about {2 * one / alone:.2f}x here.",
    ]
    lines += ["", "Kernel paths chosen (model.kernels; timed per thread count):", ""]
    for name, paths in chosen.items():
        lines.append(f"- {name}: " + ", ".join(f"{op} {p}" for op, p in sorted(paths.items())))
    body = "### Concurrency: two runs at once on the CPU\n\n" + "\n".join(lines)
    print(body)
    write_section("concurrency", body)


if __name__ == "__main__":
    main()
