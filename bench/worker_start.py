"""How long a run waits for its worker: spawned fresh, or forked from a fork server.

    BNLAB_DATA_DIR=../shared/data/mnist python -m bench.worker_start [--reps R]

The server starts each run in a process of its own (`processes.worker_context`): on a
machine without an NVIDIA driver it forks it from a fork server that has imported
TensorFlow and the trainers; on a GPU machine it spawns it, and the new interpreter
imports them itself. Both sides start the same tiny run (the paper's MLP, 20 steps on
1,000 images, one TensorFlow thread, as one of two workers gets) through the server's
own `run_worker`, one at a time, alternating within every repetition. The fork server
is started (and its imports paid) once before the first repetition, as a server pays
it with its first run; every later run of the server forks from it.

Prints, per side, the median time from `Process.start()` to the run's first event (its
start event: data loaded, network built) and to its end (trained, evaluated, tested),
and the ratio of spawned over forked. Records the table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.server.execution.processes import PRELOAD
from bnlab.server.execution.worker import WorkerMessage, run_worker

CONFIG = RunConfig(arch="mlp", steps=20, eval_every=10, train_subset=1000, diagnostics="off")


def one_run(context: multiprocessing.context.BaseContext, checkpoints: str) -> tuple[float, float]:
    """Seconds from start to the first event, and to the outcome."""
    parent, child = context.Pipe(duplex=False)
    cancel = context.Event()
    began = time.perf_counter()
    process = context.Process(
        target=run_worker,
        args=(
            CONFIG.model_dump_json(),
            os.environ.get("BNLAB_DATA_DIR"),
            checkpoints,
            child,
            cancel,
            None,
            1,
            None,
        ),
    )
    process.start()
    child.close()
    first = None
    while True:
        message = WorkerMessage.model_validate_json(parent.recv_bytes())
        first = first if first is not None else time.perf_counter() - began
        if message.outcome is not None:
            if message.error:
                raise RuntimeError(message.error)
            break
    ended = time.perf_counter() - began
    process.join()
    return first, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="runs per side (default 5)")
    args = parser.parse_args()
    spawned = multiprocessing.get_context("spawn")
    forked = multiprocessing.get_context("forkserver")
    forked.set_forkserver_preload(PRELOAD)
    times: dict[str, list[tuple[float, float]]] = {"spawned": [], "forked": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        one_run(forked, f"{scratch}/warm")  # the fork server's own start, as a first run pays it
        for rep in range(args.reps):
            sides = [("spawned", spawned), ("forked", forked)]
            for name, context in sides if rep % 2 == 0 else sides[::-1]:
                times[name].append(one_run(context, f"{scratch}/{name}{rep}"))
                print(
                    f"rep {rep} {name}: first event {times[name][-1][0]:.2f} s, "
                    f"ended {times[name][-1][1]:.2f} s",
                    flush=True,
                )
    median = {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in times.items()
    }
    rows = [f"| {name} | {first:.2f} | {ended:.2f} |" for name, (first, ended) in median.items()]
    body = "\n".join(
        [
            f"`python -m bench.worker_start --reps {args.reps}` on {machine()}; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
            "A tiny run (MLP, 20 steps on 1,000 images, one thread) through `run_worker`, "
            "one at a time, sides alternated; medians.",
            "",
            "| worker | to first event, s | to its end, s |",
            "|---|---|---|",
            *rows,
            "",
            f"Spawned over forked: **{median['spawned'][0] / median['forked'][0]:.1f}x** to the "
            f"first event, **{median['spawned'][1] / median['forked'][1]:.1f}x** to the end.",
        ]
    )
    print(body)
    write_section("worker-start", body)


if __name__ == "__main__":
    main()
