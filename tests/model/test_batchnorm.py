import keras
import numpy as np
import pytest
import tensorflow as tf

from bnlab.model import kernels
from bnlab.model.batchnorm import BatchNorm

SHAPES = [(32, 6), (8, 5, 5, 4)]


@pytest.fixture(autouse=True, params=kernels.OPERATIONS["batchnorm.grad"])
def backward_path(request, monkeypatch):
    """Every test holds for each backward path the machine may choose."""
    monkeypatch.setenv(kernels.ENV_VAR, f"batchnorm.grad={request.param}")
    return request.param


def numpy_bn(x, mean, var, gamma, beta, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def batch(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3 + 2).astype(np.float32)


def randomised(layer: BatchNorm, channels: int) -> BatchNorm:
    rng = np.random.default_rng(0)
    layer.gamma.assign(rng.uniform(0.5, 2, channels).astype(np.float32))
    layer.beta.assign(rng.normal(size=channels).astype(np.float32))
    return layer


@pytest.mark.parametrize("shape", SHAPES)
def test_training_mode_normalises_with_batch_statistics(shape):
    x = batch(shape, 1)
    layer = BatchNorm(decay=0.9, epsilon=1e-3)
    layer.build(shape)
    randomised(layer, shape[-1])
    axes = tuple(range(len(shape) - 1))
    expected = numpy_bn(x, x.mean(axes), x.var(axes), layer.gamma.numpy(), layer.beta.numpy(), 1e-3)
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_moving_statistics_follow_the_decay_and_drive_inference(shape):
    decay, eps = 0.7, 1e-3
    layer = BatchNorm(decay=decay, epsilon=eps)
    layer.build(shape)
    randomised(layer, shape[-1])
    axes = tuple(range(len(shape) - 1))
    mean, var = np.zeros(shape[-1]), np.ones(shape[-1])
    for seed in range(5):
        x = batch(shape, seed)
        layer(x, training=True)
        mean = decay * mean + (1 - decay) * x.mean(axes)
        var = decay * var + (1 - decay) * x.var(axes)
    np.testing.assert_allclose(layer.moving_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, var, rtol=1e-5, atol=1e-6)
    x = batch(shape, 99)
    expected = numpy_bn(x, mean, var, layer.gamma.numpy(), layer.beta.numpy(), eps)
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_inference_leaves_moving_statistics_alone(shape):
    layer = BatchNorm(decay=0.5)
    layer(batch(shape, 0), training=True)
    before = (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
    for seed in range(3):
        layer(batch(shape, seed + 1), training=False)
    np.testing.assert_array_equal(layer.moving_mean, before[0])
    np.testing.assert_array_equal(layer.moving_variance, before[1])


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_keras_batch_normalization_after_several_updates(shape):
    decay, eps = 0.9, 1e-3
    ours = BatchNorm(decay=decay, epsilon=eps)
    ref = keras.layers.BatchNormalization(momentum=decay, epsilon=eps)
    ours.build(shape)
    ref.build(shape)
    randomised(ours, shape[-1])
    ref.gamma.assign(ours.gamma)
    ref.beta.assign(ours.beta)
    for seed in range(6):
        x = batch(shape, seed)
        np.testing.assert_allclose(ours(x, training=True), ref(x, training=True), atol=1e-5)
    np.testing.assert_allclose(ours.moving_mean, ref.moving_mean, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance, ref.moving_variance, atol=1e-5)
    x = batch(shape, 42)
    np.testing.assert_allclose(ours(x, training=False), ref(x, training=False), atol=1e-5)


def test_gradients_flow_to_gamma_beta_and_input():
    layer = BatchNorm()
    x = tf.constant(batch((16, 3), 0))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x, training=True) ** 3)
    grads = tape.gradient(y, [x, layer.gamma, layer.beta])
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert [v.name for v in layer.trainable_weights] == ["gamma", "beta"]


def test_rejects_meaningless_hyperparameters():
    with pytest.raises(ValueError, match="decay"):
        BatchNorm(decay=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNorm(epsilon=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_gradients_equal_autodiff_through_the_textbook_formula(shape, offset):
    """Both backward paths must agree with autodiff of the plain formula, also
    for features whose mean is far from zero: a backward that summed dy * x
    uncentred, or autodiff of `tf.nn.batch_normalization`'s uncentred form,
    loses precision there."""
    x = tf.constant(batch(shape, 3) + offset)
    layer = BatchNorm(epsilon=1e-3)
    layer.build(shape)
    randomised(layer, shape[-1])
    upstream = tf.constant(batch(shape, 4))
    axes = list(range(len(shape) - 1))
    gamma, beta = tf.Variable(layer.gamma.numpy()), tf.Variable(layer.beta.numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(layer(x, training=True) * upstream)
        mean = tf.reduce_mean(x, axes)
        var = tf.reduce_mean(tf.square(x - mean), axes)
        ref = tf.reduce_sum((gamma * (x - mean) / tf.sqrt(var + 1e-3) + beta) * upstream)
    got = tape.gradient(ours, [x, layer.gamma, layer.beta])
    want = tape.gradient(ref, [x, gamma, beta])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_the_backward_path_is_chosen_by_timing_per_shape(backward_path, tmp_path, monkeypatch):
    """The first training call times both paths on the layer's shape and keeps
    the fastest; the choice is recorded, as the run's kernel paths report it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("BNLAB_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_memo", {})
    monkeypatch.setattr(kernels, "on_gpu", lambda: False)  # timed as on a CPU, on any host
    timed = []

    def fake_time(candidates, shapes):
        timed.append((tuple(candidates), [tuple(s) for s in shapes]))
        # Really run each candidate once: a broken one must fail here.
        for candidate in candidates.values():
            assert np.all(np.isfinite(tf.function(candidate)(tf.constant(batch(shapes[0], 5)))))
        return (
            {"tf": 2.0, "closed": 1.0} if backward_path == "closed" else {"tf": 1.0, "closed": 2.0}
        )

    monkeypatch.setattr(kernels, "_time", fake_time)
    layer = BatchNorm()
    with kernels.recording() as chosen:
        layer(tf.constant(batch((8, 5, 5, 4), 0)), training=True)
        layer(tf.constant(batch((8, 5, 5, 4), 1)), training=True)
    assert timed == [(("tf", "closed"), [(8, 5, 5, 4)])]
    assert chosen == {"batchnorm.grad 8x5x5x4": backward_path}
