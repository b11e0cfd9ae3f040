"""Batch Normalization (Ioffe & Szegedy, 2015) written from TensorFlow primitives."""

from __future__ import annotations

import keras
import tensorflow as tf


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
        y, mean, variance = self._normalize_batch(x, gamma, beta)
        if not training:
            return y
        keep = self.decay
        self.moving_mean.assign(keep * self.moving_mean + (1.0 - keep) * mean)
        self.moving_variance.assign(keep * self.moving_variance + (1.0 - keep) * variance)
        return y

    def _normalize_batch(self, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor):
        """Batch-statistics normalisation with the closed-form gradient.

        Autodiff through `tf.nn.moments` and `tf.nn.batch_normalization`
        differentiates every op separately, about a dozen passes over the
        activations; on a CPU each pass costs as much as its arithmetic. With
        xc = x - mean, s = 1/sqrt(variance + epsilon) and M values per feature,
        the textbook backward is
            dbeta = sum(dy),  dgamma = s * sum(dy * xc)
            dx = gamma * s * (dy - dbeta/M - xc * s * dgamma/M)
        i.e. dx = a * dy - (xc * k + c) with per-feature a = gamma * s,
        k = a * s * dgamma/M, c = a * dbeta/M: two reductions and six
        elementwise passes. Summing dy * x uncentred would save one more, but
        loses float32 precision when a feature's mean is large against its
        spread.
        """
        axes, epsilon = self.axes, self.epsilon

        @tf.custom_gradient
        def normalize(x, gamma, beta):
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

    def get_config(self) -> dict:
        return {**super().get_config(), "decay": self.decay, "epsilon": self.epsilon}
