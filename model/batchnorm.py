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

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training:
            mean, variance = tf.nn.moments(x, axes=self.axes)
            keep = self.decay
            self.moving_mean.assign(keep * self.moving_mean + (1.0 - keep) * mean)
            self.moving_variance.assign(keep * self.moving_variance + (1.0 - keep) * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        return tf.nn.batch_normalization(
            x, mean, variance, offset=self.beta, scale=self.gamma, variance_epsilon=self.epsilon
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "decay": self.decay, "epsilon": self.epsilon}
