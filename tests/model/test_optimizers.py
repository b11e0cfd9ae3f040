import keras
import numpy as np
import pytest
import tensorflow as tf

from model.config import RunConfig
from model.optimizers import Adagrad, make_optimizer


def test_adagrad_is_tensorflow_1s_update():
    """accum starts at 0.1; accum += g^2; var -= lr * g / sqrt(accum), no epsilon."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    variable = keras.Variable(start)
    optimizer = Adagrad(0.5)
    optimizer.build([variable])
    want, accum = start.astype(np.float64), np.full(start.shape, 0.1)
    for _ in range(4):
        grad = rng.normal(size=start.shape).astype(np.float32)
        optimizer.apply_gradients([(tf.constant(grad), variable)])
        accum += grad.astype(np.float64) ** 2
        want -= 0.5 * grad / np.sqrt(accum)
    np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(optimizer.variables[-1].numpy(), accum, rtol=1e-5)


def test_adagrad_agrees_with_keras_adagrad():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5,)).astype(np.float32)
    ours, theirs = keras.Variable(start), keras.Variable(start)
    fused = Adagrad(0.1)
    stock = keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=1e-12)
    for _ in range(5):
        grad = tf.constant(rng.normal(size=start.shape).astype(np.float32))
        fused.apply_gradients([(grad, ours)])
        stock.apply_gradients([(grad, theirs)])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("adagrad", Adagrad), ("sgd", keras.optimizers.SGD), ("momentum", keras.optimizers.SGD),
     ("adam", keras.optimizers.Adam)],
)  # fmt: skip
def test_make_optimizer_uses_the_configured_learning_rate(name, kind):
    optimizer = make_optimizer(RunConfig(optimizer=name, learning_rate=0.25))
    assert isinstance(optimizer, kind)
    assert float(optimizer.learning_rate) == pytest.approx(0.25)
