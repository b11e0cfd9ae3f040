"""Where train()'s speed comes from: each optimisation against what it replaces.

    .venv/bin/python -m bench.components [--iters N] [--reps R]

Every piece runs at the seed CNN's shapes (batch 64), compiled, forward and
backward (or one update), in one process, alternating the two sides in every
repetition. Prints the median milliseconds of each side and their ratio, and
records them in bench/RESULTS.md. No MNIST needed: the inputs are random.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from bench.report import machine, write_section
from bnlab.model.batchnorm import BatchNorm
from bnlab.model.config import RunConfig
from bnlab.model.kernels import chosen_paths
from bnlab.model.networks import Conv2D, Dense, build_network
from bnlab.model.optimizers import ADAGRAD_INITIAL_ACCUMULATOR, Adagrad

Piece = Callable[[], object]


def _timed(piece: Piece, iters: int) -> float:
    started = time.perf_counter()
    for _ in range(iters):
        out = piece()
    tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for the last one
    return (time.perf_counter() - started) / iters * 1000


def _grads(
    forward: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, variables, wrt_input: bool = True
) -> Piece:
    """A compiled forward + backward of `forward` at `x`, for `variables` (and
    x, unless it is the network's input, which needs no gradient)."""
    sources = [x, *variables] if wrt_input else list(variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
        # y too: a linear layer's gradients do not need it, and the forward
        # pass would be pruned from the timing.
        return y, tape.gradient(y, sources, output_gradients=tf.ones_like(y))

    return step


def _textbook_bn(layer: BatchNorm) -> Callable[[tf.Tensor], tf.Tensor]:
    """BN through tf.nn.moments and tf.nn.batch_normalization, differentiated by autodiff."""

    def forward(x):
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        return tf.nn.batch_normalization(x, mean, variance, layer.beta, layer.gamma, layer.epsilon)

    return forward


def _adagrad_update(optimizer: keras.optimizers.Optimizer) -> Piece:
    variables = [keras.Variable(v) for v in build_network(RunConfig()).trainable_variables]
    grads = [tf.random.normal(v.shape, stddev=0.01) for v in variables]
    optimizer.build(variables)

    @tf.function
    def step():
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return variables[0].value

    return step


def pieces() -> list[tuple[str, Piece, Piece]]:
    """(what, the usual way, BN Lab's way) for every optimisation train() uses."""
    conv_out = tf.random.normal((64, 28, 28, 32))
    flat = tf.random.normal((64, 7 * 7 * 64))
    norm = BatchNorm(decay=0.5)
    norm.build(conv_out.shape)
    ours_fc, keras_fc = Dense(1024), keras.layers.Dense(1024)
    ours_fc.build(flat.shape)
    keras_fc.build(flat.shape)

    def pool(x):
        return tf.nn.max_pool2d(x, 2, 2, "SAME")

    def bn_relu_pool(x):
        return pool(tf.nn.relu(norm(x, training=True)))

    def bn_pool_relu(x):
        return tf.nn.relu(pool(norm(x, training=True)))

    images, pooled = tf.random.normal((64, 28, 28, 1)), tf.random.normal((64, 14, 14, 32))
    convs = {}
    for name, layer in (("keras", keras.layers.Conv2D), ("ours", Conv2D)):
        for filters, x in ((32, images), (64, pooled)):
            convs[name, filters] = layer(filters, 5, padding="same", use_bias=False)
            convs[name, filters].build(x.shape)

    def conv(name: str, filters: int, x: tf.Tensor, wrt_input: bool) -> Piece:
        layer = convs[name, filters]
        return _grads(layer, x, layer.trainable_variables, wrt_input)

    bn_vars = [norm.gamma, norm.beta]
    return [
        (
            "conv1 5x5 1→32 on 64x28x28, forward + backward: Keras Conv2D vs our Conv2D (tuned)",
            conv("keras", 32, images, wrt_input=False),
            conv("ours", 32, images, wrt_input=False),
        ),
        (
            "conv2 5x5 32→64 on 64x14x14, forward + backward: Keras Conv2D vs our Conv2D (tuned)",
            conv("keras", 64, pooled, wrt_input=True),
            conv("ours", 64, pooled, wrt_input=True),
        ),
        (
            "Adagrad update of every CNN weight: Keras 3's vs the fused TF1 kernel",
            _adagrad_update(
                keras.optimizers.Adagrad(
                    0.01, initial_accumulator_value=ADAGRAD_INITIAL_ACCUMULATOR
                )
            ),
            _adagrad_update(Adagrad(0.01)),
        ),
        (
            "FC 3136→1024, forward + backward: keras.layers.Dense vs our Dense (tuned)",
            _grads(keras_fc, flat, keras_fc.trainable_variables),
            _grads(ours_fc, flat, ours_fc.trainable_variables),
        ),
        (
            "BN on 64x28x28x32, forward + backward: autodiff of tf.nn.batch_normalization"
            " vs our BatchNorm (tuned)",
            _grads(_textbook_bn(norm), conv_out, bn_vars),
            _grads(lambda x: norm(x, training=True), conv_out, bn_vars),
        ),
        (
            "BN → ReLU → pool vs BN → pool → ReLU on 64x28x28x32, forward + backward",
            _grads(bn_relu_pool, conv_out, bn_vars),
            _grads(bn_pool_relu, conv_out, bn_vars),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="calls per timing")
    parser.add_argument("--reps", type=int, default=7, help="alternating repetitions")
    args = parser.parse_args()
    rows = []
    for what, usual, ours in pieces():
        usual(), ours()  # trace both before timing
        times: dict[str, list[float]] = {"usual": [], "ours": []}
        for rep in range(args.reps):
            order = [("usual", usual), ("ours", ours)]
            for side, piece in order if rep % 2 == 0 else order[::-1]:
                times[side].append(_timed(piece, args.iters))
        usual_ms, ours_ms = (statistics.median(times[s]) for s in ("usual", "ours"))
        rows.append(f"| {what} | {usual_ms:.2f} | {ours_ms:.2f} | {usual_ms / ours_ms:.2f}x |")
        print(rows[-1], flush=True)
    # "tuned": each gradient with a choice took the path model.kernels timed
    # fastest on this machine at these shapes ("tf" is TensorFlow's own).
    paths = [f"- `{op}`: {path}" for op, path in sorted(chosen_paths().items())]
    body = "\n".join(
        [
            "### Components: where train()'s speed comes from",
            "",
            f"`python -m bench.components --iters {args.iters} --reps {args.reps}` on {machine()}.",
            "",
            "| piece | usual way, ms | BN Lab, ms | speed-up |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            "Paths the tuned layers chose on this machine (`tf`: TensorFlow's own gradient; "
            "`forward`: as forward convolutions; `relayout`: `(W @ dy.T).T`; `closed`: "
            "BN's closed-form backward):",
            "",
            *paths,
        ]
    )
    print(body)
    write_section("components", body)


if __name__ == "__main__":
    main()
