"""Batch Normalization (Ioffe & Szegedy, 2015) written from TensorFlow primitives."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from . import kernels

Normalize = Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


class BatchNorm(keras.layers.Layer):
    """Normalise each feature (the last axis) over the batch, then scale and shift.

    Training: statistics come from the batch (over N, and H and W for conv
    inputs) and the moving averages move towards them:
    ``moving = decay * moving + (1 - decay) * batch``.
    Inference: the moving averages are used, so a prediction does not depend on
    what else is in the batch.
    """

    def __init__(self, decay: float = 0.99, epsilon: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.decay = decay
        self.epsilon = epsilon

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.axes = list(range(len(input_shape) - 1))
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(channels,), initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(channels,), initializer="ones", trainable=False
        )

    def call(
        self, x: tf.Tensor, training: bool = False, batch_stats: bool | None = None
    ) -> tf.Tensor:
        """`batch_stats` (default: `training`) normalises with the batch's statistics;
        only `training` moves the moving averages, so diagnostics can look at BN's
        training-mode output without changing what inference uses."""
        gamma, beta = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        if not (training if batch_stats is None else batch_stats):
            return tf.nn.batch_normalization(
                x, self.moving_mean, self.moving_variance, beta, gamma, self.epsilon
            )
        if not training:
            # Batch statistics without training them (diagnostics): nothing is
            # timed, and where the diagnostics differentiate it (gradient norms,
            # Santurkar's measures) autodiff gives training's gradient to
            # float32 rounding.
            return _autodiff_normalize(x, gamma, beta, self.axes, self.epsilon)[0]
        y, mean, variance = self._normalize_batch(x, gamma, beta)
        keep = self.decay
        self.moving_mean.assign(keep * self.moving_mean + (1.0 - keep) * mean)
        self.moving_variance.assign(keep * self.moving_variance + (1.0 - keep) * variance)
        return y

    def _normalize_batch(self, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor):
        """Batch-statistics normalisation; its backward is TensorFlow's autodiff of
        the primitives or the closed form below, whichever model.kernels timed
        faster on this machine for this shape (`batchnorm.grad`)."""
        paths = {"tf": _autodiff_normalize, "closed": _closed_form_normalize}
        path = kernels.choose("batchnorm.grad", [tuple(x.shape)], _timed(paths))
        return paths[path](x, gamma, beta, self.axes, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "decay": self.decay, "epsilon": self.epsilon}


def _autodiff_normalize(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, axes, epsilon):
    """The textbook formula from primitives, centred first; TensorFlow
    differentiates each op, about a dozen passes over the activations.

    Centred rather than `tf.nn.batch_normalization`'s ``x * a + (beta - mean * a)``:
    differentiated, that form subtracts two large sums when a feature's mean
    is large against its spread, and loses float32 precision the closed form
    keeps (tests/model/test_batchnorm.py, offset 100). The two paths' outputs
    differ in float32 rounding, as their gradients do."""
    mean = tf.reduce_mean(x, axes)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), axes)
    y = centred * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
    return y, tf.stop_gradient(mean), tf.stop_gradient(variance)


def _closed_form_normalize(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, axes, epsilon):
    """The same forward with the closed-form gradient.

    With xc = x - mean, s = 1/sqrt(variance + epsilon) and M values per
    feature, the textbook backward is
        dbeta = sum(dy),  dgamma = s * sum(dy * xc)
        dx = gamma * s * (dy - dbeta/M - xc * s * dgamma/M)
    i.e. dx = a * dy - (xc * k + c) with per-feature a = gamma * s,
    k = a * s * dgamma/M, c = a * dbeta/M: two reductions and six elementwise
    passes. Summing dy * x uncentred would save one more, but loses float32
    precision when a feature's mean is large against its spread.
    """

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        # The forward BN Lab has always trained with (its results on record are
        # this path's); the backward recomputes what it needs.
        mean, variance = tf.nn.moments(x, axes=axes)
        y = tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)

        def grad(dy, _dmean, _dvariance):
            inv_std = tf.math.rsqrt(variance + epsilon)
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            centred = x - mean
            dbeta = tf.reduce_sum(dy, axes)
            dgamma = inv_std * tf.reduce_sum(dy * centred, axes)
            scale = gamma * inv_std
            k = scale * inv_std * dgamma / count
            dx = scale * dy - (centred * k + scale * dbeta / count)
            return dx, dgamma, dbeta

        return (y, tf.stop_gradient(mean), tf.stop_gradient(variance)), grad

    return normalize(x, gamma, beta)


def _timed(paths: dict[str, Normalize]) -> dict[str, kernels.Candidate]:
    """Each path as model.kernels times it (compiled): forward and backward of a
    training step on an input of the layer's shape (gamma 1, beta 0: the
    arithmetic does not depend on their values)."""

    def step(normalize: Normalize) -> kernels.Candidate:
        def candidate(x: tf.Tensor) -> tf.Tensor:
            channels = x.shape[-1]
            gamma, beta = tf.ones([channels]), tf.zeros([channels])
            y, _, _ = normalize(x, gamma, beta, list(range(x.shape.rank - 1)), 1e-3)
            # Graph-mode gradients: a tape here would record into whatever tape
            # the layer's caller holds open (model.kernels times inside a trace).
            dx, dgamma, dbeta = tf.gradients(y, [x, gamma, beta], grad_ys=x)
            return dx + tf.reduce_sum(dgamma) + tf.reduce_sum(dbeta)

        return candidate

    return {name: step(fn) for name, fn in paths.items()}
