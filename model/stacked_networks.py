"""M copies of one of the networks as one network: every weight carries a leading model axis.

A stack is built from the M networks `build_network` makes for the M runs alone, so
each model starts from its own run's weights (same seeds, same initialisers), and
it writes each model's weights back into that network (`load_into`) when the run is
evaluated, so that evaluations, diagnostics and test metrics are the single run's
own code on the model's own weights.

Nothing reduces across the model axis: products are batched ``[M,B,I] @ [M,I,O]``,
BN's batch moments and moving averages are per model ``[M,F]``, dropout masks are
drawn per model from the seed a run alone would use. Models may differ in the
numbers of their configuration (seed, learning rate, init scale, dropout rate, BN
decay and epsilon, training subset) and also in batch norm and the activation:
those change the graph, so the stack computes each variant present and selects
per model (`tf.where`: the selected branch's gradient passes unchanged, the other
gets zeros). The matmuls, most of the work, are shared by the variants.

The CNN (`StackedCNN`) folds the models into the channels of its convolutions: one
grouped convolution (a kernel whose input channels are one model's) computes every
model's on its own batch, where XLA compiles it on a CPU or on a GPU (cuDNN); else
it runs as one convolution per model. Its activations keep the layout [B,H,W,M,C]
between convolutions, so that BN's moments per model are over (B,H,W) and pooling
needs no copy; its fully connected layers are batched products as the MLP's.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
import tensorflow as tf

from .config import RunConfig
from .networks import ACTIVATIONS, OWN_ACTIVATION, Network, _layer_seed

# Keras draws dropout's seed from a SeedGenerator holding [seed, calls] in int64 and
# casts it to int32 modulo this (keras.src.backend.tensorflow.random._cast_seed).
KERAS_SEED_MODULUS = 2**31 - 2


def activation_name(config: RunConfig) -> str:
    return config.activation or OWN_ACTIVATION[config.arch]


class Moving(NamedTuple):
    """One BN layer's new moving averages after a training forward pass, [M,F] each."""

    mean: tf.Tensor
    variance: tf.Tensor


class _Stacked:
    """What the stacked networks share: the weights of M networks of one architecture,
    [M, ...] each, named by their single-run layers (`LINEAR`, `NORMS`), and the
    per-model parts of a forward pass (BN, activations, dropout)."""

    ARCH: ClassVar[str]
    LINEAR: ClassVar[tuple[str, ...]]  # the layers with a kernel, the logits last
    NORMS: ClassVar[tuple[str, ...]]  # the BN layers, each after the linear layer...
    NORMED: ClassVar[tuple[str, ...]]  # ...of this name

    def __init__(self, configs: list[RunConfig], networks: list[Network]) -> None:
        if any(c.arch != self.ARCH for c in configs):
            raise ValueError(f"a {type(self).__name__} holds {self.ARCH} networks only")
        self.size = len(configs)
        self.networks = networks
        self.bn = np.array([c.batch_norm for c in configs])
        self.activations = [activation_name(c) for c in configs]
        self.dropout = np.array([c.dropout for c in configs])
        # As Keras computes them: 1/(1-rate) in double, then float32; the rate float32.
        self.dropout_scale = tf.constant((1.0 / (1.0 - self.dropout)).astype(np.float32))
        self.dropout_seeds = [_layer_seed(c.seed, "dropout") % KERAS_SEED_MODULUS for c in configs]
        # decay and 1 - decay in double, each then float32, as BatchNorm's Python floats.
        decay = np.array([c.bn_decay for c in configs])
        self.keep = tf.constant(decay.astype(np.float32)[:, None])
        self.take = tf.constant((1.0 - decay).astype(np.float32)[:, None])
        self.epsilon = tf.constant(np.array([c.bn_epsilon for c in configs], np.float32)[:, None])

        def stacked(name: str, values: list[np.ndarray], trainable: bool = True) -> tf.Variable:
            return tf.Variable(np.stack(values), trainable=trainable, name=name)

        def of(network: Network, layer: str, weight: str, default: np.ndarray) -> np.ndarray:
            # By layer and weight name: Keras may uniquify the network's own name.
            found = [v for v in network.variables if v.path.split("/")[-2:] == [layer, weight]]
            return found[0].numpy() if found else default

        # Per layer the kernel [M,...,O] and bias [M,O] (the bias a BN model lacks stays
        # 0 and unused); per BN layer gamma, beta [M,F] and the moving averages.
        self.kernels, self.biases = [], []
        for layer in self.LINEAR:
            kernels = [of(n, layer, "kernel", None) for n in networks]
            zeros = np.zeros(kernels[0].shape[-1], np.float32)
            self.kernels.append(stacked(f"{layer}/kernel", kernels))
            self.biases.append(
                stacked(f"{layer}/bias", [of(n, layer, "bias", zeros) for n in networks])
            )
        self.gammas, self.betas, self.moving_means, self.moving_variances = [], [], [], []
        for norm, layer in zip(self.NORMS, self.NORMED, strict=True):
            ones = np.ones(self.kernels[self.LINEAR.index(layer)].shape[-1], np.float32)
            zeros = np.zeros_like(ones)
            for target, weight, default, trainable in (
                (self.gammas, "gamma", ones, True),
                (self.betas, "beta", zeros, True),
                (self.moving_means, "moving_mean", zeros, False),
                (self.moving_variances, "moving_variance", ones, False),
            ):
                values = [of(n, norm, weight, default) for n in networks]
                target.append(stacked(f"{norm}/{weight}", values, trainable))

    @property
    def hidden(self) -> tuple[str, ...]:
        return self.LINEAR[:-1]

    @property
    def normed_layers(self) -> list[bool]:
        """Per hidden layer, whether a BN model normalises it (its Tap has a pre_bn)."""
        return [layer in self.NORMED for layer in self.hidden]

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """What the optimizer updates: what some model of the stack uses. The parts one
        model does not use (a BN model's bias, a no-BN model's gamma and beta, in a
        stack of both) get zero gradients from the selection and stay where they are."""
        normed = [layer in self.NORMED for layer in self.LINEAR]
        layers = [*self.kernels, *(b for b, n in zip(self.biases, normed, strict=True) if not n)]
        if not self.bn.all():  # the biases before BN: no-BN models only
            layers += [b for b, n in zip(self.biases, normed, strict=True) if n]
        if self.bn.any():
            layers += [*self.gammas, *self.betas]
        return layers

    @property
    def moving_variables(self) -> list[tf.Variable]:
        return [*self.moving_means, *self.moving_variances]

    @property
    def variables(self) -> list[tf.Variable]:
        return [*self.kernels, *self.biases, *self.gammas, *self.betas, *self.moving_variables]

    def _select(self, mask: np.ndarray, when: tf.Tensor, otherwise, shape: list[int]) -> tf.Tensor:
        """Per model `when` where `mask` else `otherwise()`, the mask reshaped to `shape`
        (-1 at the model axis); only what some model uses is built."""
        if mask.all():
            return when
        if not mask.any():
            return otherwise()
        return tf.where(tf.reshape(mask, shape), when, otherwise())

    def _activate(self, x: tf.Tensor, shape: list[int]) -> tf.Tensor:
        """Each model's nonlinearity; the model axis where `shape` has its -1."""
        names = sorted(set(self.activations))
        out = ACTIVATIONS[names[0]](x)
        for name in names[1:]:
            mask = np.array([a == name for a in self.activations])
            out = tf.where(tf.reshape(mask, shape), ACTIVATIONS[name](x), out)
        return out

    def _normalize(
        self, x: tf.Tensor, i: int, training: bool, axes: list[int], per_model
    ) -> tuple[tf.Tensor, Moving | None]:
        """BN layer `i` on `x`, its moments over `axes` (one model's values of a feature),
        `per_model` shaping an [M,F] parameter to broadcast against `x`: batch moments per
        model when training (and the moving averages they lead to), else the moving
        averages (BatchNorm's two paths)."""
        gamma, beta = per_model(self.gammas[i]), per_model(self.betas[i])
        epsilon = per_model(self.epsilon)
        if not training:
            # As BatchNorm's inference path computes it (model.batchnorm), op for op.
            mean, variance = per_model(self.moving_means[i]), per_model(self.moving_variances[i])
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon), None
        # The centred textbook formula, as model.batchnorm's autodiff path.
        mean = tf.reduce_mean(x, axes, keepdims=True)
        centred = x - mean
        variance = tf.reduce_mean(tf.square(centred), axes, keepdims=True)
        y = centred * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
        shape = self.moving_means[i].shape
        mean = tf.reshape(tf.stop_gradient(mean), shape)
        variance = tf.reshape(tf.stop_gradient(variance), shape)
        moving = Moving(
            self.keep * self.moving_means[i] + self.take * mean,
            self.keep * self.moving_variances[i] + self.take * variance,
        )
        return y, moving

    def dropout_keep(self, step: tf.Tensor, batch: int) -> tf.Tensor | None:
        """Which units each model keeps at update `step` [M,B,F] (None: no model drops):
        the masks Keras's Dropout layer draws there, its seed generator counting one
        call per update. Drawn apart from the rest of the step so that the step can be
        compiled with XLA, whose stateless generators give other numbers."""
        if not self.dropout.any():
            return None
        keeps = []
        shape = [batch, self.kernels[-1].shape[1]]
        for seed, rate in zip(self.dropout_seeds, self.dropout, strict=True):
            if rate == 0:
                keeps.append(tf.ones(shape, tf.bool))
                continue
            uniform = tf.random.stateless_uniform(shape, tf.stack([tf.constant(seed), step]))
            keeps.append(uniform >= tf.constant(rate, tf.float32))
        return tf.stack(keeps)

    def _head(
        self, x: tf.Tensor, training: bool, keep: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Dropout of the last hidden layer's activations `x` [M,B,F] when training,
        then the logits [M,B,10]."""
        if training and keep is not None:
            x = tf.where(keep, x * self.dropout_scale[:, None, None], 0.0)
        return tf.matmul(x, self.kernels[-1]) + self.biases[-1][:, None, :]

    def load_into(self, m: int, network: Network | None = None) -> Network:
        """Model `m`'s weights written into a single-run network of its architecture
        (default: its own), which is returned."""
        network = self.networks[m] if network is None else network
        for variable in network.variables:
            source = self.source_of(network, variable)
            if source is not None:
                variable.assign(source[m])
        return network

    def source_of(self, network: Network, variable) -> tf.Variable | None:
        """The stacked variable holding `variable` of a single-run `network` (None: the
        dropout's seed state, which the stack derives from the step instead)."""
        layer, weight = variable.path.split("/")[-2:]
        if layer in self.LINEAR:
            index = self.LINEAR.index(layer)
            return {"kernel": self.kernels, "bias": self.biases}[weight][index]
        if layer in self.NORMS:
            index = self.NORMS.index(layer)
            return {
                "gamma": self.gammas,
                "beta": self.betas,
                "moving_mean": self.moving_means,
                "moving_variance": self.moving_variances,
            }[weight][index]
        return None


Forward = tuple[tf.Tensor, tf.Tensor, list[Moving]]
Taps = list[tuple[tf.Tensor, tf.Tensor]]


class StackedMLP(_Stacked):
    """The weights of M MLPs, [M, ...] each, and their forward pass."""

    ARCH = "mlp"
    LINEAR = ("fc1", "fc2", "fc3", "logits")
    NORMS = ("bn1", "bn2", "bn3")
    NORMED = ("fc1", "fc2", "fc3")

    def __init__(self, configs: list[RunConfig], networks: list[Network], **_) -> None:
        super().__init__(configs, networks)

    @property
    def tap_sizes(self) -> list[int]:
        """Values per image of each hidden layer, as its diagnostics sample them."""
        return [int(k.shape[2]) for k in self.kernels[:-1]]

    def forward(
        self,
        x: tf.Tensor,
        training: bool = False,
        keep: tf.Tensor | None = None,
        taps: Taps | None = None,
    ) -> Forward:
        """(logits [M,B,10], probe [M,B], BN's new moving averages when training) of
        `x`: [M,B,28,28,1], each model its own batch, or [B,28,28,1] shared by all (the
        product broadcasts it: no M copies of the images). `keep` (training) is
        dropout's mask, `dropout_keep`'s. `taps`, when given, receives per hidden layer
        its linear output before BN and the input to its nonlinearity, [M,B,F] each
        (a no-BN model's first is its product without the bias: not its Tap's None)."""
        x = tf.reshape(x, [*([self.size] if x.shape.rank == 5 else []), -1, 28 * 28])
        per_model = lambda t: t[:, None, :]  # noqa: E731
        movings = []
        for i in range(len(self.hidden)):
            h = product = tf.matmul(x, self.kernels[i])
            if self.bn.any():
                normalized, moving = self._normalize(h, i, training, [1], per_model)
                movings.append(moving)
            else:
                normalized = h
            h = self._select(
                self.bn, normalized, lambda h=h, i=i: h + self.biases[i][:, None, :], [-1, 1, 1]
            )
            if taps is not None:
                taps.append((product, h))
            probe = h[:, :, 0]
            x = self._activate(h, [-1, 1, 1])
        return self._head(x, training, keep), probe, movings


class StackedCNN(_Stacked):
    """The weights of M seed CNNs, [M, ...] each, and their forward pass (the module's
    docstring). `grouped`: the convolutions of a training step are grouped (under XLA
    on a CPU, or on a GPU); else one per model. Inference groups them only on a GPU:
    a CPU has grouped convolutions only under XLA, which the evaluation is not."""

    ARCH = "cnn"
    LINEAR = ("conv1", "conv2", "fc1", "logits")
    NORMS = ("bn1", "bn2")
    NORMED = ("conv1", "conv2")
    CONVS = 2

    def __init__(
        self, configs: list[RunConfig], networks: list[Network], *, grouped: bool = False
    ) -> None:
        super().__init__(configs, networks)
        self.grouped = grouped
        self.on_gpu = bool(tf.config.list_physical_devices("GPU"))

    @property
    def tap_sizes(self) -> list[int]:
        """Values per image of each hidden layer, as its diagnostics sample them: a
        convolution's before pooling (28x28, then 14x14), then the fully connected's."""
        sizes, side = [], 28
        for kernel in self.kernels[: self.CONVS]:
            sizes.append(side * side * int(kernel.shape[-1]))
            side = -(-side // 2)
        return [*sizes, int(self.kernels[self.CONVS].shape[-1])]

    def _conv(self, x: tf.Tensor, i: int, grouped: bool) -> tf.Tensor:
        """Convolution `i` of every model: `x` [B,H,W,M*Cin], models folded into channels,
        to [B,H,W,M*Cout] (stride 1, "same", as the single run's Conv2D)."""
        kernel = self.kernels[i]  # [M,kh,kw,Cin,Cout]
        if grouped:
            # Model m's output channels are the m-th group's: [kh,kw,Cin,M*Cout].
            kh, kw, cin = kernel.shape[1:4]
            folded = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, cin, -1])
            return tf.nn.conv2d(x, folded, 1, "SAME")
        xs = tf.split(x, self.size, axis=3)
        return tf.concat(
            [tf.nn.conv2d(xs[m], kernel[m], 1, "SAME") for m in range(self.size)], axis=3
        )

    def _flat(self, h: tf.Tensor) -> tf.Tensor:
        """[B,H,W,M,C] to [M,B,H*W*C]: each model's values per image in the single run's
        (h, w, c) order."""
        return tf.reshape(tf.transpose(h, [3, 0, 1, 2, 4]), [self.size, tf.shape(h)[0], -1])

    def forward(
        self,
        x: tf.Tensor,
        training: bool = False,
        keep: tf.Tensor | None = None,
        taps: Taps | None = None,
    ) -> Forward:
        """As `StackedMLP.forward`; `taps` are flattened per image, [M,B,values], in
        the order of the single run's diagnostics (a convolution's before pooling)."""
        size = self.size
        if x.shape.rank == 4:  # [B,28,28,C] shared by every model
            x = tf.tile(x, [1, 1, 1, size])
        else:  # [M,B,28,28,C], each model its own batch: models into channels
            x = tf.transpose(x, [1, 2, 3, 0, 4])
            x = tf.reshape(x, [-1, 28, 28, size * x.shape[-1]])
        grouped = self.grouped if training else self.on_gpu
        per_model = lambda t: t  # noqa: E731  ([M,C] broadcasts against [B,H,W,M,C])
        model_axis = [1, 1, 1, -1, 1]
        movings = []
        for i in range(self.CONVS):
            product = self._conv(x, i, grouped)
            side, channels = product.shape[1], self.kernels[i].shape[-1]
            h = product = tf.reshape(product, [-1, side, side, size, channels])
            if self.bn.any():
                normalized, moving = self._normalize(h, i, training, [0, 1, 2], per_model)
                movings.append(moving)
            else:
                normalized = h
            h = self._select(self.bn, normalized, lambda h=h, i=i: h + self.biases[i], model_axis)
            if taps is not None:
                taps.append((self._flat(product), self._flat(h)))
            # Pooled before the nonlinearity, as the single run (model.networks).
            pooled = tf.nn.max_pool2d(
                tf.reshape(h, [-1, side, side, size * channels]), 2, 2, "SAME"
            )
            side = pooled.shape[1]
            x = self._activate(tf.reshape(pooled, [-1, side, side, size, channels]), model_axis)
            if i + 1 < self.CONVS:
                x = tf.reshape(x, [-1, side, side, size * channels])
        x = self._flat(x)  # [M,B,7*7*64], as the single run's Flatten
        h = tf.matmul(x, self.kernels[self.CONVS]) + self.biases[self.CONVS][:, None, :]
        if taps is not None:
            taps.append((h, h))  # no BN on the fully connected layer: its Tap has no pre_bn
        probe = h[:, :, 0]
        x = self._activate(h, [-1, 1, 1])
        return self._head(x, training, keep), probe, movings


STACKED = {"mlp": StackedMLP, "cnn": StackedCNN}
