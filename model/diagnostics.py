"""What an evaluation records inside the network (issue #17), measured in compiled functions.

Two explanations of why Batch Normalization helps meet here. Ioffe & Szegedy (2015):
BN keeps each layer's input distribution steady (their Figure 1). Santurkar, Tsipras,
Ilyas & Madry (2018): it does not reduce that "internal covariate shift" but makes the
loss landscape smoother and the gradients more predictive. Per hidden layer, at every
evaluation (`basic`):

- **Distributions** of the layer's linear output before BN and of the input to its
  nonlinearity, over the validation pass that the evaluation makes anyway: the 15th,
  50th and 85th percentiles (NumPy's linear interpolation) and a histogram over bin
  edges of its own (each distribution's: a layer's values before BN may be a hundred
  times smaller than after), around its median at initialisation (histogram_edges),
  fixed for the whole run. They pool SAMPLED_UNITS units
  (for a convolution: positions x channels) per image, drawn once per run from the seed:
  a layer's distribution without sorting millions of values at each evaluation. The
  pass samples them in the compiled network; `summary` summarises them in NumPy.
- **Gradient norm, weight norm and effective step** of the layer's kernel W on the
  training batch of the next update (its shifts included, without dropout, BN on the
  batch's statistics). The effective step is the relative step ``||ΔW|| / ||W||``, ΔW
  the update the optimizer would make now for this batch (bnlab.model.optimizers.
  proposed_update, its slots included: Adagrad's accumulator, momentum, Adam's moments).
  For a weight that BN makes scale-invariant this is the angle the update turns W by,
  the step that matters: the gradient shrinks as 1/||W||, so with SGD it is
  ``lr ||g at unit norm|| / ||W||²`` and a weight that grows slows its own learning
  (van Laarhoven 2017). It is the same measure for every optimizer and stays finite
  where a per-weight rate does not (Adam's ``a / (√v + ε)`` is a/ε wherever v is 0:
  every weight before the first update, the weights of pixels that are always blank).
- **BN's train/inference gap** per BN layer, on the first BATCH_STATS_BATCHES
  validation batches of the training batch size: per batch,
  ``sqrt(mean over channels of (1 - s_B/s_m)² + ((mean_B - mean_m)/s_m)²)``, s the std with
  BN's epsilon; the root mean square of the normalised output's difference between the
  batch statistics (B, training) and the moving ones (m, inference), in units of the
  normalised output; the run's value is the root mean square over the batches. The same
  batches give the validation accuracy with batch statistics and, to compare it with, the
  one with the moving statistics on exactly those images (not val_acc: the whole set).

`full` adds, on the same training batch, at every `full_diagnostics_every`-th evaluation:

- **ICS** (Santurkar et al., Definition 2.1): G, the gradient of a layer's kernel, and
  G', the same gradient after the *earlier* layers (their kernels, biases and BN
  scales and shifts) took the update the optimizer would make for this batch;
  ``||G - G'||₂`` and ``cos(G, G')``. The first layer has no earlier layers: 0 and 1.
- **The landscape along the gradient** g of all weights x: the loss and gradient at
  ``x - m·lr·g`` for m in STEP_MULTIPLES; loss range (the loss at x included), gradient
  predictiveness ``max ||g(x) - g(x - m·lr·g)||₂`` and the effective β-smoothness, that
  change divided by the distance moved ``m·lr·||g||``, maximised over m. A probe that is
  not finite (the step blew the loss up) makes all three None rather than dropping out of
  the max and min: the lists keep its null.

None of this changes training: the passes use no random numbers (no dropout; the
shifts are the stateless ones of the next update), BN's moving averages do not move,
the optimizer's slots are only read, and the weights moved for ICS and the landscape
are written back bit for bit before the function returns.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from .augment import random_shift
from .events import Diagnostics, DiagnosticsLevel, Distribution, Landscape, LayerDiagnostics
from .networks import Network, Tap
from .optimizers import proposed_update

if TYPE_CHECKING:
    from .data import Split
    from .training import Trainer

PERCENTILES = (15.0, 50.0, 85.0)  # the BN paper's Figure 1
SAMPLED_UNITS = 32  # values per image and layer pooled into a distribution
BINS = 40
# Each distribution's edges span its median ± L at initialisation, L the 1-2-5 number at
# or above twice the 99th percentile of |value - median|: no floor and not centred on 0,
# so that small values (a small init_scale; a narrow spread around the biases' 0.1)
# spread over the bins instead of filling one or two.
EDGE_IMAGES = 1000  # validation images that set the edges
BATCH_STATS_BATCHES = 8  # validation batches BN's gap and batch-statistics accuracy use
STEP_MULTIPLES = (0.5, 1.0, 2.0, 4.0)  # of the learning rate, for the landscape


def bn_gap(pre_bn: tf.Tensor, norm: keras.layers.Layer) -> tf.Tensor:
    """The distance between the normalisation with `pre_bn`'s batch statistics and
    the one with `norm`'s moving statistics (the module's docstring has the formula)."""
    axes = list(range(pre_bn.shape.rank - 1))
    mean, variance = tf.nn.moments(pre_bn, axes)
    batch_std = tf.sqrt(variance + norm.epsilon)
    moving_std = tf.sqrt(tf.convert_to_tensor(norm.moving_variance) + norm.epsilon)
    moving_mean = tf.convert_to_tensor(norm.moving_mean)
    scale = tf.square(1.0 - batch_std / moving_std)
    shift = tf.square((mean - moving_mean) / moving_std)
    return tf.sqrt(tf.reduce_mean(scale + shift))


def edge_limit(values: np.ndarray) -> float:
    """L, the half-width of histogram edges around 0: the 1-2-5 number at or above twice
    the 99th percentile of |values| (1 when that is 0 or not finite: nothing to scale by)."""
    target = 2.0 * float(np.percentile(np.abs(values), 99))
    if not (math.isfinite(target) and target > 0):
        return 1.0
    decade = 10.0 ** math.floor(math.log10(target))
    return next(m * decade for m in (1, 2, 5, 10) if m * decade >= target)


def histogram_edges(values: np.ndarray) -> np.ndarray:
    """BINS + 1 edges for a distribution whose initial values are `values`: its median,
    rounded to a multiple of L/4, ± L = edge_limit of the values' distances from the
    median. Rounded so that runs of other seeds mostly get the same edges (the experiment
    view averages their histograms only then)."""
    median = float(np.median(values))
    if not math.isfinite(median):
        median = 0.0
    limit = edge_limit(values - median)
    centre = round(median / (limit / 4)) * (limit / 4)
    return np.linspace(centre - limit, centre + limit, BINS + 1)


def summary(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(percentiles, histogram counts) of `values` (all of them, flattened), from one sort.

    The PERCENTILES are `numpy.percentile`'s default (linear) ones in float64, all NaN
    when any value is NaN (a diverging run). The counts are over the bins of the float64
    `edges`: [e_i, e_i+1), the last bin closed as NumPy's; values outside go into the
    end bins, NaN into the last.

    In NumPy on the host, not in the compiled measures: NumPy sorts float32 with SIMD
    (about 2 ms per 160,000 values, a distribution, on this CPU), where TensorFlow took
    13-17 ms for the same summary (a sort of the bins holding the percentiles and a
    one-hot histogram; bench/RESULTS.md, "Stacked training").
    A stack's evaluation summarises every distribution of every model, so this was
    most of its time.
    """
    ordered = np.sort(values, axis=None)
    # Compared with the float64 edges in float64, as a value's bin always was.
    wide = ordered.astype(np.float64)
    # How many values lie below each inner edge (NaN sorts last, above every edge).
    below = np.searchsorted(wide, edges[1:-1], side="left")
    counts = np.diff(below, prepend=0, append=wide.size)
    position = np.asarray(PERCENTILES, np.float64) / 100.0 * np.float64(wide.size - 1)
    floor = np.floor(position)
    low, high = wide[floor.astype(np.intp)], wide[np.ceil(position).astype(np.intp)]
    result = low + (high - low) * (position - floor)
    if np.isnan(wide[-1]):
        result[:] = math.nan
    return result, counts


def sampled_units(seed: int, sizes: list[int]) -> list[np.ndarray]:
    """Which units (flat indices into a layer's values per image, `sizes` of them) a
    run's distributions pool, per hidden layer: drawn once per run from its seed."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(size, min(SAMPLED_UNITS, size), replace=False)) for size in sizes]


def _norm(tensors: list[tf.Tensor]) -> tf.Tensor:
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


def _distribution(stats: tuple[np.ndarray, np.ndarray], edges: np.ndarray) -> Distribution:
    (p15, p50, p85), counts = stats
    return Distribution(
        p15=p15, p50=p50, p85=p85, edges=edges.tolist(), counts=[int(c) for c in counts]
    )


def landscape_summary(
    loss: float, losses: list[float], changes: list[float], distances: list[float]
) -> tuple[float | None, float | None, float | None]:
    """(loss range, gradient predictiveness, β-smoothness) of the probes, the loss at x
    included in the range; all None when any probe is not finite. Python's max and min
    with a NaN depend on where it stands ([0.9, 0.8, 2.0, nan] ranges over 1.2), which
    would hide the very blow-up the probes are there to show."""
    if not all(math.isfinite(v) for v in (loss, *losses, *changes)):
        return None, None, None
    probes = [loss, *losses]
    beta = max(c / d if d > 0 else math.inf for c, d in zip(changes, distances, strict=True))
    return max(probes) - min(probes), max(changes), beta


class Diagnostician:
    """The compiled measures of one run; `measure` assembles an evaluation's Diagnostics.

    Build it before a checkpoint is restored: the histogram edges come from the
    initial weights, so a resumed run keeps the edges it started with.
    """

    def __init__(
        self,
        trainer: Trainer,
        validation: Split,
        *,
        shared: Diagnostician | None = None,
        initial: list[tuple[np.ndarray, ...]] | None = None,
    ) -> None:
        """`shared` (the stacked path, model.stacked): a Diagnostician of a run of the
        same architecture whose compiled functions this run uses, so that they are
        traced once for all such runs. What differs between the runs (the sampled
        units, the edges, the seed, the learning rate) goes in as arguments; the shared
        one's network and optimizer must hold this run's weights and slots when it
        measures. `initial`: this run's sampled values on the first EDGE_IMAGES
        validation images at initialisation, per layer (else measured here)."""
        config = trainer.config
        self.level = DiagnosticsLevel(config.diagnostics)
        self.full_every = config.full_diagnostics_every
        self.eval_steps = config.eval_steps()
        self.trainer = trainer
        self.network: Network = shared.network if shared else trainer.network
        self.blocks = self.network.blocks()
        self.names = [linear.name for linear, _ in self.blocks]
        self.has_bn = config.batch_norm
        self.sizes = shared.sizes if shared else self._sizes()
        self.units = tuple(tf.constant(u) for u in sampled_units(config.seed, self.sizes))
        self._seed = tf.constant(config.seed, tf.int32)
        self._learning_rate = tf.constant(config.learning_rate, tf.float32)
        self._samples: tuple[tuple[np.ndarray, ...], ...] = ()  # the last validation pass's
        if shared is not None:
            self._inspect, self._gradients = shared._inspect, shared._gradients
            self._measures = shared._measures
            self.val_batches, self.val_labels = shared.val_batches, shared.val_labels
        else:
            self._compile(validation)
        if initial is None:
            initial = self._inspect(validation.images[:EDGE_IMAGES], self.units)[2]
            initial = [tuple(v.numpy() for v in layer) for layer in initial]
        # Per layer, one set of edges per distribution (before BN, after it).
        self.edges = [tuple(histogram_edges(v) for v in layer) for layer in initial]

    def _compile(self, validation: Split) -> None:
        config = self.trainer.config
        # No AutoGraph: every branch and loop in these functions is over Python values
        # fixed at tracing (layers, multiples), so there is nothing for it to convert.
        compiled = functools.partial(tf.function, autograph=False)
        units = tuple(tf.TensorSpec([u.shape[0]], u.dtype) for u in self.units)
        self._inspect = compiled(
            self._inspect_step,
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32), units],
        )
        # BN's gap and batch-statistics accuracy: validation batches of the training size.
        size = min(config.batch_size, len(validation))
        count = max(1, min(BATCH_STATS_BATCHES, len(validation) // size))
        shape = (count, size)
        self.val_batches = tf.constant(validation.images[: count * size].reshape(*shape, 28, 28, 1))
        self.val_labels = tf.constant(validation.labels[: count * size].reshape(shape))
        self._gradients = compiled(self._loss_and_gradients)
        # One call per evaluation, traced once (at the first): `full` is a tensor, not a
        # retrace per value.
        signature = [
            tf.TensorSpec([config.batch_size], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
        if self.level is DiagnosticsLevel.FULL:
            signature.append(tf.TensorSpec([], tf.bool))
        self._measures = compiled(self._all_measures, input_signature=signature)

    def _sizes(self) -> list[int]:
        """How many values per image each hidden layer has (a forward pass on one zero image)."""
        taps: list[Tap] = []
        self.network.forward(tf.zeros((1, 28, 28, 1)), taps=taps)
        return [int(np.prod(tap.pre_activation.shape[1:])) for tap in taps]

    def measure(self, step: int) -> Diagnostics:
        """The diagnostics of the evaluation at `step`, after its `validation_pass`."""
        index = self.eval_steps.index(step) if step in self.eval_steps else 0
        full = self.level is DiagnosticsLevel.FULL and index % self.full_every == 0
        arguments = [
            tf.constant(self.trainer.order.indices(step)),
            step,
            self._seed,
            self._learning_rate,
        ]
        if self.level is DiagnosticsLevel.FULL:
            arguments.append(full)
        batch_stats, basic, santurkar = tf.nest.map_structure(
            lambda t: t.numpy(), self._measures(*arguments)
        )
        distributions = [
            [_distribution(summary(values, e), e) for values, e in zip(layer, edges, strict=True)]
            for layer, edges in zip(self._samples, self.edges, strict=True)
        ]
        val_acc_batch_stats = val_acc_moving_stats = None
        gaps = iter(())
        if self.has_bn:
            accuracy, moving_accuracy, gap_values = batch_stats
            val_acc_batch_stats, val_acc_moving_stats = float(accuracy), float(moving_accuracy)
            gaps = iter(gap_values.tolist())
        loss, grad_norms, weight_norms, steps = basic
        landscape = None
        ics: list[tuple[float | None, float | None]] = [(None, None)] * len(self.blocks)
        if full:
            distances, cosines, losses, changes, gnorm = santurkar
            ics = list(zip(distances.tolist(), cosines.tolist(), strict=True))
            landscape = self._landscape(float(loss), losses.tolist(), changes.tolist(), gnorm)
        layers = []
        for i, (_, norm) in enumerate(self.blocks):
            pre_bn, pre_activation = (
                distributions[i] if norm is not None else (None, *distributions[i])
            )
            layers.append(
                LayerDiagnostics(
                    name=self.names[i],
                    pre_bn=pre_bn,
                    pre_activation=pre_activation,
                    grad_norm=float(grad_norms[i]),
                    weight_norm=float(weight_norms[i]),
                    effective_step=float(steps[i]),
                    bn_gap=next(gaps) if norm is not None else None,
                    ics_distance=ics[i][0],
                    ics_cosine=ics[i][1],
                )
            )
        return Diagnostics(
            level=self.level,
            layers=layers,
            val_acc_batch_stats=val_acc_batch_stats,
            val_acc_moving_stats=val_acc_moving_stats,
            landscape=landscape,
        )

    def _landscape(
        self, loss: float, losses: list[float], changes: list[float], grad_norm: float
    ) -> Landscape:
        lr = self.trainer.config.learning_rate
        distances = [m * lr * float(grad_norm) for m in STEP_MULTIPLES]
        loss_range, predictiveness, beta = landscape_summary(loss, losses, changes, distances)
        return Landscape(
            step_multiples=list(STEP_MULTIPLES),
            losses=losses,
            grad_changes=changes,
            loss_range=loss_range,
            grad_predictiveness=predictiveness,
            beta_smoothness=beta,
        )

    # -- the validation pass ----------------------------------------------------------

    def _inspect_step(self, x: tf.Tensor, units: tuple[tf.Tensor, ...]):
        taps: list[Tap] = []
        logits, probe = self.network.forward(x, training=False, taps=taps)
        samples = []
        for tap, layer_units in zip(taps, units, strict=True):
            values = [t for t in (tap.pre_bn, tap.pre_activation) if t is not None]
            flat = [tf.reshape(t, [tf.shape(t)[0], -1]) for t in values]
            samples.append(tuple(tf.gather(f, layer_units, axis=1) for f in flat))
        return logits, probe, tuple(samples)

    def validation_pass(self, images: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Logits and probe values of `images`, as Trainer.predict, keeping the
        sampled values of every layer (as tensors, for the next `measure`)."""
        logits, probes, samples = [], [], []
        for start in range(0, len(images), chunk):
            chunk_logits, chunk_probe, chunk_samples = self._inspect(
                images[start : start + chunk], self.units
            )
            logits.append(chunk_logits.numpy())
            probes.append(chunk_probe.numpy())
            samples.append(tf.nest.map_structure(lambda t: t.numpy(), chunk_samples))
        self._samples = tf.nest.map_structure(lambda *chunks: np.concatenate(chunks), *samples)
        return np.concatenate(logits), np.concatenate(probes)

    def use_samples(self, samples: tuple[tuple[np.ndarray, ...], ...]) -> None:
        """The sampled values of a validation pass made elsewhere (a stack's, of all its
        models at once), per layer as `validation_pass` keeps them, for the next `measure`."""
        self._samples = samples

    def _all_measures(self, indices, step, seed, learning_rate, full=None):
        """Everything an evaluation measures but the distributions, in one compiled
        call: (BN's gap and accuracies, the norms, and with `full` the Santurkar measures: zeros
        when `full` is false at this evaluation)."""
        x, y = self._batch(indices, step, seed)
        variables = self.network.trainable_variables
        loss, grads = self._gradients(x, y)
        basic = (loss, *self._norms(dict(zip(map(id, variables), grads, strict=True))))
        batch_stats = self._batch_stats_pass() if self.has_bn else ()
        santurkar = ()
        if full is not None:
            # Program order: the ops above read the weights before this moves them (a
            # tf.function runs the ops on one variable in the order they were written).
            layers = len(self.blocks)
            skipped = (tf.zeros([layers]),) * 2 + (tf.zeros([len(STEP_MULTIPLES)]),) * 2
            santurkar = tf.cond(
                full,
                lambda: self._santurkar_measures(x, y, grads, learning_rate),
                lambda: (*skipped, tf.constant(0.0)),
            )
        return batch_stats, basic, santurkar

    # -- BN with batch statistics on validation batches -------------------------------

    def _batch_stats_pass(self):
        def one(batch):
            images, labels = batch
            taps: list[Tap] = []
            logits, _ = self.network.forward(images, training=False, batch_stats=True, taps=taps)
            moving_logits, _ = self.network.forward(images, training=False)
            correct = tf.stack(
                [
                    tf.reduce_sum(
                        tf.cast(tf.equal(tf.argmax(z, 1, output_type=tf.int32), labels), tf.float64)
                    )
                    for z in (logits, moving_logits)
                ]
            )
            gaps = [
                tf.square(bn_gap(tap.pre_bn, norm))
                for tap, (_, norm) in zip(taps, self.blocks, strict=True)
                if norm is not None
            ]
            return correct, tf.stack(gaps)

        correct, squared_gaps = tf.map_fn(
            one,
            (self.val_batches, self.val_labels),
            fn_output_signature=(tf.float64, tf.float32),
        )
        # (batch statistics, moving statistics), on the same images.
        accuracy = tf.reduce_sum(correct, axis=0) / tf.cast(tf.size(self.val_labels), tf.float64)
        return accuracy[0], accuracy[1], tf.sqrt(tf.reduce_mean(squared_gaps, axis=0))

    # -- the training batch of the next update ----------------------------------------

    def _batch(self, indices, step, seed) -> tuple[tf.Tensor, tf.Tensor]:
        trainer = self.trainer
        x = random_shift(
            tf.gather(trainer.images, indices), trainer.config.max_shift, tf.stack([seed, step])
        )
        return x, tf.gather(trainer.labels, indices)

    def _loss_and_gradients(self, x: tf.Tensor, y: tf.Tensor):
        """The batch's loss (BN on its statistics, no dropout) and its gradients for
        every trainable variable. Compiled on its own (in __init__) so that the measures
        that call it several times trace the network once."""
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            logits, _ = self.network.forward(x, training=False, batch_stats=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        return loss, tape.gradient(loss, variables)

    def _norms(self, grad_of: dict[int, tf.Tensor]):
        grad_norms, weight_norms, steps = [], [], []
        optimizer = self.trainer.optimizer
        for linear, _ in self.blocks:
            kernel = linear.kernel
            grad = grad_of[id(kernel)]
            weight_norm = tf.norm(tf.convert_to_tensor(kernel))
            update = proposed_update(optimizer, kernel, grad)
            grad_norms.append(tf.norm(grad))
            weight_norms.append(weight_norm)
            steps.append(tf.norm(update) / weight_norm)
        return tf.stack(grad_norms), tf.stack(weight_norms), tf.stack(steps)

    def _santurkar_measures(self, x, y, grads: list[tf.Tensor], learning_rate: tf.Tensor):
        optimizer = self.trainer.optimizer
        variables = self.network.trainable_variables
        grad_of = dict(zip(map(id, variables), grads, strict=True))

        # ICS: each layer's kernel gradient again, after the earlier layers' update.
        distances, cosines = [tf.constant(0.0)], [tf.constant(1.0)]
        earlier: list[keras.Variable] = []
        for i in range(1, len(self.blocks)):
            earlier += [
                v for layer in self.blocks[i - 1] if layer for v in layer.trainable_variables
            ]
            updated = [
                tf.convert_to_tensor(v) + proposed_update(optimizer, v, grad_of[id(v)])
                for v in earlier
            ]
            kernel = self.blocks[i][0].kernel
            _, grads_after = self._gradients_at(earlier, updated, x, y)
            g = grad_of[id(kernel)]
            g_after = grads_after[[id(v) for v in variables].index(id(kernel))]
            distances.append(tf.norm(g - g_after))
            cosines.append(tf.reduce_sum(g * g_after) / (tf.norm(g) * tf.norm(g_after)))

        # The landscape along the gradient.
        lr = learning_rate
        losses, changes = [], []
        for multiple in STEP_MULTIPLES:
            moved = [
                tf.convert_to_tensor(v) - multiple * lr * g
                for v, g in zip(variables, grads, strict=True)
            ]
            loss_m, grads_m = self._gradients_at(variables, moved, x, y)
            losses.append(loss_m)
            changes.append(_norm([a - b for a, b in zip(grads, grads_m, strict=True)]))
        return (
            tf.stack(distances),
            tf.stack(cosines),
            tf.stack(losses),
            tf.stack(changes),
            _norm(grads),
        )

    def _gradients_at(self, variables, values, x, y):
        """The loss on (x, y) and its gradients with `variables` set to `values`;
        the variables are then set back to what they held, bit for bit."""
        saved = [tf.identity(tf.convert_to_tensor(v)) for v in variables]
        for v, value in zip(variables, values, strict=True):
            v.assign(value)
        loss, grads = self._gradients(x, y)
        # Ops on one variable run in program order inside a tf.function; the
        # dependency also keeps the restore after the gradients that read the moved values.
        with tf.control_dependencies([loss, *grads]):
            for v, value in zip(variables, saved, strict=True):
                v.assign(value)
        return loss, grads
