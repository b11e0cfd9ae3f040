"""The run knobs `activation` and `init_scale`: what the network does with them."""

from __future__ import annotations

import json
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from bnlab.model.config import RunConfig
from bnlab.model.networks import build_network

NONLINEARITY = {"relu": tf.nn.relu, "sigmoid": tf.nn.sigmoid, "tanh": tf.nn.tanh}
# A truncated normal cut at two standard deviations keeps 0.8796 of the std.
TRUNCATED_STD = 0.87962566


def kernels(network) -> dict[str, np.ndarray]:
    return {v.path.split("/", 1)[1]: v.numpy() for v in network.weights if v.name == "kernel"}


def manual_probe(net, x: tf.Tensor, f) -> tf.Tensor:
    """The input to unit 0 of the last hidden layer, computed layer by layer with `f`."""
    if net.arch == "mlp":
        h = tf.reshape(x, (x.shape[0], -1))
        for layer in net.linears:
            h = f(layer(h))
    else:
        h = x
        for layer in net.linears:  # conv -> ReLU-or-other -> pool, the recipe's order
            h = net.pool(f(layer(h)))
        h = tf.reshape(h, (h.shape[0], -1))
    return net.hidden(h)[:, 0]


@pytest.mark.parametrize(
    ("arch", "activation", "used"),
    [
        ("cnn", None, "relu"),
        ("cnn", "sigmoid", "sigmoid"),
        ("cnn", "tanh", "tanh"),
        ("mlp", None, "sigmoid"),
        ("mlp", "relu", "relu"),
        ("mlp", "tanh", "tanh"),
    ],
)
def test_the_network_uses_the_activation(arch, activation, used):
    config = RunConfig(arch=arch, activation=activation, batch_norm=False, dropout=0, seed=3)
    net = build_network(config)
    x = tf.random.uniform((4, 28, 28, 1), seed=7)
    _, probe = net.forward(x)
    expected = manual_probe(net, x, NONLINEARITY[used])
    np.testing.assert_allclose(probe, expected, rtol=1e-4, atol=1e-5)
    # ...and not one of the others: the check above can tell them apart
    for other in set(NONLINEARITY) - {used}:
        assert not np.allclose(probe, manual_probe(net, x, NONLINEARITY[other]), atol=1e-3)


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
@pytest.mark.parametrize("scale", [0.01, 10.0, 100.0])
def test_init_scale_multiplies_the_std_of_every_initial_weight(arch, scale):
    base = kernels(build_network(RunConfig(arch=arch, seed=1)))
    scaled = kernels(build_network(RunConfig(arch=arch, seed=1, init_scale=scale)))
    for path, weights in base.items():
        if path.endswith("logits/kernel"):  # zeros by design: every run starts at ln 10
            assert not scaled[path].any()
            continue
        # the same draws, each `scale` times as far from zero
        np.testing.assert_allclose(scaled[path], scale * weights, rtol=1e-5, err_msg=path)
        measured = scaled[path].std()
        assert measured == pytest.approx(scale * 0.1 * TRUNCATED_STD, rel=0.05), path


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_default_configs_start_from_todays_weights(arch):
    """Before the knobs every kernel was TruncatedNormal(0.1) seeded by (seed, layer name):
    a stored run re-run today must start from the very same numbers."""
    config = RunConfig(arch=arch, seed=11)
    for path, weights in kernels(build_network(config)).items():
        name = path.split("/")[-2]
        if name == "logits":
            continue
        layer_seed = (11 * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)
        then = keras.initializers.TruncatedNormal(stddev=0.1, seed=layer_seed)(weights.shape)
        np.testing.assert_array_equal(weights, then, err_msg=path)


def test_stored_configs_without_the_knobs_mean_what_they_did():
    old = RunConfig(arch="mlp").model_dump()
    del old["activation"], old["init_scale"]
    config = RunConfig.from_stored(json.dumps(old))
    assert config.activation is None and config.init_scale == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("init_scale", 0.0), ("init_scale", 5000.0), ("init_scale", -1.0), ("activation", "gelu")],
)
def test_bad_knob_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        RunConfig(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_the_range_reaches_far_too_small_and_far_too_large():
    assert RunConfig(init_scale=0.01).init_scale == 0.01
    assert RunConfig(init_scale=100.0).init_scale == 100.0
