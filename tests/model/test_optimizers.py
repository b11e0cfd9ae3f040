import keras
import numpy as np
import pytest
import tensorflow as tf

from bnlab.model.config import RunConfig
from bnlab.model.optimizers import Adagrad, make_optimizer


def adagrad_steps(optimizer, start, grads):
    variable = keras.Variable(start)
    optimizer.build([variable])
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), variable)])
    return variable.numpy()


def test_adagrad_is_tensorflow_1s_update_without_epsilon():
    """accum starts at the initial value; accum += g^2; var -= lr * g / sqrt(accum).
    Tiny accumulators and gradients make Keras's epsilon (1e-7) visible."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [(rng.normal(size=start.shape) * 1e-6).astype(np.float32) for _ in range(4)]
    want, accum = start.astype(np.float64), np.full(start.shape, 1e-12)
    for grad in grads:
        accum += grad.astype(np.float64) ** 2
        want -= 0.5 * grad / np.sqrt(accum)
    ours = adagrad_steps(Adagrad(0.5, initial_accumulator_value=1e-12), start, grads)
    np.testing.assert_allclose(ours, want, rtol=1e-5)
    stock = keras.optimizers.Adagrad(0.5, initial_accumulator_value=1e-12)
    assert not np.allclose(adagrad_steps(stock, start, grads), want, rtol=1e-3)


def test_adagrad_uses_the_fused_kernel():
    variable = keras.Variable(np.ones(4, np.float32))
    optimizer = Adagrad(0.1)
    optimizer.build([variable])
    update = tf.function(lambda g: optimizer.apply_gradients([(g, variable)]))
    graph = update.get_concrete_function(tf.TensorSpec([4], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    ops |= {n.op for f in graph.as_graph_def().library.function for n in f.node_def}
    assert "ResourceApplyAdagrad" in ops


def test_adagrad_refuses_an_epsilon():
    with pytest.raises(TypeError):
        Adagrad(0.1, epsilon=1e-7)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("adagrad", Adagrad),
        ("sgd", keras.optimizers.SGD),
        ("momentum", keras.optimizers.SGD),
        ("adam", keras.optimizers.Adam),
    ],
)
def test_make_optimizer_uses_the_configured_learning_rate(name, kind):
    optimizer = make_optimizer(RunConfig(optimizer=name, learning_rate=0.25))
    assert isinstance(optimizer, kind)
    assert float(optimizer.learning_rate) == pytest.approx(0.25)
