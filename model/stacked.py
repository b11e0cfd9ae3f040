"""Train M runs as one compiled program: a stack (issue #27).

The public surface is `train_stack(configs, on_event, should_stop)`: the runs of
`configs` (which share what `RunConfig.stack_key` names: network, batch size, schedule,
optimizer, shifts) train together, one compiled step updating every model, and each
run reports the events it would report alone, through `on_event(index, event)`.

Each model trains as it would alone: its own initial weights (its run's own
network, built by `build_network`), batch order (`BatchOrder`), shifts
(`random_shift`), dropout masks, learning rate, optimizer slots, BN statistics. The
stack's loss is the sum of the models' mean losses, so each model's gradient is
exactly its own. A model whose loss stops being finite stops alone: its weights and
slots are frozen from that update on (`tf.where`), it reports `diverged` at the step
it would report alone, and the others go on.

An evaluation is one inference pass of every model over the validation set (the test
set at the end): logits, probe and the values the diagnostics sample, BN on each
model's moving averages, computed as BatchNorm's inference path computes them. Each
model's diagnostics are then the single run's own code (model.diagnostics) on its
weights and slots, written into a network and optimizer it shares with the models of
its *view* (the same architecture and settings but for seed, learning rate and other
numbers the compiled measures take as arguments): traced once per view, not per model.
Before this, step 0's evaluation (tracing per model) was most of a short stack's time
(bench/RESULTS.md, "Stacked training").

Both networks stack (model.stacked_networks): the paper's MLP, and the seed CNN with
its convolutions grouped; but the CNN's runs are grouped into stacks only where
grouped convolutions were timed faster than separate ones (`RunConfig.stack_key`).
Whether the update is compiled with XLA, and how many models train at once (more runs
train as parts of that size), are this machine's timed choices (model.stack_paths).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import device, stack_paths
from .augment import random_shift
from .config import STACK_FIELDS, RunConfig
from .data import BatchOrder, Mnist, load_mnist
from .diagnostics import EDGE_IMAGES, Diagnostician, sampled_units
from .events import (
    Cancelled,
    DiagnosticsLevel,
    Diverged,
    DivergedEvent,
    EvalEvent,
    Event,
    ProbePercentiles,
    ProgressEvent,
    StartEvent,
    TestEvent,
    TestMetrics,
    TrainingPath,
    TrainingStopped,
)
from .networks import Network, build_network
from .optimizers import make_optimizer
from .stacked_networks import STACKED
from .stacked_optimizers import StackedOptimizer
from .training import (
    EVAL_CHUNK,
    PROGRESS_INTERVAL,
    WINDOW_SECONDS,
    Checkpointer,
    WindowSizer,
    _loss_and_accuracy,
)

Outcome = TestMetrics | TrainingStopped
OnStackEvent = Callable[[int, Event], None]


@dataclass
class _Solo:
    """One model's run as the single-run code sees it: the attributes Diagnostician
    reads of a Trainer. The solos of one view share a network and an optimizer
    (`StackTrainer.view_of`), which hold a model's weights and slots when it is measured."""

    config: RunConfig
    network: Network
    optimizer: keras.optimizers.Optimizer
    order: BatchOrder
    images: tf.Tensor
    labels: tf.Tensor
    diagnostician: Diagnostician | None = None


# What the models of one view may differ in: numbers that the compiled evaluation of
# a single run takes as arguments or variables (the seed's units, edges and shifts, the
# optimizer's learning rate), or that it does not use (initialisation, the training
# subset, dropout, which evaluation turns off). Anything else gives a view of its own.
VIEW_FREE = ("seed", "learning_rate", "init_scale", "train_subset", "dropout")


def _view_key(config: RunConfig) -> str:
    return repr(sorted(config.model_dump(exclude=set(VIEW_FREE)).items()))


class StackTrainer:
    """The compiled pieces of a stack: the stacked network, its optimizer and the
    training window; and per model its single-run view (`solos`)."""

    def __init__(
        self,
        configs: list[RunConfig],
        data: Mnist,
        *,
        xla: bool = False,
        networks: list[Network] | None = None,
    ) -> None:
        """`networks`: each model's initial network (default: built from its config, as
        its run alone builds it); model.stack_paths times stacks of one network repeated."""
        if len({tuple(getattr(c, name) for name in STACK_FIELDS) for c in configs}) != 1:
            raise ValueError(f"the runs of a stack must share {', '.join(STACK_FIELDS)}")
        self.configs = configs
        self.size = len(configs)
        first = configs[0]
        if first.arch not in STACKED:
            raise ValueError(f"no stacked network for {first.arch!r}: it trains one run at a time")
        self.batch_size, self.max_shift = first.batch_size, first.max_shift
        self.images = tf.constant(data.train.images)
        self.labels = tf.constant(data.train.labels)
        if networks is None:
            networks = [build_network(config) for config in configs]
        solos, views = [], {}
        for m, config in enumerate(configs):
            network = networks[m]
            # One network and optimizer per view: the evaluation's compiled functions
            # (diagnostics) are traced once per view, not once per model.
            view = views.setdefault(_view_key(config), m)
            if view == m:
                optimizer = make_optimizer(config)
                optimizer.build(network.trainable_variables)
            else:
                network, optimizer = solos[view].network, solos[view].optimizer
            # A run alone with a training subset loads only the first N images; here
            # every model indexes the full set's first N.
            size = min(config.train_subset or len(data.train), len(data.train))
            order = BatchOrder(size, config.batch_size, config.seed)
            solos.append(_Solo(config, network, optimizer, order, self.images, self.labels))
        self.solos = solos
        self.view_of = [views[_view_key(c)] for c in configs]
        # The CNN's convolutions are grouped where that exists: under XLA or on a GPU.
        grouped = xla or bool(tf.config.list_physical_devices("GPU"))
        self.network = STACKED[first.arch](configs, networks, grouped=grouped)
        self._sources: dict[int, dict[int, int]] = {}
        self.sizes = self.network.tap_sizes
        self.units = tuple(
            tf.constant(np.stack(layer))
            for layer in zip(*(sampled_units(c.seed, self.sizes) for c in configs), strict=True)
        )
        # XLA: the stack's batched products, unfused, took 1.8 times as long (measured).
        self._infer = tf.function(
            self._inference,
            autograph=False,
            jit_compile=xla,
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
        )
        self.optimizer = StackedOptimizer(configs, self.network.trainable_variables)
        self._seeds = tf.constant([c.seed for c in configs], tf.int32)
        # On a CPU, XLA fuses the many small elementwise passes (BN, the activations,
        # the optimizer's selected updates) that otherwise cost as much as the products.
        self._step = (
            tf.function(self._core, jit_compile=True, autograph=False) if xla else self._core
        )
        # No AutoGraph: every Python branch and loop here is over values fixed when
        # traced (the models, the variants); the loop over updates is tf.while_loop.
        self._run_window = tf.function(
            self._window,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, self.size, self.batch_size], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([self.size], tf.float64),
                tf.TensorSpec([self.size], tf.bool),
            ],
        )

    def _batch(self, indices: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Every model's training batch for update `step + 1`: [M,B,28,28,1] images
        (each shifted as its run alone shifts it) and [M,B] labels."""
        x = tf.gather(self.images, indices)
        if self.max_shift:
            x = tf.stack(
                [
                    random_shift(x[m], self.max_shift, tf.stack([self._seeds[m], step]))
                    for m in range(self.size)
                ]
            )
        return x, tf.gather(self.labels, indices)

    def _update(self, indices: tf.Tensor, step: tf.Tensor, alive: tf.Tensor) -> tf.Tensor:
        """Update number `step + 1` of every model on its batch in `indices` [M,B];
        applied only where the model is `alive` and its loss finite. Its losses [M]."""
        x, y = self._batch(indices, step)
        return self._step(x, y, self.network.dropout_keep(step, self.batch_size), step, alive)

    def _core(self, x, y, keep, step, alive) -> tf.Tensor:
        """The update itself, random numbers drawn: what XLA may compile."""
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            logits, _, movings = self.network.forward(x, training=True, keep=keep)
            losses = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), axis=1
            )
            # The sum: each model's gradient is its own mean loss's.
            total = tf.reduce_sum(losses)
        gradients = tape.gradient(total, variables)
        update = tf.logical_and(alive, tf.math.is_finite(losses))
        self.optimizer.apply(gradients, update, step)
        keep_moving = update[:, None]
        for i, moving in enumerate(movings):
            for variable, new in zip(self._moving_pair(i), moving, strict=True):
                variable.assign(tf.where(keep_moving, new, variable))
        return losses

    def _moving_pair(self, i: int) -> tuple[tf.Variable, tf.Variable]:
        return self.network.moving_means[i], self.network.moving_variances[i]

    def _window(self, indices, first_step, loss_sum, alive):
        """`len(indices)` updates of every model in one call, from step `first_step` on.

        Returns (updates done, `loss_sum` plus each model's losses, which models are
        still alive, and per model the step its loss stopped being finite at (0: it did
        not) and that loss). The loop ends early only when no model is alive.
        """
        size = self.size

        def running(done, loss_sum, alive, diverged_at, last_loss):
            return tf.logical_and(done < tf.shape(indices)[0], tf.reduce_any(alive))

        def update(done, loss_sum, alive, diverged_at, last_loss):
            step = first_step + done
            losses = self._update(indices[done], step, alive)
            counted = tf.logical_and(alive, tf.math.is_finite(losses))
            loss_sum += tf.where(counted, tf.cast(losses, tf.float64), 0.0)
            stopped = tf.logical_and(alive, tf.logical_not(counted))
            diverged_at = tf.where(stopped, step + 1, diverged_at)
            last_loss = tf.where(stopped, losses, last_loss)
            return done + 1, loss_sum, counted, diverged_at, last_loss

        start = (
            tf.constant(0),
            loss_sum,
            alive,
            tf.zeros([size], tf.int32),
            tf.zeros([size], tf.float32),
        )
        return tf.while_loop(running, update, start, parallel_iterations=1)

    def compile(self) -> None:
        self._run_window.get_concrete_function()

    def _inference(self, x: tf.Tensor):
        """Every model's logits [M,N,10] and probe [M,N] of the images `x` (BN on its
        moving averages), and per hidden layer the values each model's diagnostics
        sample ([M,N,U] before BN and before the nonlinearity): one pass for all."""
        taps: list[tuple[tf.Tensor, tf.Tensor]] = []
        logits, probe, _ = self.network.forward(x, taps=taps)
        samples = tuple(
            tuple(tf.gather(t, units, axis=2, batch_dims=1) for t in tap)
            for tap, units in zip(taps, self.units, strict=True)
        )
        return logits, probe, samples

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """`_inference` of a whole split, in chunks of EVAL_CHUNK as a run alone evaluates:
        logits, probes and samples as arrays."""
        logits, probes, samples = [], [], []
        for start in range(0, len(images), EVAL_CHUNK):
            chunk_logits, chunk_probe, chunk_samples = self._infer(
                images[start : start + EVAL_CHUNK]
            )
            logits.append(chunk_logits.numpy())
            probes.append(chunk_probe.numpy())
            samples.append(tf.nest.map_structure(lambda t: t.numpy(), chunk_samples))
        joined = tf.nest.map_structure(lambda *chunks: np.concatenate(chunks, 1), *samples)
        return np.concatenate(logits, 1), np.concatenate(probes, 1), joined

    def samples_of(self, m: int, samples: tuple) -> tuple[tuple[np.ndarray, ...], ...]:
        """Model m's share of `infer`'s samples, per layer as its Diagnostician keeps
        them: (before BN, before the nonlinearity) where BN is, (before the nonlinearity)
        elsewhere."""
        bn = self.configs[m].batch_norm
        return tuple(
            (pre_bn[m], pre[m]) if bn and normed else (pre[m],)
            for (pre_bn, pre), normed in zip(samples, self.network.normed_layers, strict=True)
        )

    def run(
        self, first_step: int, count: int, loss_sum: np.ndarray, alive: np.ndarray
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Updates number `first_step + 1` to `first_step + count` of every model alive."""
        indices = np.stack([s.order.window(first_step, count) for s in self.solos], axis=1)
        done, loss_sum, alive, diverged_at, last_loss = self._run_window(
            indices,
            tf.constant(first_step, tf.int32),
            tf.constant(loss_sum, tf.float64),
            tf.constant(alive),
        )
        return (
            int(done),
            loss_sum.numpy(),
            alive.numpy(),
            diverged_at.numpy(),
            last_loss.numpy(),
        )

    def load_into_view(self, m: int, step: int) -> _Solo:
        """Model `m`'s weights, optimizer slots and learning rate written into the
        network and optimizer of its view; its solo returned."""
        solo = self.solos[m]
        self.network.load_into(m, solo.network)
        view = self.view_of[m]
        if view not in self._sources:
            index_of = {id(v): i for i, v in enumerate(self.network.trainable_variables)}
            sources = {}
            for variable in solo.network.trainable_variables:
                stacked = self.network.source_of(solo.network, variable)
                if stacked is not None and id(stacked) in index_of:
                    sources[id(variable)] = index_of[id(stacked)]
            self._sources[view] = sources
        self.optimizer.load_into(m, solo.optimizer, self._sources[view], step)
        solo.optimizer.learning_rate = solo.config.learning_rate
        return solo


class StackState:
    """Which models are still training, and how those that stopped stopped; saved
    with a stack's checkpoint so that a resumed stack does not train them again."""

    def __init__(self, size: int) -> None:
        self.alive = tf.Variable(tf.ones([size], tf.bool), trainable=False)
        self.diverged_at = tf.Variable(tf.zeros([size], tf.int64), trainable=False)
        self.diverged_loss = tf.Variable(tf.zeros([size], tf.float64), trainable=False)

    def trackables(self) -> dict[str, tf.Variable]:
        return {
            "alive": self.alive,
            "diverged_at": self.diverged_at,
            "diverged_loss": self.diverged_loss,
        }


def train_stack(
    configs: list[RunConfig],
    on_event: OnStackEvent = lambda index, event: None,
    should_stop: Callable[[], bool] | None = None,
    *,
    data: Mnist | None = None,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    xla: bool | None = None,
    size: int | None = None,
    on_outcome: Callable[[int, Outcome], None] = lambda index, outcome: None,
) -> list[Outcome]:
    """Train the runs of `configs` as one stack; each run's outcome, in order.

    `on_event(i, event)` receives run i's events, those `model.training.train` sends
    for it alone (its start event says it was stacked, and the stack's size). The
    outcome of a run is its TestMetrics, or the `Diverged` it would raise alone, or
    `Cancelled` when `should_stop()` turned true (asked between compiled windows);
    `on_outcome(i, outcome)` hears it as soon as it is known.
    `data` is the whole MNIST split (each model takes its config's training subset
    from it); without it MNIST is loaded from `data_dir`. With `checkpoint_dir` the
    stack's whole state is saved there after every evaluation, and a stack that finds
    a checkpoint there continues from it, with the result of an uninterrupted one.
    `xla` compiles each update with XLA (its random numbers are drawn outside it, by
    the single run's generators) and `size` is the most models trained at once: more
    runs than that train as parts of `size`, one after the other. Both default to
    this machine's choice (model.stack_paths: timed once per machine and cached).
    """
    if not configs:
        return []
    device.configure()  # before any timing: a GPU's memory growth
    if data is None:
        data = load_mnist(data_dir)
    if xla is None or size is None:
        choice = stack_paths.choose(configs, data)
        xla = choice.xla if xla is None else xla
        size = choice.size if size is None else size
    outcomes: list[Outcome] = []
    for start in range(0, len(configs), size):
        part = configs[start : start + size]
        if outcomes and should_stop is not None and should_stop():
            done: list[Outcome] = [Cancelled(0)] * len(part)  # never started
        else:
            directory = checkpoint_dir
            if checkpoint_dir is not None and len(part) < len(configs):
                # Named by the runs it holds: a part of another size is another stack.
                directory = Path(checkpoint_dir) / f"part-{start}-{start + len(part)}"

            def on_part_event(index: int, event: Event, start: int = start) -> None:
                on_event(start + index, event)

            done = _train_part(part, on_part_event, should_stop, data, directory, xla)
        for index, outcome in enumerate(done, start=start):
            on_outcome(index, outcome)
        outcomes += done
    return outcomes


def _train_part(
    configs: list[RunConfig],
    on_event: OnStackEvent,
    should_stop: Callable[[], bool] | None,
    data: Mnist,
    checkpoint_dir: str | Path | None,
    xla: bool,
) -> list[Outcome]:
    """One stack trained at once: `train_stack` for runs that fit in one."""
    device_name = device.configure().device
    with tf.device(f"/{device_name}"):
        trainer = StackTrainer(configs, data, xla=xla)
        state = StackState(trainer.size)
        checkpointer = (
            Checkpointer(
                None,
                Path(checkpoint_dir),
                stack={f"{i}.{v.name}": v for i, v in enumerate(trainer.network.variables)},
                slots=trainer.optimizer.slot_variables,
                **state.trackables(),
            )
            if checkpoint_dir
            else None
        )
        # Before the restore: the diagnostics' histogram edges come from the initial weights.
        diagnosed = [c.diagnostics != DiagnosticsLevel.OFF for c in configs]
        if any(diagnosed):
            _, _, initial = trainer.infer(data.validation.images[:EDGE_IMAGES])
            for m, solo in enumerate(trainer.solos):
                if not diagnosed[m]:
                    continue
                view = trainer.solos[trainer.view_of[m]].diagnostician
                values = list(trainer.samples_of(m, initial))
                solo.diagnostician = Diagnostician(
                    solo, data.validation, shared=view, initial=values
                )
    first_step, elapsed_before = checkpointer.restore() if checkpointer else (0, 0.0)
    alive = state.alive.numpy().copy()
    outcomes: list[Outcome | None] = [None] * trainer.size
    for m in np.flatnonzero(~alive):
        step, loss = int(state.diverged_at[m]), float(state.diverged_loss[m])
        outcomes[m] = Diverged(step, loss)
    trainer.compile()
    config = configs[0]
    for m in np.flatnonzero(alive):
        parameters = sum(
            int(np.prod(v.shape)) for v in trainer.solos[m].network.trainable_variables
        )
        on_event(
            m,
            StartEvent(
                total_steps=config.steps,
                device=device_name,
                parameters=parameters,
                first_step=first_step,
                path=TrainingPath.STACKED,
                stack_size=trainer.size,
            ),
        )

    started = time.perf_counter() - elapsed_before
    eval_at = set(config.eval_steps())
    loss_sum = np.zeros(trainer.size)
    loss_count, train_seconds, last_progress = 0, 0.0, 0.0

    def stop(m: int, step: int, loss: float) -> None:
        """Model m diverged at `step`: it reports so and trains no more."""
        on_event(m, DivergedEvent(step=step, loss=loss))
        outcomes[m] = Diverged(step, loss)
        alive[m] = False
        state.diverged_at[m].assign(step)
        state.diverged_loss[m].assign(loss)

    def evaluate(step: int) -> None:
        nonlocal loss_sum, loss_count, train_seconds
        elapsed = time.perf_counter() - started
        # One pass of every model over the validation set; then each model's own
        # diagnostics, through the compiled functions of its view.
        logits, probes, samples = trainer.infer(data.validation.images)
        for m in np.flatnonzero(alive):
            solo = trainer.solos[m]
            val_loss, val_acc, _ = _loss_and_accuracy(logits[m], data.validation.labels)
            p15, p50, p85 = np.percentile(probes[m], [15, 50, 85])
            diagnostics = None
            if solo.diagnostician is not None:
                trainer.load_into_view(m, step)
                solo.diagnostician.use_samples(trainer.samples_of(m, samples))
                diagnostics = solo.diagnostician.measure(step)
            on_event(
                m,
                EvalEvent(
                    step=step,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    train_loss=loss_sum[m] / loss_count if loss_count else None,
                    examples_per_sec=(
                        loss_count * config.batch_size / train_seconds if train_seconds else None
                    ),
                    elapsed=elapsed,
                    probe=ProbePercentiles(p15=p15, p50=p50, p85=p85),
                    diagnostics=diagnostics,
                ),
            )
            if not math.isfinite(val_loss):
                stop(m, step, val_loss)
        loss_sum, loss_count, train_seconds = np.zeros(trainer.size), 0, 0.0
        if checkpointer is not None:
            state.alive.assign(alive)
            checkpointer.save(step, time.perf_counter() - started)

    evaluate(first_step)
    sizer = WindowSizer(WINDOW_SECONDS)
    step = first_step
    while step < config.steps and alive.any():
        if should_stop is not None and should_stop():
            for m in np.flatnonzero(alive):
                outcomes[m] = Cancelled(step)
            return outcomes
        next_eval = min(s for s in eval_at if s > step)
        count = min(sizer.size(), next_eval - step)
        tick = time.perf_counter()
        done, loss_sum, still, diverged_at, last_loss = trainer.run(step, count, loss_sum, alive)
        now = time.perf_counter()
        sizer.observe(done, now - tick)
        train_seconds += now - tick
        for m in np.flatnonzero(alive & ~still):
            stop(m, int(diverged_at[m]), float(last_loss[m]))
        step += done
        loss_count += done
        if now - last_progress >= PROGRESS_INTERVAL or step == config.steps:
            last_progress = now
            for m in np.flatnonzero(alive):
                on_event(
                    m, ProgressEvent(step=step, total_steps=config.steps, elapsed=now - started)
                )
        if step in eval_at and alive.any():
            evaluate(step)

    logits = trainer.infer(data.test.images)[0] if alive.any() else None
    for m in np.flatnonzero(alive):
        test_loss, test_accuracy, log_loss = _loss_and_accuracy(logits[m], data.test.labels)
        metrics = TestEvent(test_loss=test_loss, test_accuracy=test_accuracy, log_loss=log_loss)
        on_event(m, metrics)
        outcomes[m] = TestMetrics(**metrics.model_dump(exclude={"type"}))
    return outcomes
