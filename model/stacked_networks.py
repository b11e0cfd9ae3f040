"""M copies of the paper's MLP as one network: every weight carries a leading model axis.

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from .config import RunConfig
from .networks import ACTIVATIONS, OWN_ACTIVATION, Network, _layer_seed

# Keras draws dropout's seed from a SeedGenerator holding [seed, calls] in int64 and
# casts it to int32 modulo this (keras.src.backend.tensorflow.random._cast_seed).
KERAS_SEED_MODULUS = 2**31 - 2
HIDDEN = ("fc1", "fc2", "fc3")
NORMS = ("bn1", "bn2", "bn3")


def activation_name(config: RunConfig) -> str:
    return config.activation or OWN_ACTIVATION[config.arch]


class Moving(NamedTuple):
    """One BN layer's new moving averages after a training forward pass, [M,F] each."""

    mean: tf.Tensor
    variance: tf.Tensor


class StackedMLP:
    """The weights of M MLPs, [M, ...] each, and their forward pass."""

    def __init__(self, configs: list[RunConfig], networks: list[Network]) -> None:
        if any(c.arch != "mlp" for c in configs):
            raise ValueError("a stacked network holds MLPs only (the CNN trains one run at a time)")
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

        # Per layer the kernel [M,I,O] and bias [M,O] (the bias a BN model lacks stays 0
        # and unused); per BN layer gamma, beta [M,F] and the moving averages.
        self.kernels, self.biases = [], []
        for layer in (*HIDDEN, "logits"):
            kernels = [of(n, layer, "kernel", None) for n in networks]
            zeros = np.zeros(kernels[0].shape[1], np.float32)
            self.kernels.append(stacked(f"{layer}/kernel", kernels))
            self.biases.append(
                stacked(f"{layer}/bias", [of(n, layer, "bias", zeros) for n in networks])
            )
        self.gammas, self.betas, self.moving_means, self.moving_variances = [], [], [], []
        for norm, layer in zip(NORMS, HIDDEN, strict=True):
            ones = np.ones(self.kernels[HIDDEN.index(layer)].shape[2], np.float32)
            zeros = np.zeros_like(ones)
            self.gammas.append(
                stacked(f"{norm}/gamma", [of(n, norm, "gamma", ones) for n in networks])
            )
            self.betas.append(
                stacked(f"{norm}/beta", [of(n, norm, "beta", zeros) for n in networks])
            )
            self.moving_means.append(
                stacked(
                    f"{norm}/moving_mean",
                    [of(n, norm, "moving_mean", zeros) for n in networks],
                    False,
                )
            )
            self.moving_variances.append(
                stacked(
                    f"{norm}/moving_variance",
                    [of(n, norm, "moving_variance", ones) for n in networks],
                    False,
                )
            )

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """What the optimizer updates: what some model of the stack uses. The parts one
        model does not use (a BN model's bias, a no-BN model's gamma and beta, in a
        stack of both) get zero gradients from the selection and stay where they are."""
        layers = [*self.kernels, self.biases[-1]]
        if not self.bn.all():  # the hidden biases: no-BN models only
            layers += self.biases[:-1]
        if self.bn.any():
            layers += [*self.gammas, *self.betas]
        return layers

    @property
    def moving_variables(self) -> list[tf.Variable]:
        return [*self.moving_means, *self.moving_variances]

    @property
    def variables(self) -> list[tf.Variable]:
        return [*self.kernels, *self.biases, *self.gammas, *self.betas, *self.moving_variables]

    def _select(self, mask: np.ndarray, when: tf.Tensor, otherwise, rank: int) -> tf.Tensor:
        """Per model `when` where `mask` else `otherwise()`; only what some model uses is built."""
        if mask.all():
            return when
        if not mask.any():
            return otherwise()
        return tf.where(tf.reshape(mask, [-1] + [1] * (rank - 1)), when, otherwise())

    def _activate(self, x: tf.Tensor) -> tf.Tensor:
        names = sorted(set(self.activations))
        out = ACTIVATIONS[names[0]](x)
        for name in names[1:]:
            mask = np.array([a == name for a in self.activations])
            out = tf.where(tf.constant(mask)[:, None, None], ACTIVATIONS[name](x), out)
        return out

    def _normalize(self, x: tf.Tensor, i: int, training: bool) -> tuple[tf.Tensor, Moving | None]:
        """BN layer `i` on [M,B,F]: batch moments per model when training (and the moving
        averages they lead to), else the moving averages (BatchNorm's two paths)."""
        gamma, beta = self.gammas[i][:, None, :], self.betas[i][:, None, :]
        epsilon = self.epsilon[:, None, :]
        if not training:
            # As BatchNorm's inference path computes it (model.batchnorm), op for op.
            mean = self.moving_means[i][:, None, :]
            variance = self.moving_variances[i][:, None, :]
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon), None
        # The centred textbook formula, as model.batchnorm's autodiff path.
        mean = tf.reduce_mean(x, 1, keepdims=True)
        centred = x - mean
        variance = tf.reduce_mean(tf.square(centred), 1, keepdims=True)
        y = centred * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
        mean, variance = tf.stop_gradient(mean[:, 0]), tf.stop_gradient(variance[:, 0])
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

    def forward(
        self,
        x: tf.Tensor,
        training: bool = False,
        keep: tf.Tensor | None = None,
        taps: list[tuple[tf.Tensor, tf.Tensor]] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, list[Moving]]:
        """(logits [M,B,10], probe [M,B], BN's new moving averages when training) of
        `x`: [M,B,784], each model its own batch, or [B,784] shared by all (the
        product broadcasts it: no M copies of the images). `keep` (training) is
        dropout's mask, `dropout_keep`'s. `taps`, when given, receives per hidden layer
        its linear output before BN and the input to its nonlinearity, [M,B,F] each
        (a no-BN model's first is its product without the bias: not its Tap's None)."""
        movings = []
        for i in range(len(HIDDEN)):
            h = product = tf.matmul(x, self.kernels[i])
            if self.bn.any():
                normalized, moving = self._normalize(h, i, training)
                movings.append(moving)
            else:
                normalized = h
            h = self._select(
                self.bn, normalized, lambda h=h, i=i: h + self.biases[i][:, None, :], 3
            )
            if taps is not None:
                taps.append((product, h))
            probe = h[:, :, 0]
            x = self._activate(h)
        if training and keep is not None:
            x = tf.where(keep, x * self.dropout_scale[:, None, None], 0.0)
        logits = tf.matmul(x, self.kernels[-1]) + self.biases[-1][:, None, :]
        return logits, probe, movings

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
        if layer in (*HIDDEN, "logits"):
            index = (*HIDDEN, "logits").index(layer)
            return {"kernel": self.kernels, "bias": self.biases}[weight][index]
        if layer in NORMS:
            index = NORMS.index(layer)
            return {
                "gamma": self.gammas,
                "beta": self.betas,
                "moving_mean": self.moving_means,
                "moving_variance": self.moving_variances,
            }[weight][index]
        return None
