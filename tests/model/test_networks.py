import numpy as np
import pytest
import tensorflow as tf

from model.batchnorm import BatchNorm
from model.config import RunConfig
from model.networks import build_network


def weights_by_path(network):
    # Paths start with the network's own name (cnn_bn/..., cnn_nobn/...): drop it.
    return {
        v.path.split("/", 1)[1]: v.numpy()
        for v in network.weights
        if "seed_generator" not in v.path
    }


def kernel_shapes(network):
    return [tuple(v.shape) for v in network.weights if v.name == "kernel"]


@pytest.mark.parametrize("bn", [True, False])
def test_cnn_is_the_seed_network(bn):
    net = build_network(RunConfig(arch="cnn", batch_norm=bn))
    assert kernel_shapes(net) == [(5, 5, 1, 32), (5, 5, 32, 64), (7 * 7 * 64, 1024), (1024, 10)]
    norms = [layer for layer in net._flatten_layers() if isinstance(layer, BatchNorm)]
    assert [tuple(n.gamma.shape) for n in norms] == ([(32,), (64,)] if bn else [])
    logits, probe = net.forward(tf.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 10) and probe.shape == (3,)


@pytest.mark.parametrize("bn", [True, False])
def test_mlp_is_the_papers_network(bn):
    net = build_network(RunConfig(arch="mlp", batch_norm=bn, dropout=0))
    assert kernel_shapes(net) == [(784, 100), (100, 100), (100, 100), (100, 10)]
    norms = [layer for layer in net._flatten_layers() if isinstance(layer, BatchNorm)]
    assert len(norms) == (3 if bn else 0)
    x = tf.random.uniform((4, 28, 28, 1))
    assert net(x).shape == (4, 10)


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_bn_and_no_bn_twins_start_from_identical_shared_weights(arch):
    bn = weights_by_path(build_network(RunConfig(arch=arch, batch_norm=True, seed=5)))
    plain = weights_by_path(build_network(RunConfig(arch=arch, batch_norm=False, seed=5)))
    shared = [p for p in bn if p in plain]
    # every kernel is shared (biases before BN are dropped, BN params are BN-only)
    assert sum(p.endswith("kernel") for p in shared) == 4
    for path in shared:
        np.testing.assert_array_equal(bn[path], plain[path], err_msg=path)


def test_different_seeds_give_different_weights():
    a = weights_by_path(build_network(RunConfig(seed=1)))
    b = weights_by_path(build_network(RunConfig(seed=2)))
    conv = next(p for p in a if p.endswith("conv1/kernel"))
    assert not np.array_equal(a[conv], b[conv])


def test_probe_is_the_input_to_the_last_hidden_nonlinearity():
    net = build_network(RunConfig(arch="mlp", batch_norm=False, dropout=0))
    x = tf.random.uniform((5, 28, 28, 1), seed=1)
    h = tf.reshape(x, (5, -1))
    for layer in (net.linears[0], net.linears[1]):
        h = tf.sigmoid(layer(h))
    _, probe = net.forward(x)
    np.testing.assert_allclose(probe, net.hidden(h)[:, 0], rtol=1e-5)
