"""What diagnostics cost: wall time of a seed-CNN run with `basic` and `full` vs `off`.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.diagnostics [--steps N] [--reps R]

The seed recipe's defaults (CNN with BN, batch 64, Adagrad, all 5,000 validation
images at each evaluation) at its evaluation interval of 200 steps, but `--steps`
long instead of 5,000 so that a repetition takes minutes: the share of evaluations
in the run stays that of the default. What one-off costs there are (tracing the
diagnostics' compiled functions, choosing the histogram edges) weigh more in a short
run than in a 5,000-step one, so the ratios here are upper bounds of the default's.
Each repetition runs the three levels back to back, in alternating order (off,
basic, full, then full, basic, off), and the ratios are taken within a repetition;
the issue's targets are basic <= 1.05x and full <= 1.25x of off.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.training import train

LEVELS = ("off", "basic", "full")
TARGETS = {"basic": 1.05, "full": 1.25}


def wall_seconds(config: RunConfig, data) -> float:
    start = time.perf_counter()
    train(config, data=data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="updates per run")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    data = load_mnist()
    base = RunConfig(steps=args.steps)  # every other knob at its default
    seconds: dict[str, list[float]] = {level: [] for level in LEVELS}
    for rep in range(args.reps):
        for level in LEVELS if rep % 2 == 0 else LEVELS[::-1]:
            config = base.model_copy(update={"diagnostics": level})
            seconds[level].append(wall_seconds(config, data))
            print(f"rep {rep + 1}: {level} {seconds[level][-1]:.1f} s", flush=True)
    ratios = {
        level: [s / off for s, off in zip(seconds[level], seconds["off"], strict=True)]
        for level in TARGETS
    }

    def row(level: str) -> str:
        times = ", ".join(f"{s:.1f}" for s in seconds[level])
        if level == "off":
            return f"| off | {times} | | |"
        each = ", ".join(f"{r:.3f}x" for r in ratios[level])
        median = statistics.median(ratios[level])
        return f"| {level} | {times} | {each} | **{median:.3f}x** (target ≤ {TARGETS[level]}x) |"

    evaluations = len(base.eval_steps())
    body = "\n".join(
        [
            "## Diagnostics: the cost of `basic` and `full` (seed CNN)",
            "",
            f"`python -m bench.diagnostics --steps {args.steps} --reps {args.reps}` on "
            f"{machine()}: the default run (CNN + BN, batch 64, eval every "
            f"{base.eval_every} steps on 5,000 validation images) cut to {args.steps} steps "
            f"({evaluations} evaluations, step 0 included). Wall time of `train()`; levels "
            "alternate within each repetition and each ratio is against the `off` run of "
            "its own repetition. Other work shared the machine's two cores while this ran, "
            "so every repetition is listed.",
            "",
            "| diagnostics | wall seconds, each repetition | / off, each repetition | median |",
            "| --- | --- | --- | --- |",
            *(row(level) for level in LEVELS),
        ]
    )
    print(body)
    write_section("diagnostics", body)


if __name__ == "__main__":
    main()
