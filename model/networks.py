"""The two networks of the experiment, each with or without batch norm.

Every weight gets an initializer seeded by (run seed, layer name), so a BN
network and its no-BN twin built from the same seed start from identical
weights in every layer they share; only BN's own gamma/beta differ.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import keras
import tensorflow as tf

from . import kernels
from .batchnorm import BatchNorm
from .config import RunConfig

# The classic TensorFlow MNIST tutorial's initialisation, for every layer but
# the logits. The seed recipe used it for its convolutions; its FC layers drew
# from sigma = 0.05 with zero biases and its convolutions kept their bias
# before BN. A run with the recipe's exact initialisation ended at the same
# test accuracy (bench/RESULTS.md, notes), so this one, uniform over layers, stays.
WEIGHT_STDDEV = 0.1
BIAS_INIT = 0.1
# The nonlinearity `RunConfig.activation` names; None keeps each network's own.
ACTIVATIONS = {"relu": tf.nn.relu, "sigmoid": tf.nn.sigmoid, "tanh": tf.nn.tanh}
OWN_ACTIVATION = {"cnn": "relu", "mlp": "sigmoid"}


class Tap(NamedTuple):
    """One hidden layer's values in a forward pass: its linear output before BN
    (None without BN), and the input to its nonlinearity (before pooling)."""

    pre_bn: tf.Tensor | None
    pre_activation: tf.Tensor


def _layer_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)


@tf.custom_gradient
def _matmul(x: tf.Tensor, kernel: tf.Tensor):
    """``x @ kernel``, with the input gradient in the layout this CPU is fast at.

    TensorFlow's own gradient computes ``dx = dy @ kernel.T`` (transpose_b),
    which oneDNN ran at about half the speed of a plain product for the
    3136x1024 FC kernel on an AMD EPYC. ``(kernel @ dy.T).T`` is the same
    numbers and transposes only the small operands; which of the two runs is
    timed per machine (model.kernels; bench/RESULTS.md, "Components"). The
    kernel's gradient is TensorFlow's own, ``x.T @ dy``.
    """

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        candidates = {
            "tf": lambda kernel, dy: tf.matmul(dy, kernel, transpose_b=True),
            "relayout": lambda kernel, dy: tf.transpose(tf.matmul(kernel, dy, transpose_b=True)),
        }
        path = kernels.choose("dense.dx", _shapes(kernel, dy), candidates)
        return candidates[path](kernel, dy), tf.matmul(x, dy, transpose_a=True)

    return tf.matmul(x, kernel), grad


def _shapes(*tensors: tf.Tensor) -> list[tuple[int, ...] | None]:
    return [tuple(t.shape) if t.shape.rank is not None else None for t in tensors]


def _bias_and_activation(layer: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """The rest of a Keras Dense or Conv2D after its product: bias, then activation."""
    if layer.bias is not None:
        x = tf.nn.bias_add(x, layer.bias)
    return x if layer.activation is None else layer.activation(x)


class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, same initialisers) with the faster
    backward for the (batch, features) inputs these networks give it."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if inputs.shape.rank != 2:
            return super().call(inputs, training=training)
        return _bias_and_activation(self, _matmul(inputs, tf.convert_to_tensor(self.kernel)))


@tf.custom_gradient
def _conv2d_same(x: tf.Tensor, kernel: tf.Tensor):
    """A stride-1 "same" convolution (odd kernel) whose gradients may be forward convolutions.

    On an AMD EPYC, oneDNN's backward-convolution kernels ran at half the speed
    of its forward convolution or worse at these shapes; on an AVX-512 Xeon
    they are fast (bench/RESULTS.md). Both gradients of a stride-1 convolution
    are forward convolutions themselves, the same sums in another order:
    - dx: dy convolved ("same") with the kernel flipped in space, its input
      and output channels swapped;
    - dkernel: the zero-padded input, batch and channel axes swapped,
      convolved ("valid") with dy, batch and channel axes swapped, as kernel:
      ``dk[a, b, i, o] = sum_{n,h,w} x_padded[n, h+a, w+b, i] * dy[n, h, w, o]``.
    Each gradient takes whichever of that and TensorFlow's backprop kernel is
    faster on this machine at these shapes (model.kernels).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    same, unit = "SAME", [1, 1, 1, 1]

    def dx_forward(kernel: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        return tf.nn.conv2d(dy, flipped, 1, same)

    def dkernel_forward(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        padded = tf.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
        dkernel = tf.nn.conv2d(
            tf.transpose(padded, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]), 1, "VALID"
        )
        return tf.transpose(dkernel, [1, 2, 0, 3])

    def dx_tf(kernel: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        # The input's shape is dy's with the kernel's input channels (stride 1, "same").
        sizes = tf.concat([tf.shape(dy)[:3], tf.shape(kernel)[2:3]], 0)
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=sizes, filter=kernel, out_backprop=dy, strides=unit, padding=same
        )

    def dkernel_tf(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=list(kernel.shape), out_backprop=dy, strides=unit, padding=same
        )

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # dx of the first layer (the images) is unused: compiled steps prune it.
        dx_paths = {"tf": dx_tf, "forward": dx_forward}
        dkernel_paths = {"tf": dkernel_tf, "forward": dkernel_forward}
        dx = dx_paths[kernels.choose("conv2d.dx", _shapes(kernel, dy), dx_paths)](kernel, dy)
        dkernel_path = kernels.choose("conv2d.dkernel", _shapes(x, dy), dkernel_paths)
        return dx, dkernel_paths[dkernel_path](x, dy)

    return tf.nn.conv2d(x, kernel, 1, same), grad


class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same weights, same forward) whose backward runs
    on the faster of TensorFlow's backprop kernels and forward convolutions on
    a CPU, for the stride-1 "same" convolutions with odd kernels these
    networks use. On a GPU, and for any other convolution, it is Keras's own."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        fast = (
            self.strides == (1, 1)
            and self.padding == "same"
            and self.dilation_rate == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
            and all(k % 2 == 1 for k in self.kernel_size)
            and not tf.config.list_physical_devices("GPU")  # cuDNN's own backward is fast
        )
        if not fast:
            return super().call(inputs)
        return _bias_and_activation(self, _conv2d_same(inputs, tf.convert_to_tensor(self.kernel)))


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
        self.activation = ACTIVATIONS[config.activation or OWN_ACTIVATION[config.arch]]

        # init_scale multiplies every random kernel; biases (constants) and the
        # zero logits layer hold no spread to scale.
        def kernel(name: str) -> keras.initializers.Initializer:
            return keras.initializers.TruncatedNormal(
                stddev=WEIGHT_STDDEV * config.init_scale, seed=_layer_seed(seed, name)
            )

        def norm(name: str) -> BatchNorm | None:
            if not bn:
                return None
            return BatchNorm(decay=config.bn_decay, epsilon=config.bn_epsilon, name=name)

        # With BN a bias before it is redundant (BN's beta shifts instead).
        bias = {"use_bias": not bn, "bias_initializer": keras.initializers.Constant(BIAS_INIT)}
        if config.arch == "cnn":
            for i, filters in enumerate((32, 64), start=1):
                conv = Conv2D(
                    filters,
                    5,
                    padding="same",
                    kernel_initializer=kernel(f"conv{i}"),
                    name=f"conv{i}",
                    **bias,
                )
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

    def blocks(self) -> list[tuple[keras.layers.Layer, BatchNorm | None]]:
        """The hidden layers in order, each a linear part and its BN (None without)."""
        norms: list[BatchNorm | None] = list(self.norms) or [None] * len(self.linears)
        return [*zip(self.linears, norms, strict=True), (self.hidden, self.hidden_norm)]

    def forward(
        self,
        x: tf.Tensor,
        training: bool = False,
        *,
        batch_stats: bool | None = None,
        taps: list[Tap] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(logits, probe) for a batch of (N, 28, 28, 1) images.

        `batch_stats` (default: `training`) makes BN normalise with the batch's
        statistics without `training`'s dropout and moving-average updates;
        `taps`, when given, receives a Tap per hidden layer (bnlab.model.diagnostics).
        """
        stats = {"training": training, "batch_stats": batch_stats}
        if self.arch == "mlp":
            x = self.flatten(x)
        for i, linear in enumerate(self.linears):
            x = pre_bn = linear(x)
            if self.norms:
                x = self.norms[i](x, **stats)
            if taps is not None:
                taps.append(Tap(pre_bn if self.norms else None, x))
            if self.pool is not None:
                # Pooling before the nonlinearity gives the same values and
                # gradients (relu, sigmoid and tanh are monotone, and a monotone
                # function commutes with max) on a quarter of the elements:
                # ReLU then pool is what the recipe wrote.
                x = self.pool(x)
            x = self.activation(x)
        x = pre_bn = self.hidden(self.flatten(x))
        if self.hidden_norm is not None:
            x = self.hidden_norm(x, **stats)
        if taps is not None:
            taps.append(Tap(pre_bn if self.hidden_norm is not None else None, x))
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
