"""Per-step overhead: the paper's MLP at batch 16 with SGD, where a step is almost all overhead.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.overhead [--steps N] [--reps R]

The network (784-100-100-100-10, sigmoid, BN) has 100,000 weights: a step at
batch 16 is about 10 MFLOP, forward and backward: a fraction of a
millisecond of arithmetic, so what is mostly measured is the fixed cost of
getting a step done: Python, dispatch into TensorFlow, waiting for the result.
`train()` runs its updates in compiled windows of about 0.25 s
(model.training), also timed with one update per call to show what the
windows save; its peers are the same network in plain Keras (bench/peers.py)
trained with `model.fit`, with
`steps_per_execution` 1 (one call per step, Keras's default) and 50 (fifty
updates in one compiled loop). All sides are timed over the same number of
updates after a warm-up, alternating in every repetition; prints steps/s and
ratios, and records them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

from bench.peers import keras_steps_per_sec, ours_steps_per_sec
from bench.report import machine, write_section
from bnlab.model import training
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist

# The paper's MNIST MLP trained with SGD; no dropout or shifts, which the
# paper did not use and the Keras peer does not have.
MLP = {"arch": "mlp", "batch_size": 16, "optimizer": "sgd", "learning_rate": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed updates per measurement")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    data = load_mnist()
    config = RunConfig(**MLP, steps=args.steps, eval_every=args.steps, dropout=0, max_shift=0)

    def single_steps() -> float:
        # One update per compiled call, as train() ran before its windows.
        with mock.patch.object(training, "WINDOW_SECONDS", 0.0):
            return ours_steps_per_sec(config, data)

    sides = [
        ("ours", lambda: ours_steps_per_sec(config, data)),
        ("single", single_steps),
        ("keras", lambda: keras_steps_per_sec(config, data, steps_per_execution=1)),
        ("keras50", lambda: keras_steps_per_sec(config, data, steps_per_execution=50)),
    ]
    measured: dict[str, list[float]] = {name: [] for name, _ in sides}
    for rep in range(args.reps):
        for name, measure in sides if rep % 2 == 0 else sides[::-1]:
            measured[name].append(measure())
            print(f"rep {rep + 1}: {name} {measured[name][-1]:.0f} steps/s", flush=True)
    median = {name: statistics.median(values) for name, values in measured.items()}

    def row(title: str, name: str) -> str:
        values = ", ".join(f"{x:.0f}" for x in measured[name])
        return f"| {title} | {median[name]:.0f} | {values} | {median['ours'] / median[name]:.2f}x |"

    body = "\n".join(
        [
            "### Overhead: train() vs Keras model.fit (BN MLP, batch 16, SGD)",
            "",
            f"`python -m bench.overhead --steps {args.steps} --reps {args.reps}` on {machine()}.",
            "",
            "| | median steps/s | all repetitions | train() / this |",
            "| --- | --- | --- | --- |",
            row("BN Lab `train()`", "ours"),
            row("BN Lab `train()`, one update per call (as before its windows)", "single"),
            row("Keras `model.fit`", "keras"),
            row("Keras `model.fit`, `steps_per_execution=50`", "keras50"),
            "",
            f"**train() / Keras `fit` with `steps_per_execution=50`: "
            f"{median['ours'] / median['keras50']:.2f}x** (target ≥ 1.0x).",
        ]
    )
    print(body)
    write_section("overhead", body)


if __name__ == "__main__":
    main()
