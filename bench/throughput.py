"""Training throughput: `train()` against Keras `model.fit` and PyTorch, same run, same data.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.throughput [--steps N] [--reps R]

The peers (bench/peers.py) are the identical network written in plain Keras
(Sequential with Conv2D, keras.layers.BatchNormalization, ReLU, MaxPooling2D,
Dense, Dropout) with Keras's own Adagrad, trained with `model.fit`, and in
PyTorch, eager, with PyTorch's Adagrad: the same learning rate and initial
accumulator, the same batch size, the same 55,000 images. PyTorch is a
benchmark-only extra: `pip install -e '.[bench]'`; without it (or with
--no-torch) that side is left out. All sides are timed over the same number
of updates after a warm-up (compilation excluded), alternating in every
repetition so machine noise hits all of them. All train on the images as they
are; train() with the default 1-pixel shifts is timed as one more side. Prints
steps/s of each and the ratios, and records them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics

from bench.peers import keras_steps_per_sec, ours_steps_per_sec, torch_steps_per_sec
from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.kernels import chosen_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed updates per measurement")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-bn", action="store_true")
    parser.add_argument("--no-torch", action="store_true", help="leave the PyTorch peer out")
    args = parser.parse_args()
    torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    if not args.no_torch and not torch:
        print("PyTorch is not installed (pip install -e '.[bench]'): its side is left out")
    data = load_mnist()
    # The peers train on the images as they are, so the ratios compare train()
    # on unshifted images too (the same work); train() with the default
    # 1-pixel shifts is measured as one more side, to show what they cost.
    config = RunConfig(
        steps=args.steps, eval_every=args.steps, batch_norm=not args.no_bn, max_shift=0
    )
    shifted = config.model_copy(update={"max_shift": RunConfig().max_shift})
    sides = [
        ("ours", lambda: ours_steps_per_sec(config, data)),
        ("ours, shifted", lambda: ours_steps_per_sec(shifted, data)),
        ("keras", lambda: keras_steps_per_sec(config, data)),
        *([("torch", lambda: torch_steps_per_sec(config, data))] if torch else []),
    ]
    measured: dict[str, list[float]] = {name: [] for name, _ in sides}
    for rep in range(args.reps):
        for name, measure in sides if rep % 2 == 0 else sides[::-1]:
            measured[name].append(measure())
            print(f"rep {rep + 1}: {name} {measured[name][-1]:.2f} steps/s", flush=True)
    median = {name: statistics.median(values) for name, values in measured.items()}
    bn = "BN" if config.batch_norm else "no-BN"

    def row(title: str, name: str) -> str:
        values = ", ".join(f"{x:.2f}" for x in measured[name])
        return f"| {title} | {median[name]:.2f} | {values} |"

    def ratio(a: str, b: str) -> str:
        return f"{median[a] / median[b]:.3f}x"

    def paired(peer: str) -> str:
        # Each repetition's own ratio: the sides of one repetition ran minutes
        # apart at most, so these show how much of the median ratio is noise.
        pairs = zip(measured["ours"], measured[peer], strict=True)
        return ", ".join(f"{a / b:.2f}" for a, b in pairs)

    summary = [
        f"**train() / Keras `fit`: {ratio('ours', 'keras')}** (target ≥ 1.15x; "
        f"per repetition {paired('keras')})"
    ]
    if torch:
        summary.append(
            f"**train() / PyTorch eager: {ratio('ours', 'torch')}** (target ≥ 1.0x; "
            f"per repetition {paired('torch')})"
        )
    paths = ", ".join(f"{op} {path}" for op, path in sorted(chosen_paths().items()))
    body = "\n".join(
        [
            f"### Throughput: train() vs Keras model.fit and PyTorch ({bn} CNN, batch "
            f"{config.batch_size})",
            "",
            f"`python -m bench.throughput --steps {args.steps} --reps {args.reps}` on {machine()}.",
            "",
            "| | median steps/s | all repetitions |",
            "| --- | --- | --- |",
            row("BN Lab `train()`", "ours"),
            row("Keras `model.fit`", "keras"),
            *([row("PyTorch 2.13, eager", "torch")] if torch else []),
            row(
                f"BN Lab `train()`, {shifted.max_shift}-pixel shifts (the default)", "ours, shifted"
            ),
            "",
            "; ".join(summary) + ", all on the images as they are. With the default shifts "
            f"train() runs {ratio('ours, shifted', 'keras')} Keras "
            f"({ratio('ours, shifted', 'ours')} its unshifted speed).",
            "",
            f"Kernel paths train() chose on this machine: {paths or 'none (no run yet)'}.",
        ]
    )
    print(body)
    write_section(f"throughput-{bn.lower()}", body)


if __name__ == "__main__":
    main()
