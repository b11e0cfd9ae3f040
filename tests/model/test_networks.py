import keras
import numpy as np
import pytest
import tensorflow as tf

from bnlab.model.batchnorm import BatchNorm
from bnlab.model.config import RunConfig
from bnlab.model.networks import build_network


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


def test_cnn_pools_before_relu_with_the_recipes_values_and_gradients():
    """The CNN max-pools before its ReLU (cheaper); outputs and every gradient
    must equal the recipe's order, conv -> BN -> ReLU -> pool."""
    net = build_network(RunConfig(arch="cnn", batch_norm=True, dropout=0, seed=4))
    rng = np.random.default_rng(0)
    for norm in net.norms:  # some negative gammas: pooling must not assume a sign
        norm.gamma.assign(rng.uniform(-1, 2, norm.gamma.shape).astype(np.float32))
    x = tf.constant(rng.uniform(size=(6, 28, 28, 1)).astype(np.float32))

    def recipe_order(x):
        for linear, norm in zip(net.linears, net.norms, strict=True):
            x = tf.nn.max_pool2d(tf.nn.relu(norm(linear(x), training=True)), 2, 2, "SAME")
        return net.logits(tf.nn.relu(net.hidden(net.flatten(x))))

    variables = net.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        ours = net(x, training=True)
        theirs = recipe_order(x)
        upstream = tf.constant(rng.normal(size=(6, 10)).astype(np.float32))
        ours_loss, theirs_loss = tf.reduce_sum(ours * upstream), tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    for variable, mine, want in zip(
        variables,
        tape.gradient(ours_loss, variables),
        tape.gradient(theirs_loss, variables),
        strict=True,
    ):
        np.testing.assert_allclose(mine, want, rtol=1e-4, atol=1e-6, err_msg=variable.path)


@pytest.mark.parametrize("path", ["tf", "relayout"])
def test_dense_has_keras_dense_values_and_gradients(path, monkeypatch):
    """Either input-gradient path of our Dense gives Keras's numbers."""
    from bnlab.model.networks import Dense

    monkeypatch.setenv("BNLAB_KERNELS", f"dense.dx={path}")
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(7, 30)).astype(np.float32))
    ours, theirs = Dense(12, activation="relu"), keras.layers.Dense(12, activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    for mine, their in zip(ours.weights, theirs.weights, strict=True):
        their.assign(rng.normal(size=their.shape).astype(np.float32))
        mine.assign(their)
    upstream = tf.constant(rng.normal(size=(7, 12)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = ours(x), theirs(x)
        loss_a, loss_b = tf.reduce_sum(a * upstream), tf.reduce_sum(b * upstream)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    got = tape.gradient(loss_a, [x, *ours.trainable_weights])
    want = tape.gradient(loss_b, [x, *theirs.trainable_weights])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


FORWARD_CONVS = "conv2d.dx=forward,conv2d.dkernel=forward"
EVERY_PATH = [
    "tf",
    FORWARD_CONVS,
    "conv2d.dx=tf,conv2d.dkernel=forward",
    "conv2d.dx=forward,conv2d.dkernel=tf",
]


@pytest.mark.parametrize("paths", EVERY_PATH)
@pytest.mark.parametrize(
    ("kernel_size", "strides", "use_bias"),
    [(5, 1, False), ((3, 5), 1, True), (5, 2, True)],  # the last is Keras's own path
)
def test_conv2d_has_keras_conv2d_values_and_gradients(
    kernel_size, strides, use_bias, paths, monkeypatch
):
    """Whichever backward path is chosen (model.kernels), the values and the
    gradients (input, kernel, bias) are Keras's own to float32 rounding."""
    from bnlab.model.networks import Conv2D

    monkeypatch.setenv("BNLAB_KERNELS", paths)

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, 11, 9, 3)).astype(np.float32))
    kwargs = {"strides": strides, "padding": "same", "use_bias": use_bias}
    ours, theirs = Conv2D(6, kernel_size, **kwargs), keras.layers.Conv2D(6, kernel_size, **kwargs)
    ours.build(x.shape)
    theirs.build(x.shape)
    for mine, their in zip(ours.weights, theirs.weights, strict=True):
        their.assign(rng.normal(size=their.shape).astype(np.float32))
        mine.assign(their)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = ours(x), theirs(x)
        upstream = tf.constant(rng.normal(size=a.shape).astype(np.float32))
        loss_a, loss_b = tf.reduce_sum(a * upstream), tf.reduce_sum(b * upstream)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    got = tape.gradient(loss_a, [x, *ours.trainable_weights])
    want = tape.gradient(loss_b, [x, *theirs.trainable_weights])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    # ... and ours really ran the forced path (Keras's only where it falls back).
    ops = _gradient_ops(lambda: ours(x), [x, *ours.trainable_weights])
    keras_own = strides == 2 or paths == "tf"
    assert ("Conv2DBackpropInput" in ops) == (keras_own or "conv2d.dx=tf" in paths)
    assert ("Conv2DBackpropFilter" in ops) == (keras_own or "dkernel=tf" in paths)


BACKWARD_CONV_KERNELS = {"Conv2DBackpropFilter", "Conv2DBackpropInput"}


def _gradient_ops(forward, variables) -> set[str]:
    """The op types of a compiled forward + backward of `forward()` for `variables`."""

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(forward())
        return tape.gradient(loss, variables)

    return {op.type for op in grads.get_concrete_function().graph.get_operations()}


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")), reason="on a GPU cuDNN's own backward is used"
)
@pytest.mark.parametrize("paths", ["tf", FORWARD_CONVS])
def test_the_cnn_trains_with_the_chosen_convolution_gradients_on_a_cpu(paths, monkeypatch):
    """A speed-up is real only if the compiled step really takes the path chosen."""
    monkeypatch.setenv("BNLAB_KERNELS", paths)
    network = build_network(RunConfig())
    x = tf.zeros((2, 28, 28, 1))
    ops = _gradient_ops(lambda: network(x, training=True), network.trainable_variables)
    assert "Conv2D" in ops
    assert bool(ops & BACKWARD_CONV_KERNELS) == (paths == "tf")


@pytest.mark.parametrize("path", ["tf", "relayout"])
def test_dense_input_gradient_paths_are_in_the_compiled_step(path, monkeypatch):
    from bnlab.model.networks import Dense

    monkeypatch.setenv("BNLAB_KERNELS", f"dense.dx={path}")
    layer, x = Dense(5), tf.ones((3, 4))
    layer.build(x.shape)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, x)

    graph = grads.get_concrete_function().graph
    flags = {
        (op.get_attr("transpose_a"), op.get_attr("transpose_b"))
        for op in graph.get_operations()
        if op.type == "MatMul"
    }
    # forward (F, F); dx: tf's dy @ W.T is (F, T), the relayout's W @ dy.T is too
    # but is followed by a Transpose: tell them apart by that.
    transposes = {op.type for op in graph.get_operations()} & {"Transpose"}
    assert (False, True) in flags
    assert bool(transposes) == (path == "relayout")
