"""Diagnostics (issue #17): each measure against an independent computation, and
the promise that measuring never changes training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnlab.model.config import RunConfig
from bnlab.model.diagnostics import (
    BINS,
    SAMPLED_UNITS,
    STEP_MULTIPLES,
    Diagnostician,
    edge_limit,
    histogram_edges,
    landscape_summary,
    summary,
)
from bnlab.model.events import Cancelled, LayerDiagnostics
from bnlab.model.networks import Network, Tap, build_network
from bnlab.model.optimizers import make_optimizer, proposed_update
from bnlab.model.training import EVAL_CHUNK, Trainer, train


def tiny(**overrides) -> RunConfig:
    return RunConfig(
        **{
            "arch": "mlp",
            "steps": 30,
            "eval_every": 10,
            "train_subset": 2000,
            "batch_size": 32,
            "diagnostics": "full",
            **overrides,
        }
    )


# -- the pure functions against NumPy ------------------------------------------------


def test_percentiles_are_numpys_linear_ones_wherever_the_edges_are():
    """Values spread over the bins, ties, all in one end bin (the edges far above
    them), most outside (edges far narrower than the values), a single value."""
    rng = np.random.default_rng(3)
    spread = rng.normal(size=20_001).astype(np.float32)
    ties = rng.integers(-3, 4, size=5000).astype(np.float32)
    narrow = np.linspace(-0.1, 0.1, BINS + 1)
    for values in (spread, ties, np.array([3.0], np.float32)):
        for edges in (histogram_edges(values), np.linspace(5, 6, BINS + 1), narrow):
            ours, _ = summary(values, edges)
            np.testing.assert_allclose(ours, np.percentile(values, [15, 50, 85]), rtol=1e-6)
    # A 2-D sample (images x units) is pooled, as the evaluation pools it.
    pooled = summary(spread[:20_000].reshape(1000, 20), narrow)[0]
    np.testing.assert_allclose(pooled, np.percentile(spread[:20_000], [15, 50, 85]), rtol=1e-6)
    assert np.isnan(summary(np.array([1.0, np.nan, 2.0], np.float32), narrow)[0]).all()


def test_histogram_is_numpys_with_outside_values_in_the_end_bins():
    rng = np.random.default_rng(1)
    edges = np.linspace(-2, 2, 9)
    # Values on the edges themselves (NumPy: [e_i, e_i+1), the last bin closed) and outside.
    values = np.concatenate([rng.normal(0, 2, 5000), edges, [-100.0, 100.0]]).astype(np.float32)
    _, ours = summary(values, edges)
    clipped = np.clip(values.astype(np.float64), edges[0], edges[-1])
    np.testing.assert_array_equal(ours, np.histogram(clipped, edges)[0])
    assert ours.sum() == len(values)
    # NaN (a diverging run) is counted, in the last bin; infinities in the end bins.
    _, counts = summary(np.array([np.nan, np.inf, -np.inf, 0.1], np.float32), edges)
    assert counts.tolist() == [1, 0, 0, 0, 1, 0, 0, 2]


@pytest.mark.parametrize(
    ("q99", "limit"),
    # No floor: values of a small init_scale get edges of their own size.
    [(0.004, 0.01), (0.1, 0.2), (2.4, 5.0), (3.0, 10.0), (40.0, 100.0), (60.0, 200.0)],
)
def test_edges_span_a_round_number_at_least_twice_the_bulk(q99, limit):
    values = np.linspace(-q99, q99, 100_001)  # the 99th percentile of |v| is 0.99 q99
    assert edge_limit(values / 0.99) == pytest.approx(limit)


def test_edges_of_values_that_are_all_zero_are_still_edges():
    assert edge_limit(np.zeros(100)) == 1.0


def test_edges_centre_on_the_median_of_a_narrow_offset_distribution():
    # Sigmoid MLP at init_scale 0.01: values near the biases' 0.1, a spread of 0.01.
    values = 0.1 + np.linspace(-0.01, 0.01, 10_001) / 0.99
    edges = histogram_edges(values)
    assert len(edges) == BINS + 1
    assert edges[0] == pytest.approx(0.1 - 0.02) and edges[-1] == pytest.approx(0.1 + 0.02)


def test_landscape_summary_with_a_nan_probe_is_none_wherever_it_stands():
    # Python's max/min over [0.9, 0.8, 2.0, nan] give a range of 1.2 that hides the NaN.
    for losses in ([0.8, 2.0, math.nan, 0.7], [math.nan, 0.8, 2.0, 0.7]):
        assert landscape_summary(0.9, losses, [1, 2, 3, 4], [1, 2, 4, 8]) == (None, None, None)
    assert landscape_summary(0.9, [0.8, 2.0, 0.7, 1.0], [1, math.inf, 3, 4], [1, 2, 4, 8]) == (
        None,
        None,
        None,
    )
    loss_range, predictiveness, beta = landscape_summary(
        0.9, [0.8, 2.0, 0.7, 1.0], [1, 2, 3, 4], [1, 2, 4, 8]
    )
    assert (loss_range, predictiveness, beta) == (pytest.approx(1.3), 4, 1.0)


@pytest.mark.parametrize("name", ["adagrad", "sgd", "momentum", "adam"])
def test_proposed_update_is_the_step_the_optimizer_then_takes(name):
    config = RunConfig(optimizer=name, learning_rate=0.05)
    variable = tf.Variable(np.linspace(-1, 1, 12, dtype=np.float32))
    optimizer = make_optimizer(config)
    optimizer.build([variable])
    rng = np.random.default_rng(2)
    for _ in range(3):  # slots that are not at their initial values
        optimizer.apply_gradients([(tf.constant(rng.normal(size=12), tf.float32), variable)])
    gradient = tf.constant(rng.normal(size=12), tf.float32)
    before = variable.numpy()
    slots = [v.numpy() for v in optimizer.variables]
    delta = proposed_update(optimizer, variable, gradient)
    for slot, value in zip(optimizer.variables, slots, strict=True):  # nothing moved
        np.testing.assert_array_equal(slot.numpy(), value)
    optimizer.apply_gradients([(gradient, variable)])
    np.testing.assert_allclose(delta.numpy(), variable.numpy() - before, rtol=1e-5, atol=1e-7)


# -- the measures of a run against hand computations on a copy of its network --------


@pytest.fixture(scope="module")
def trained(mnist_small_eval):
    """An MLP with BN a few updates into training, its diagnostics and their result."""
    config = tiny(max_shift=0, dropout=0.0)
    tf.keras.utils.set_random_seed(config.seed)
    trainer = Trainer(config, mnist_small_eval)
    diagnostician = Diagnostician(trainer, mnist_small_eval.validation)
    trainer.run(0, 20)
    state = [v.numpy() for v in (*trainer.network.variables, *trainer.optimizer.variables)]
    logits, _ = diagnostician.validation_pass(mnist_small_eval.validation.images, EVAL_CHUNK)
    diagnostics = diagnostician.measure(20)
    after = [v.numpy() for v in (*trainer.network.variables, *trainer.optimizer.variables)]
    return trainer, diagnostician, diagnostics, logits, state, after


def copy_of(trainer: Trainer) -> tuple[Network, keras.optimizers.Optimizer]:
    """A second network and optimizer holding exactly the trainer's state."""
    network, optimizer = build_network(trainer.config), make_optimizer(trainer.config)
    optimizer.build(network.trainable_variables)
    for target, source in zip(network.variables, trainer.network.variables, strict=True):
        target.assign(source)
    for target, source in zip(optimizer.variables, trainer.optimizer.variables, strict=True):
        target.assign(source)
    return network, optimizer


def accumulator(optimizer: keras.optimizers.Optimizer, variable) -> np.ndarray:
    return optimizer._accumulators[optimizer._get_variable_index(variable)].numpy()


def batch_loss_and_grads(network, x, y, variables):
    """The loss of a batch with BN on its own statistics and no dropout, and its gradients."""
    with tf.GradientTape() as tape:
        logits, _ = network.forward(x, training=False, batch_stats=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


def the_batch(trainer: Trainer, step: int):
    indices = trainer.order.indices(step)  # max_shift=0: the images as they are
    return tf.gather(trainer.images, indices), tf.gather(trainer.labels, indices)


# Ops without a deterministic GPU kernel: under op determinism (every GPU run,
# bnlab.model.device) TensorFlow raises on a GPU when one runs. On a CPU they run.
NO_DETERMINISTIC_GPU_KERNEL = {"Bincount", "DenseBincount", "SparseBincount", "RaggedBincount"}


def op_types(function) -> set[str]:
    """Every op type in a traced tf.function, the functions it calls included."""
    graph = function.get_concrete_function().graph.as_graph_def()
    nodes = [*graph.node, *(node for f in graph.library.function for node in f.node_def)]
    return {node.op for node in nodes}


def test_diagnostics_use_no_op_that_raises_under_gpu_determinism(trained):
    _, diagnostician, _, _, _, _ = trained
    ops = op_types(diagnostician._measures) | op_types(diagnostician._inspect)
    assert "Placeholder" in ops  # the walk found the graph
    assert not ops & NO_DETERMINISTIC_GPU_KERNEL


DETERMINISTIC_RUN = """
import json, sys
import tensorflow as tf
from bnlab.model.config import RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.training import train
tf.config.experimental.enable_op_determinism()
config = RunConfig.model_validate_json(sys.argv[1])
events = []
train(config, events.append, data=load_mnist(eval_subset=500))
print(json.dumps([e.diagnostics.model_dump_json() for e in events if e.type == "eval"]))
"""


def test_diagnostics_run_under_op_determinism(data_dir):
    """In a process of its own: op determinism cannot be turned off once on. (Its
    numbers are not compared with this process's: op determinism changes some CPU
    kernels' order of addition, which is why a CPU run does not turn it on.)"""
    config = tiny(arch="cnn", steps=4, eval_every=2)
    done = subprocess.run(
        [sys.executable, "-c", DETERMINISTIC_RUN, config.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BNLAB_DATA_DIR": str(data_dir)},
    )
    assert done.returncode == 0, done.stderr
    evaluations = [json.loads(d) for d in json.loads(done.stdout.splitlines()[-1])]
    assert len(evaluations) == 3  # steps 0, 2 and 4
    for diagnostics in evaluations:
        for layer in diagnostics["layers"]:
            for distribution in (layer["pre_bn"], layer["pre_activation"]):
                if distribution is not None:  # None: a layer without BN
                    # every sampled value of the 500 validation images counted once
                    assert sum(distribution["counts"]) == 500 * SAMPLED_UNITS


def test_measuring_leaves_weights_slots_and_moving_statistics_untouched(trained):
    _, _, _, _, state, after = trained
    for a, b in zip(state, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_distributions_are_numpys_on_the_sampled_units(trained, mnist_small_eval):
    trainer, diagnostician, diagnostics, _, _, _ = trained
    taps: list[Tap] = []
    trainer.network.forward(mnist_small_eval.validation.images, training=False, taps=taps)
    for layer, tap, units, layer_edges in zip(
        diagnostics.layers, taps, diagnostician.units, diagnostician.edges, strict=True
    ):
        for recorded, values, edges in zip(
            (layer.pre_bn, layer.pre_activation),
            (tap.pre_bn, tap.pre_activation),
            layer_edges,
            strict=True,
        ):
            assert recorded.edges == edges.tolist() and len(edges) == BINS + 1
            sample = values.numpy()[:, units.numpy()].ravel()
            expected = np.percentile(sample, [15, 50, 85])
            assert [recorded.p15, recorded.p50, recorded.p85] == pytest.approx(expected, rel=1e-5)
            counts = np.histogram(np.clip(sample, edges[0], edges[-1]), edges)[0]
            assert recorded.counts == counts.tolist()


def test_norms_and_effective_step_by_hand(trained):
    trainer, _, diagnostics, _, _, _ = trained
    x, y = the_batch(trainer, 20)
    kernels = [linear.kernel for linear, _ in trainer.network.blocks()]
    _, grads = batch_loss_and_grads(trainer.network, x, y, kernels)
    for layer, kernel, grad in zip(diagnostics.layers, kernels, grads, strict=True):
        w = kernel.numpy()
        assert layer.grad_norm == pytest.approx(np.linalg.norm(grad), rel=1e-5)
        assert layer.weight_norm == pytest.approx(np.linalg.norm(w), rel=1e-6)
        accumulated = accumulator(trainer.optimizer, kernel)  # TF1 Adagrad's update
        update = trainer.config.learning_rate * grad / np.sqrt(accumulated + grad**2)
        relative = np.linalg.norm(update) / np.linalg.norm(w)
        assert layer.effective_step == pytest.approx(relative, rel=1e-5)


def test_effective_step_is_the_relative_change_adam_then_makes(mnist_small_eval):
    """The output layer starts at zero, so the hidden kernels get no gradient at step 0
    and Adam's second moments v are still all 0 at step 1: a per-weight rate
    a/(sqrt(v)+eps) is a/eps there, and its mean was thousands of times the step Adam
    actually takes."""
    config = tiny(max_shift=0, dropout=0.0, optimizer="adam", learning_rate=1e-3)
    tf.keras.utils.set_random_seed(config.seed)
    trainer = Trainer(config, mnist_small_eval)
    diagnostician = Diagnostician(trainer, mnist_small_eval.validation)
    trainer.run(0, 1)
    kernels = [linear.kernel for linear, _ in trainer.network.blocks()]
    velocity = trainer.optimizer._velocities[trainer.optimizer._get_variable_index(kernels[1])]
    assert not velocity.numpy().any()  # the regime the old measure failed in
    diagnostician.validation_pass(mnist_small_eval.validation.images, EVAL_CHUNK)
    diagnostics = diagnostician.measure(1)
    before = [k.numpy() for k in kernels]
    trainer.run(1, 1)  # the update the measure was about
    for layer, kernel, w in zip(diagnostics.layers, kernels, before, strict=True):
        change = np.linalg.norm(kernel.numpy() - w) / np.linalg.norm(w)
        assert change > 1e-6
        assert layer.effective_step == pytest.approx(change, rel=1e-3)


def test_bn_gap_and_batch_statistics_accuracy_by_hand(trained, mnist_small_eval):
    trainer, diagnostician, diagnostics, _, _, _ = trained
    images, labels = diagnostician.val_batches.numpy(), diagnostician.val_labels.numpy()
    norms = [norm for _, norm in trainer.network.blocks()]
    correct, moving_correct, squared = 0, 0, []
    # training=True normalises with the batch's statistics (dropout is 0 here); the
    # moving averages it moves are the copy's, which batch statistics do not read.
    copy, _ = copy_of(trainer)
    for batch, batch_labels in zip(images, labels, strict=True):
        taps: list[Tap] = []
        logits, _ = copy.forward(batch, training=True, taps=taps)
        correct += int((logits.numpy().argmax(1) == batch_labels).sum())
        moving, _ = trainer.network.forward(batch, training=False)
        moving_correct += int((moving.numpy().argmax(1) == batch_labels).sum())
        gaps = []
        for tap, norm in zip(taps, norms, strict=True):
            x = tap.pre_bn.numpy().astype(np.float64)
            batch_std = np.sqrt(x.var(0) + norm.epsilon)
            moving_std = np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
            shift = (x.mean(0) - norm.moving_mean.numpy()) / moving_std
            gaps.append(np.mean((1 - batch_std / moving_std) ** 2 + shift**2))
        squared.append(gaps)
    assert diagnostics.val_acc_batch_stats == pytest.approx(correct / labels.size)
    # The moving-statistics accuracy to compare it with: the same images, not val_acc's.
    assert diagnostics.val_acc_moving_stats == pytest.approx(moving_correct / labels.size)
    expected = np.sqrt(np.mean(squared, axis=0))
    assert [layer.bn_gap for layer in diagnostics.layers] == pytest.approx(expected, rel=1e-4)


def test_ics_by_hand_with_two_copies_of_the_weights(trained):
    trainer, _, diagnostics, _, _, _ = trained
    x, y = the_batch(trainer, 20)
    variables = trainer.network.trainable_variables
    _, grads = batch_loss_and_grads(trainer.network, x, y, variables)
    assert (diagnostics.layers[0].ics_distance, diagnostics.layers[0].ics_cosine) == (0.0, 1.0)
    for i in range(1, len(diagnostics.layers)):
        # The copy's earlier layers take the optimizer's real step for this batch's gradient.
        copy, optimizer = copy_of(trainer)
        earlier = {
            id(v)
            for block in copy.blocks()[:i]
            for layer in block
            if layer
            for v in layer.trainable_variables
        }
        copy_variables = copy.trainable_variables
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, copy_variables, strict=True) if id(v) in earlier]
        )
        kernel = copy.blocks()[i][0].kernel
        _, (g_after,) = batch_loss_and_grads(copy, x, y, [kernel])
        g = grads[[id(v) for v in copy_variables].index(id(kernel))]
        distance = np.linalg.norm(g - g_after)
        assert diagnostics.layers[i].ics_distance == pytest.approx(distance, rel=1e-4)
        cosine = np.sum(g * g_after) / (np.linalg.norm(g) * np.linalg.norm(g_after))
        assert diagnostics.layers[i].ics_cosine == pytest.approx(cosine, rel=1e-5)
        assert distance > 0  # the earlier layers' update did move G


def test_landscape_by_explicit_steps(trained):
    trainer, _, diagnostics, _, _, _ = trained
    x, y = the_batch(trainer, 20)
    variables = trainer.network.trainable_variables
    loss, grads = batch_loss_and_grads(trainer.network, x, y, variables)
    lr = trainer.config.learning_rate
    losses, changes, betas = [], [], []
    for m in STEP_MULTIPLES:
        copy, _ = copy_of(trainer)
        for v, g in zip(copy.trainable_variables, grads, strict=True):
            v.assign(v.numpy() - m * lr * g)
        loss_m, grads_m = batch_loss_and_grads(copy, x, y, copy.trainable_variables)
        change = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(grads, grads_m, strict=True)))
        distance = m * lr * np.sqrt(sum(np.sum(g**2) for g in grads))
        losses.append(loss_m)
        changes.append(change)
        betas.append(change / distance)
    landscape = diagnostics.landscape
    assert landscape.step_multiples == list(STEP_MULTIPLES)
    assert landscape.losses == pytest.approx(losses, rel=1e-5)
    assert landscape.grad_changes == pytest.approx(changes, rel=1e-4)
    assert landscape.loss_range == pytest.approx(np.ptp([*losses, loss]), rel=1e-4)
    assert landscape.grad_predictiveness == pytest.approx(max(changes), rel=1e-4)
    assert landscape.beta_smoothness == pytest.approx(max(betas), rel=1e-4)


# -- through train() ---------------------------------------------------------------


def final_state(config: RunConfig, data, directory) -> tuple[list, dict[str, np.ndarray]]:
    events: list = []
    train(config, events.append, data=data, checkpoint_dir=directory)
    reader = tf.train.load_checkpoint(str(directory))
    # Every variable (not the object graph's bookkeeping), the wall time aside.
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("network", "optim"))]
    return events, {n: reader.get_tensor(n) for n in names}


def test_full_diagnostics_leave_training_exactly_as_off(mnist_small_eval, tmp_path):
    """The seed CNN, same seed, with dropout and shifts: the same weights, optimizer
    slots, BN moving statistics and dropout RNG state at the end (the checkpoint holds
    them all), and the same curve and test metrics."""
    config = tiny(arch="cnn", steps=12, eval_every=4)
    off_events, off_state = final_state(
        config.model_copy(update={"diagnostics": "off"}), mnist_small_eval, tmp_path / "off"
    )
    full_events, full_state = final_state(config, mnist_small_eval, tmp_path / "full")
    assert off_state.keys() == full_state.keys() and len(off_state) > 10
    for name, value in off_state.items():
        np.testing.assert_array_equal(full_state[name], value, err_msg=name)
    off_evals = [e for e in off_events if e.type == "eval"]
    full_evals = [e for e in full_events if e.type == "eval"]
    strip = {"elapsed", "examples_per_sec", "diagnostics", "type"}
    assert [e.model_dump(exclude=strip) for e in full_evals] == [
        e.model_dump(exclude=strip) for e in off_evals
    ]
    assert off_events[-1] == full_events[-1]  # the test metrics
    assert all(e.diagnostics is None for e in off_evals)
    for e in full_evals:
        assert [layer.name for layer in e.diagnostics.layers] == ["conv1", "conv2", "fc1"]
        assert e.diagnostics.landscape is not None


def test_full_measures_every_kth_evaluation_and_without_bn(mnist_small_eval):
    events: list = []
    config = tiny(batch_norm=False, full_diagnostics_every=2)
    train(config, events.append, data=mnist_small_eval)
    diagnostics = [e.diagnostics for e in events if e.type == "eval"]
    assert [d.landscape is not None for d in diagnostics] == [True, False, True, False]
    assert [d.layers[1].ics_distance is not None for d in diagnostics] == [True, False, True, False]
    for d in diagnostics:
        assert d.val_acc_batch_stats is None and d.val_acc_moving_stats is None
        assert all(layer.pre_bn is None and layer.bn_gap is None for layer in d.layers)
        assert all(sum(layer.pre_activation.counts) == 500 * 32 for layer in d.layers)


def test_a_resumed_run_keeps_its_histogram_edges(mnist_small_eval, tmp_path):
    """The edges come from the initial weights, not from wherever a run resumes."""
    # A large step that grows the weights (BN makes them scale-invariant) by the checkpoint.
    config = tiny(diagnostics="basic", optimizer="sgd", learning_rate=5.0)
    first: list = []

    def stop() -> bool:  # right after the step-10 evaluation (and its checkpoint)
        return any(e.type == "eval" and e.step == 10 for e in first)

    with pytest.raises(Cancelled):
        train(config, first.append, stop, data=mnist_small_eval, checkpoint_dir=tmp_path)
    second: list = []
    train(config, second.append, data=mnist_small_eval, checkpoint_dir=tmp_path)
    before = [e for e in first if e.type == "eval"]
    after = [e for e in second if e.type == "eval"]
    assert after[0].step == before[-1].step == 10  # the checkpoint's evaluation, repeated

    def edges(event) -> list:
        return [(x.pre_bn.edges, x.pre_activation.edges) for x in event.diagnostics.layers]

    assert all(edges(e) == edges(before[0]) for e in after)
    # Same weights, same numbers: the repeated evaluation's histograms are the first's.
    for a, b in zip(before[-1].diagnostics.layers, after[0].diagnostics.layers, strict=True):
        assert a.pre_activation.counts == b.pre_activation.counts


def test_points_stored_with_one_edges_per_layer_still_load():
    """Before each distribution had its own edges a layer kept one list for both."""
    old = {"p15": -1.0, "p50": 0.0, "p85": 1.0, "counts": [3, 4]}
    layer = LayerDiagnostics.model_validate(
        {
            "name": "fc1",
            "edges": [-5.0, 0.0, 5.0],
            "pre_bn": old,
            "pre_activation": old,
            "grad_norm": 0.4,
            "weight_norm": 12.0,
            "effective_step": 1e-4,
            "bn_gap": 0.1,
        }
    )
    assert layer.pre_bn.edges == layer.pre_activation.edges == [-5.0, 0.0, 5.0]
    assert "edges" not in layer.model_dump()


def test_small_values_spread_over_their_own_bins(mnist_small_eval):
    """init_scale 0.01 without BN: each layer's values are about 100 times smaller than
    usual, around the biases' 0.1; the old ±5 edges put them all in one or two bins."""
    config = tiny(batch_norm=False, init_scale=0.01, diagnostics="basic")
    trainer = Trainer(config, mnist_small_eval)
    diagnostician = Diagnostician(trainer, mnist_small_eval.validation)
    diagnostician.validation_pass(mnist_small_eval.validation.images, EVAL_CHUNK)
    for layer in diagnostician.measure(0).layers:
        values = layer.pre_activation
        assert values.edges[-1] - values.edges[0] < 1.0
        # Spread over several bins: the ±5 edges left 55-60 % of them in one bin and the
        # rest in one to three more (32 units, each nearly constant over the images).
        assert sum(c > 0 for c in values.counts) >= 5
        assert max(values.counts) < sum(values.counts) / 2
