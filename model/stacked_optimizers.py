"""The optimizers of `make_optimizer`, applied to weights with a leading model axis.

Each model has its own learning rate and its own slots, and a model whose update is
not wanted (it diverged) keeps its weights and slots: the new values are selected
with `tf.where`, never multiplied by a 0/1 mask (NaN x 0 is NaN). The update rules
are the ones a run alone applies, written out per model, operation for operation as
Keras 3 (SGD, momentum, Adam) and TensorFlow's ResourceApplyAdagrad (TF1 Adagrad,
model.optimizers) compute them, so a stacked model follows its run alone to float
rounding.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .config import RunConfig
from .optimizers import ADAGRAD_INITIAL_ACCUMULATOR, MOMENTUM

# Keras 3's Adam defaults, which make_optimizer keeps.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
SLOTS = {"adagrad": ("accumulator",), "sgd": (), "momentum": ("momentum",), "adam": ("m", "v")}


def _per_model(values: tf.Tensor, rank: int) -> tf.Tensor:
    """[M] values shaped to broadcast against a [M, ...] tensor of `rank`."""
    return tf.reshape(values, [-1] + [1] * (rank - 1))


class StackedOptimizer:
    """One optimizer kind over M models, each at its own learning rate."""

    def __init__(self, configs: list[RunConfig], variables: list[tf.Variable]) -> None:
        kinds = {c.optimizer for c in configs}
        if len(kinds) != 1:
            raise ValueError(f"a stack trains with one optimizer, not {sorted(kinds)}")
        self.kind = kinds.pop()
        # float32, as Keras keeps its learning_rate variable.
        self.learning_rate = tf.constant(np.array([c.learning_rate for c in configs], np.float32))
        initial = ADAGRAD_INITIAL_ACCUMULATOR if self.kind == "adagrad" else 0.0
        self.slots: list[tuple[tf.Variable, ...]] = [
            tuple(
                tf.Variable(tf.fill(v.shape, initial), trainable=False, name=f"{name}")
                for name in SLOTS[self.kind]
            )
            for v in variables
        ]
        self.variables = variables

    @property
    def slot_variables(self) -> list[tf.Variable]:
        return [slot for slots in self.slots for slot in slots]

    def apply(self, gradients: list[tf.Tensor], update: tf.Tensor, step: tf.Tensor) -> None:
        """Update number `step + 1` of every model where `update` [M] is true."""
        for variable, slots, g in zip(self.variables, self.slots, gradients, strict=True):
            rank = variable.shape.rank
            lr = _per_model(self.learning_rate, rank)
            keep = _per_model(update, rank)
            v = tf.convert_to_tensor(variable)
            current = [tf.convert_to_tensor(s) for s in slots]
            new_value, new_slots = self._rule(v, g, lr, current, step)
            variable.assign(tf.where(keep, new_value, v))
            for slot, old, new in zip(slots, current, new_slots, strict=True):
                slot.assign(tf.where(keep, new, old))

    def _rule(self, v, g, lr, slots, step):
        match self.kind:
            case "adagrad":
                accumulator = slots[0] + g * g
                return v - g * lr * tf.math.rsqrt(accumulator), [accumulator]
            case "sgd":
                return v - g * lr, []
            case "momentum":
                m = slots[0] * MOMENTUM - g * lr
                return v + m, [m]
            case "adam":
                t = tf.cast(step + 1, tf.float32)
                beta_1_power = tf.pow(tf.constant(ADAM_BETA_1, tf.float32), t)
                beta_2_power = tf.pow(tf.constant(ADAM_BETA_2, tf.float32), t)
                alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
                m = slots[0] + (g - slots[0]) * (1 - ADAM_BETA_1)
                second = slots[1] + (tf.square(g) - slots[1]) * (1 - ADAM_BETA_2)
                return v - (m * alpha) / (tf.sqrt(second) + ADAM_EPSILON), [m, second]
        raise AssertionError(self.kind)

    def load_into(
        self, m: int, optimizer: keras.optimizers.Optimizer, sources: dict[int, int], step: int
    ) -> None:
        """Model `m`'s slots written into its single-run `optimizer` (what diagnostics
        read to propose an update); `sources` maps id(single-run variable) to the index
        of its stacked variable in `self.variables`."""
        optimizer.iterations.assign(step)
        for variable in optimizer._trainable_variables:
            index = sources.get(id(variable))
            if index is None:
                continue
            for target, slot in zip(
                keras_slots(optimizer, variable), self.slots[index], strict=True
            ):
                target.assign(slot[m])


def keras_slots(optimizer: keras.optimizers.Optimizer, variable) -> list[keras.Variable]:
    """The slots a `make_optimizer` optimizer keeps for `variable`, in SLOTS's order."""
    index = optimizer._get_variable_index(variable)
    if isinstance(optimizer, keras.optimizers.Adagrad):
        return [optimizer._accumulators[index]]
    if isinstance(optimizer, keras.optimizers.Adam):
        return [optimizer._momentums[index], optimizer._velocities[index]]
    if isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum:
        return [optimizer.momentums[index]]
    return []
