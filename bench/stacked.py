"""Stacked training (issue #27), the model side: a stack of M paper MLPs against M runs alone.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.stacked [--sizes 1,2,4]

For each stack size M it builds the training window of a stack of M paper MLPs
(784-100-100-100-10 sigmoid with BN, SGD 0.5, batch 60; seeds 0..M-1; model.stacked)
and the window of one such run alone (model.training), and times both in every
round, alternately, so that load on a shared machine hits both: the best round
counts (other jobs only ever add time). A stack's per-model rate is its steps/s
times M; M runs alone, one after the other, do the rate of one alone. Printed as
ratios, with the process's CPU seconds per model-step beside the wall time (on a
shared machine the wall clock counts other people's work; CPU time counts ours).

The 64-model stack's FLOP rate is set against the machine's matmul peak, measured
here as the best of ROUNDS timings of a compiled 2048x2048 @ 2048x2048 float32
`tf.matmul` (2·2048³ FLOP) with TensorFlow's default threads. A model-step of the
MLP is 2·B·(2·ΣIO + ΣIO₋₁) FLOP: forward and weight gradients over all four
products (ΣIO = 784·100 + 100·100 + 100·100 + 100·10) and input gradients of all but
the first; elementwise work not counted.

`--evaluation M` times `train_stack` end to end, the way a worker calls it: M paper
MLPs (seeds 0..M-1) for EVAL_STEPS steps with an evaluation every EVAL_EVERY, once
with `basic` diagnostics and once `off`, alternating: the whole stack, the first start
event, and what an evaluation costs (its diagnostics: basic minus off, per model).

`--compare-arms` also times a stack of M/2 BN and M/2 no-BN models (the stack
computes both variants and selects per model) against the two homogeneous stacks
of M/2 trained one after the other. `--cnn` times the seed CNN's second convolution
as one grouped convolution over M models (models folded into channels, XLA) against
M separate convolutions, forward and backward.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bench.report import machine, write_section
from bnlab.model.config import PAPER_MLP as PAPER_RECIPE
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.stacked import StackTrainer, train_stack
from bnlab.model.training import Trainer
from bnlab.server.execution.placement import limit_threads, pin

PAPER_MLP = {**PAPER_RECIPE, "diagnostics": "off"}  # the training alone is timed
LAYERS = ((784, 100), (100, 100), (100, 100), (100, 10))
PEAK_SIZE = 2048


def mlp_flop_per_step(batch: int) -> float:
    products = sum(i * o for i, o in LAYERS)
    return 2.0 * batch * (2 * products + products - LAYERS[0][0] * LAYERS[0][1])


def matmul_peak(rounds: int) -> float:
    """FLOP/s of the best timing of a large float32 matmul (the module's docstring)."""
    a = tf.random.normal([PEAK_SIZE, PEAK_SIZE])
    product = tf.function(lambda a: tf.matmul(a, a))
    product(a).numpy()
    best = min(_seconds(lambda: product(a).numpy())[0] for _ in range(rounds))
    return 2.0 * PEAK_SIZE**3 / best


def _seconds(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds of `work()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


class Side:
    """One thing timed: `run(steps)` trains that many updates of `models` models."""

    def __init__(self, name: str, models: int, run: Callable[[int], object]) -> None:
        self.name, self.models, self.run = name, models, run
        self.best_wall = self.best_cpu = float("inf")
        self.steps = 1

    def calibrate(self, seconds: float) -> None:
        self.run(3)  # the first call optimises the graph
        wall, _ = _seconds(lambda: self.run(5))
        self.steps = max(5, int(seconds / (wall / 5)))

    def measure(self) -> None:
        wall, cpu = _seconds(lambda: self.run(self.steps))
        self.best_wall = min(self.best_wall, wall / self.steps)
        self.best_cpu = min(self.best_cpu, cpu / self.steps)

    @property
    def model_steps_per_sec(self) -> float:
        return self.models / self.best_wall

    @property
    def cpu_per_model_step(self) -> float:
        return self.best_cpu / self.models


def alone(data, config: RunConfig) -> Side:
    trainer = Trainer(config, data)
    trainer.compile()
    return Side("alone", 1, lambda steps: trainer.run(0, steps))


def stack(data, configs: list[RunConfig], xla: bool, name: str) -> Side:
    trainer = StackTrainer(configs, data, xla=xla)
    trainer.compile()
    size = len(configs)
    zeros, alive = np.zeros(size), np.ones(size, bool)
    return Side(name, size, lambda steps: trainer.run(0, steps, zeros, alive))


def timed(sides: list[Side], rounds: int, seconds: float) -> None:
    for side in sides:
        side.calibrate(seconds)
    for round_ in range(rounds):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            side.measure()


EVAL_STEPS, EVAL_EVERY = 1000, 100


def stacked_end_to_end(data, size: int, diagnostics: str) -> dict[str, float]:
    """Seconds of one `train_stack` of `size` paper MLPs: in all, to the first start
    event, and to the end of step 0's evaluation (the first eval event)."""
    fields = {**PAPER_MLP, "diagnostics": diagnostics, "steps": EVAL_STEPS}
    configs = [RunConfig(**fields, eval_every=EVAL_EVERY, seed=s) for s in range(size)]
    seen: dict[str, float] = {}
    began = time.perf_counter()

    def on_event(index: int, event) -> None:
        seen.setdefault(event.type, time.perf_counter() - began)

    train_stack(configs, on_event, data=data)
    return {"total": time.perf_counter() - began, "start": seen["start"], "eval": seen["eval"]}


def grouped_conv(models: int, rounds: int) -> tuple[float, float]:
    """Seconds per forward+backward of the CNN's conv2 (5x5, 32 -> 64 channels, 14x14,
    batch 64) for `models` models: (one grouped convolution under XLA, separate ones)."""
    batch, size, cin, cout = 64, 14, 32, 64
    x = tf.random.normal([batch, size, size, cin * models])
    kernels = tf.Variable(tf.random.normal([5, 5, cin, cout * models]) * 0.05)

    def grouped(x):
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(x, kernels, 1, "SAME")
            loss = tf.reduce_sum(tf.square(y))
        return tape.gradient(loss, [kernels])[0]

    def separate(x):
        xs = tf.split(x, models, axis=3)
        ks = tf.split(tf.convert_to_tensor(kernels), models, axis=3)
        with tf.GradientTape() as tape:
            tape.watch(ks)
            loss = tf.add_n(
                [
                    tf.reduce_sum(tf.square(tf.nn.conv2d(a, k, 1, "SAME")))
                    for a, k in zip(xs, ks, strict=True)
                ]
            )
        return tf.concat(tape.gradient(loss, ks), axis=3)

    results = []
    for fn in (tf.function(grouped, jit_compile=True), tf.function(separate)):
        fn(x).numpy()
        results.append(min(_seconds(lambda fn=fn: fn(x).numpy())[0] for _ in range(rounds)))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64", help="stack sizes M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5, help="per timing, about")
    parser.add_argument("--no-xla", action="store_true", help="time the stacks without XLA")
    parser.add_argument("--both", action="store_true", help="time stacks with and without XLA")
    parser.add_argument("--compare-arms", action="store_true")
    parser.add_argument("--cnn", action="store_true")
    parser.add_argument("--evaluation", type=int, default=0, metavar="M", help="see above")
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow threads, pinned to as many cores"
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    if args.threads:
        # As a worker of the server or of `bnlab experiment` is: its thread pools sized
        # and pinned to its cores before TensorFlow runs an op; the peak measured alike.
        limit_threads(args.threads)
        pin(set(range(args.threads)))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    xlas = [False, True] if args.both else [not args.no_xla]
    data = load_mnist()
    load_before = os.getloadavg()[0]
    peak = matmul_peak(args.rounds * 2)
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s ({PEAK_SIZE}^2 float32)")
    flop = mlp_flop_per_step(PAPER_MLP["batch_size"])
    rows = []
    for size in sizes:
        configs = [RunConfig(**PAPER_MLP, seed=seed) for seed in range(size)]
        solo = alone(data, configs[0])
        sides = [solo] + [stack(data, configs, xla, f"xla={xla}") for xla in xlas]
        timed(sides, args.rounds, args.seconds)
        for side in sides[1:]:
            rate = side.model_steps_per_sec
            row = (
                size,
                side.name,
                rate,
                solo.model_steps_per_sec,
                rate / solo.model_steps_per_sec,
                solo.cpu_per_model_step / side.cpu_per_model_step,
                rate * flop / peak,
            )
            rows.append(row)
            print(
                f"M={size:3d} {side.name}: {rate:8.0f} model-steps/s, alone "
                f"{solo.model_steps_per_sec:5.0f}: x{row[4]:.2f} wall, x{row[5]:.2f} CPU time; "
                f"{rate * flop / 1e9:.1f} GFLOP/s = {row[6]:.0%} of peak"
            )
    arms = []
    if args.compare_arms:
        size = max(sizes)
        half = size // 2
        bn = [RunConfig(**PAPER_MLP, seed=s) for s in range(half)]
        plain = [c.twin() for c in bn]
        mixed = stack(data, bn + plain, not args.no_xla, "both arms, selected")
        one = stack(data, bn, not args.no_xla, "BN stack")
        other = stack(data, plain, not args.no_xla, "no-BN stack")
        timed([mixed, one, other], args.rounds, args.seconds)
        separate = 1.0 / (one.best_wall + other.best_wall) * size
        arms = [(size, mixed.model_steps_per_sec, separate)]
        print(
            f"M={size} both arms: one stack selecting {mixed.model_steps_per_sec:.0f} "
            f"model-steps/s, two stacks of {half} {separate:.0f}"
        )
    convs = []
    if args.cnn:
        for models in (1, 4):
            grouped, separate = grouped_conv(models, args.rounds)
            convs.append((models, grouped, separate))
            print(
                f"CNN conv2 x{models}: grouped (XLA) {grouped * 1e3:.1f} ms, separate "
                f"{separate * 1e3:.1f} ms: x{separate / grouped:.2f}"
            )
    evaluation = {}
    if args.evaluation:
        for level in ("basic", "off", "off", "basic"):  # alternating: load hits both
            timed_run = stacked_end_to_end(data, args.evaluation, level)
            best = evaluation.setdefault(level, timed_run)
            evaluation[level] = {k: min(v, best[k]) for k, v in timed_run.items()}
            print(
                f"stack of {args.evaluation}, {level}: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in timed_run.items())
            )
    load_after = os.getloadavg()[0]
    if args.no_record:
        return
    if evaluation:
        evaluations = EVAL_STEPS // EVAL_EVERY + 1
        cost = (evaluation["basic"]["total"] - evaluation["off"]["total"]) / evaluations
        write_section(
            "stacked-evaluation",
            "\n".join(
                [
                    f"`python -m bench.stacked --evaluation {args.evaluation}"
                    f"{f' --threads {args.threads}' if args.threads else ''}` on {machine()}; "
                    f"load average {load_before:.1f} before, {load_after:.1f} after. "
                    f"{args.evaluation} paper MLPs (BN, SGD 0.5, batch 60; seeds 0-"
                    f"{args.evaluation - 1}) as one `train_stack`, {EVAL_STEPS} steps, an "
                    f"evaluation every {EVAL_EVERY} ({evaluations} with step 0's); the best "
                    "of two calls per level, in the order basic, off, off, basic.",
                    "",
                    "| diagnostics | the stack, s | first start event, s | "
                    "end of step 0's evaluation, s |",
                    "|---|---|---|---|",
                    *(
                        f"| {level} | {t['total']:.1f} | {t['start']:.1f} | {t['eval']:.1f} |"
                        for level, t in evaluation.items()
                    ),
                    "",
                    f"`basic` costs {cost:.2f} s per evaluation of the stack, "
                    f"{cost / args.evaluation * 1e3:.0f} ms per model.",
                ]
            ),
        )
    if not rows:  # no stack sizes timed (`--sizes ""`)
        return
    lines = [
        f"`python -m bench.stacked --sizes {args.sizes} --rounds {args.rounds}"
        f"{' --both' if args.both else ''}{' --no-xla' if args.no_xla else ''}"
        f"{' --compare-arms' if args.compare_arms else ''}{' --cnn' if args.cnn else ''}"
        f"{f' --threads {args.threads}' if args.threads else ''}` "
        f"on {machine()}; load average {load_before:.1f} before, {load_after:.1f} after. "
        f"Matmul peak {peak / 1e9:.1f} GFLOP/s (best of {args.rounds * 2} compiled "
        f"{PEAK_SIZE}x{PEAK_SIZE} float32 tf.matmul); a model-step {flop / 1e6:.1f} MFLOP.",
        "",
        "| M | stack | model-steps/s | alone, steps/s | wall ratio | CPU-time ratio "
        "| share of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m} | {name} | {rate:.0f} | {solo:.0f} | **{ratio:.2f}x** | {cpu:.2f}x | {share:.0%} |"
        for m, name, rate, solo, ratio, cpu, share in rows
    ]
    for size, selected, separate in arms:
        lines += [
            "",
            f"Both arms at M={size}: one stack computing both variants and selecting "
            f"{selected:.0f} model-steps/s; a BN and a no-BN stack of {size // 2}, one after "
            f"the other, {separate:.0f}.",
        ]
    if convs:
        lines += [
            "",
            "| CNN conv2, models | grouped under XLA, ms | separate, ms | ratio |",
            "|---|---|---|---|",
        ]
        lines += [f"| {m} | {g * 1e3:.1f} | {s * 1e3:.1f} | {s / g:.2f}x |" for m, g, s in convs]
    write_section(
        f"stacked-threads-{args.threads}" if args.threads else "stacked", "\n".join(lines)
    )


if __name__ == "__main__":
    main()
