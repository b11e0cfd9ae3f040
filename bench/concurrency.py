"""Two runs at once on a CPU: how TensorFlow's thread pools should be split.

    BNLAB_DATA_DIR=../shared/data/mnist python -m bench.concurrency [--steps N] [--reps R]

The same run (the seed CNN, the slow one) is trained three ways, each in fresh
spawned worker processes as the server trains it, alternated within every
repetition so machine noise hits all three:

- one run alone, TensorFlow's default thread pools (the peer);
- two runs at once, default pools (each takes every core, and they fight);
- two runs at once, split pools: `threads_per_run(2)` threads each, as the
  server's workers and `bnlab experiment` set them (bnlab.server.worker).

Steps/s are measured between a warm-up step and the end, from the run's own
progress events (evaluations at the start and end are outside the window), and
summed over the runs training at once. Prints each and its ratio to one alone;
target: two at once (split) >= 1.25x one alone. Records them in bench/RESULTS.md
with the machine and its load average, which matters: the machine may be shared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics

from bench.report import machine, write_section
from bnlab.server.worker import threads_per_run

WARMUP = 20  # steps before the window opens (graph tracing, caches)


def _train(steps: int, threads: int | None, data_dir: str | None, ready, go, out) -> None:
    """In a worker: load the data, wait for the others, train, send back steps/s."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bnlab.server.worker import limit_threads

    if threads is not None:
        limit_threads(threads)
    from bnlab.model.config import RunConfig
    from bnlab.model.data import load_mnist
    from bnlab.model.events import ProgressEvent
    from bnlab.model.training import train

    config = RunConfig(steps=steps, eval_every=steps)
    data = load_mnist(data_dir, download=False, train_subset=config.train_subset)
    marks: list[tuple[int, float]] = []

    def on_event(event) -> None:
        if isinstance(event, ProgressEvent) and event.step >= WARMUP:
            marks.append((event.step, event.elapsed))

    ready.release()
    go.wait()
    train(config, on_event, data=data)
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    out.put((s1 - s0) / (t1 - t0))


def measure(runs: int, threads: int | None, steps: int, data_dir: str | None) -> float:
    """Steps/s summed over `runs` runs training at once."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_train, args=(steps, threads, data_dir, ready, go, out))
        for _ in range(runs)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # every worker has TensorFlow and the data loaded
        ready.acquire()
    go.set()
    rates = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per run")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the three")
    args = parser.parse_args()
    data_dir = os.environ.get("BNLAB_DATA_DIR")
    split = threads_per_run(2)
    sides = {
        "one run alone (default pools)": (1, None),
        "two at once, default pools": (2, None),
        f"two at once, {split} thread(s) each": (2, split),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    load_before = os.getloadavg()
    for rep in range(args.reps):
        for name, (runs, threads) in sides.items():
            rates[name].append(measure(runs, threads, args.steps, data_dir))
            print(f"rep {rep + 1}: {name}: {rates[name][-1]:.2f} steps/s", flush=True)
    load_after = os.getloadavg()
    alone = statistics.median(rates["one run alone (default pools)"])
    lines = [
        f"Machine: {machine()}; {len(os.sched_getaffinity(0))} cores usable.",
        f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        "(other processes share these cores: the absolute rates are lower than on a quiet "
        "machine; the ratios are taken in the same run).",
        f"Command: `python -m bench.concurrency --steps {args.steps} --reps {args.reps}` "
        "(seed CNN, batch 64, steps/s summed over the runs training at once, median of reps).",
        "",
        "| | steps/s (sum) | vs one alone |",
        "|---|---:|---:|",
    ]
    for name, values in rates.items():
        rate = statistics.median(values)
        lines.append(f"| {name} | {rate:.2f} | {rate / alone:.2f}x |")
    body = "## Concurrency: two runs at once on the CPU\n\n" + "\n".join(lines)
    print(body)
    write_section("concurrency", body)


if __name__ == "__main__":
    main()
