"""The optimizers a run can use, each named in the run configuration.

Adagrad is TensorFlow 1's `AdagradOptimizer`, which the seed recipe trained
with: accumulators start at 0.1, ``accum += g²`` and ``var -= lr · g / √accum``
(no epsilon), applied by TensorFlow's fused `ResourceApplyAdagrad` kernel. Keras
3's Adagrad computes ``var -= lr · g / √(accum + ε)`` with seven elementwise
ops, each a pass over the variable; on a CPU that memory traffic costs the
3.2M-weight FC layer more than the update's arithmetic, at every step
(bench/RESULTS.md, "Components").
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .config import RunConfig

ADAGRAD_INITIAL_ACCUMULATOR = 0.1  # tf.compat.v1.train.AdagradOptimizer's default
MOMENTUM = 0.9


class Adagrad(keras.optimizers.Adagrad):
    """Adagrad as TensorFlow 1 applied it: one fused kernel per variable."""

    def __init__(self, learning_rate: float, **kwargs) -> None:
        kwargs.setdefault("initial_accumulator_value", ADAGRAD_INITIAL_ACCUMULATOR)
        # No epsilon in TF1's update; passing one is an error (duplicate keyword).
        super().__init__(learning_rate, epsilon=0.0, **kwargs)

    def update_step(self, gradient: tf.Tensor, variable, learning_rate) -> None:
        # Dense gradients only: every variable of these networks gets one.
        accumulator = self._accumulators[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyAdagrad(
            var=variable.handle,
            accum=accumulator.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
            use_locking=False,
            update_slots=True,
        )


def make_optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    """The optimizer `config` names, at its learning rate."""
    lr = config.learning_rate
    match config.optimizer:
        case "adagrad":
            return Adagrad(lr)
        case "sgd":
            return keras.optimizers.SGD(lr)
        case "momentum":
            return keras.optimizers.SGD(lr, momentum=MOMENTUM)
        case "adam":
            return keras.optimizers.Adam(lr)


def proposed_update(
    optimizer: keras.optimizers.Optimizer, variable: keras.Variable, gradient: tf.Tensor
) -> tf.Tensor:
    """The change `optimizer` would make to `variable` for `gradient`, from its
    current slots, changing none.

    The update rules of `make_optimizer`'s four optimizers, written out so that
    diagnostics can ask "what would this step do" without touching the
    optimizer's state: Adagrad (TF1) ``-lr · g / √(accum + g²)``; SGD ``-lr · g``;
    momentum ``0.9 · m - lr · g``; Adam ``-a · m' / (√v' + ε)`` with a its
    bias-corrected rate. No per-weight rate is returned: Adam's, ``a / (√v + ε)``, is
    a/ε wherever v is still 0, which made a mean of rates meaningless (diagnostics
    measure the update itself).
    """
    g = tf.cast(gradient, variable.dtype)
    lr = tf.cast(optimizer.learning_rate, variable.dtype)
    index = optimizer._get_variable_index(variable)
    if isinstance(optimizer, keras.optimizers.Adagrad):
        accumulator = tf.convert_to_tensor(optimizer._accumulators[index])
        return -lr * g * tf.math.rsqrt(accumulator + g * g)
    if isinstance(optimizer, keras.optimizers.Adam):
        t = tf.cast(optimizer.iterations + 1, variable.dtype)
        beta_1, beta_2 = optimizer.beta_1, optimizer.beta_2
        alpha = lr * tf.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = tf.convert_to_tensor(optimizer._momentums[index])
        v = tf.convert_to_tensor(optimizer._velocities[index])
        m_next, v_next = m + (g - m) * (1 - beta_1), v + (g * g - v) * (1 - beta_2)
        return -alpha * m_next / (tf.sqrt(v_next) + optimizer.epsilon)
    if isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum:
        m = tf.convert_to_tensor(optimizer.momentums[index])
        return optimizer.momentum * m - lr * g
    return -lr * g
