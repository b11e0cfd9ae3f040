"""GPU: the CNN's throughput, the default run's wall time, and Keras `fit` as the peer.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.gpu [--steps N] [--reps R]

For a machine with a CUDA GPU that TensorFlow sees; it has not run yet (BN Lab
was developed on 2-core CPU machines without one). Without a visible GPU it
stops at once with a non-zero exit status and says so, rather than quietly measuring a
CPU. On a GPU a step of this CNN at batch 64 is well under a millisecond of
arithmetic, so the fixed cost per step decides the speed: the peer is Keras
`fit` with `steps_per_execution` (many steps per compiled call, as train()'s
windows do) as well as without. Records:
- steps/s of train() (unshifted, as the peers) and of each peer, alternating
  A/B in every repetition, and their ratios;
- the wall time of the full default run (`RunConfig()`: 5,000 steps with 26
  evaluations and the test), and its test accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import tensorflow as tf

from bench.peers import keras_steps_per_sec, ours_steps_per_sec
from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.training import train

STEPS_PER_EXECUTION = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed updates per measurement")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        sys.exit(
            "bench.gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is "
            "empty), so there is nothing to measure; run it on a machine with a CUDA GPU "
            "and TensorFlow's GPU build (pip install 'tensorflow[and-cuda]')."
        )
    data = load_mnist()
    config = RunConfig(steps=args.steps, eval_every=args.steps, max_shift=0)
    sides = [
        ("ours", lambda: ours_steps_per_sec(config, data)),
        ("keras", lambda: keras_steps_per_sec(config, data)),
        ("keras-spe", lambda: keras_steps_per_sec(config, data, STEPS_PER_EXECUTION)),
    ]
    measured: dict[str, list[float]] = {name: [] for name, _ in sides}
    for rep in range(args.reps):
        for name, measure in sides if rep % 2 == 0 else sides[::-1]:
            measured[name].append(measure())
            print(f"rep {rep + 1}: {name} {measured[name][-1]:.1f} steps/s", flush=True)
    median = {name: statistics.median(values) for name, values in measured.items()}

    started = time.perf_counter()
    metrics = train(RunConfig(), data=data)
    wall = time.perf_counter() - started

    def row(title: str, name: str) -> str:
        values = ", ".join(f"{x:.1f}" for x in measured[name])
        return f"| {title} | {median[name]:.1f} | {values} | {median['ours'] / median[name]:.2f}x |"

    body = "\n".join(
        [
            f"### GPU: train() vs Keras model.fit (BN CNN, batch {config.batch_size})",
            "",
            f"`python -m bench.gpu --steps {args.steps} --reps {args.reps}` on {machine()}; "
            f"GPU: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', '?')}.",
            "",
            "| | median steps/s | all repetitions | train() / this |",
            "| --- | --- | --- | --- |",
            row("BN Lab `train()`", "ours"),
            row("Keras `model.fit`", "keras"),
            row(f"Keras `model.fit`, `steps_per_execution={STEPS_PER_EXECUTION}`", "keras-spe"),
            "",
            f"The full default run (`RunConfig()`, 5,000 steps, 1-pixel shifts, evaluations "
            f"included): **{wall:.0f} s** wall time, test accuracy {metrics.test_accuracy:.4f}.",
        ]
    )
    print(body)
    write_section("gpu", body)


if __name__ == "__main__":
    main()
