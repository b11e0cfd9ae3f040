"""The two networks of the experiment, each with or without batch norm.

Every weight gets an initializer seeded by (run seed, layer name), so a BN
network and its no-BN twin built from the same seed start from identical
weights in every layer they share; only BN's own gamma/beta differ.
"""

from __future__ import annotations

import zlib

import keras
import tensorflow as tf

from model.batchnorm import BatchNorm
from model.config import RunConfig

# The classic TensorFlow MNIST tutorial's initialisation, for every layer but
# the logits. The seed recipe used it for its convolutions; its FC layers drew
# from sigma = 0.05 with zero biases and its convolutions kept their bias
# before BN. A run with the recipe's exact initialisation ended at the same
# test accuracy (bench/RESULTS.md, notes), so this one, uniform over layers, stays.
WEIGHT_STDDEV = 0.1
BIAS_INIT = 0.1


def _layer_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)


@tf.custom_gradient
def _matmul(x: tf.Tensor, kernel: tf.Tensor):
    """``x @ kernel``, with the input gradient in the layout oneDNN is fast at.

    TensorFlow's own gradient computes ``dx = dy @ kernel.T`` (transpose_b),
    which oneDNN runs at about half the speed of a plain product for the
    3136x1024 FC kernel on a CPU. ``(kernel @ dy.T).T`` is the same numbers and
    transposes only the small operands (bench/RESULTS.md, "Components"). The
    kernel's gradient is TensorFlow's own, ``x.T @ dy``.
    """

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        dx = tf.transpose(tf.matmul(kernel, dy, transpose_b=True))
        return dx, tf.matmul(x, dy, transpose_a=True)

    return tf.matmul(x, kernel), grad


class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, same initialisers) with the faster
    backward for the (batch, features) inputs these networks give it."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if inputs.shape.rank != 2:
            return super().call(inputs, training=training)
        x = _matmul(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        return x if self.activation is None else self.activation(x)


class Network(keras.Model):
    """A stack of blocks ``linear → [BN] → nonlinearity``, then dropout and logits.

    ``call`` returns logits; ``forward`` also returns the *probe*: the input to
    unit 0 of the last hidden layer before its nonlinearity, which the
    dashboard follows over training (BN paper, Figure 1b/c).
    """

    def __init__(self, config: RunConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.arch = config.arch
        # Kept as two lists (not a list of pairs) so Keras tracks every layer.
        self.linears: list[keras.layers.Layer] = []
        self.norms: list[BatchNorm] = []
        seed = config.seed
        bn = config.batch_norm

        def kernel(name: str) -> keras.initializers.Initializer:
            return keras.initializers.TruncatedNormal(
                stddev=WEIGHT_STDDEV, seed=_layer_seed(seed, name)
            )

        def norm(name: str) -> BatchNorm | None:
            if not bn:
                return None
            return BatchNorm(decay=config.bn_decay, epsilon=config.bn_epsilon, name=name)

        # With BN a bias before it is redundant (BN's beta shifts instead).
        bias = {"use_bias": not bn, "bias_initializer": keras.initializers.Constant(BIAS_INIT)}
        if config.arch == "cnn":
            self.activation = tf.nn.relu
            for i, filters in enumerate((32, 64), start=1):
                conv = keras.layers.Conv2D(
                    filters, 5, padding="same", kernel_initializer=kernel(f"conv{i}"),
                    name=f"conv{i}", **bias,
                )  # fmt: skip
                self._add_block(conv, norm(f"bn{i}"))
            self.pool = keras.layers.MaxPooling2D(2, padding="same")
            self.flatten = keras.layers.Flatten()
            # The fully connected layer keeps its bias: the recipe puts no BN on it.
            self.hidden = Dense(
                1024,
                kernel_initializer=kernel("fc1"),
                bias_initializer=keras.initializers.Constant(BIAS_INIT),
                name="fc1",
            )
            self.hidden_norm = None
        else:
            self.activation = tf.nn.sigmoid
            self.pool = None
            self.flatten = keras.layers.Flatten()
            for i in (1, 2):
                dense = Dense(100, kernel_initializer=kernel(f"fc{i}"), name=f"fc{i}", **bias)
                self._add_block(dense, norm(f"bn{i}"))
            self.hidden = Dense(100, kernel_initializer=kernel("fc3"), name="fc3", **bias)
            self.hidden_norm = norm("bn3")
        self.dropout = keras.layers.Dropout(config.dropout, seed=_layer_seed(seed, "dropout"))
        # A zero logits layer starts every run at the uniform prediction
        # (loss ln 10 = 2.3026): a clean, comparable step 0 for BN and no-BN.
        self.logits = Dense(10, kernel_initializer="zeros", bias_initializer="zeros", name="logits")

    def _add_block(self, linear: keras.layers.Layer, norm: BatchNorm | None) -> None:
        self.linears.append(linear)
        if norm is not None:
            self.norms.append(norm)

    def forward(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(logits, probe) for a batch of (N, 28, 28, 1) images."""
        if self.arch == "mlp":
            x = self.flatten(x)
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if self.norms:
                x = self.norms[i](x, training=training)
            if self.pool is not None:
                # Pooling before the ReLU gives the same values and gradients
                # (a monotone function commutes with max) on a quarter of the
                # elements: ReLU then pool is what the recipe wrote.
                x = self.pool(x)
            x = self.activation(x)
        x = self.hidden(self.flatten(x))
        if self.hidden_norm is not None:
            x = self.hidden_norm(x, training=training)
        probe = x[:, 0]
        x = self.dropout(self.activation(x), training=training)
        return self.logits(x), probe

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.forward(x, training=training)[0]


def build_network(config: RunConfig) -> Network:
    """A built network (weights created) for `config`."""
    network = Network(config, name=f"{config.arch}_{'bn' if config.batch_norm else 'nobn'}")
    network(tf.zeros((1, 28, 28, 1)))
    return network
