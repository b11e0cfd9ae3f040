"""Train one network on MNIST, reporting typed events as it goes.

The public surface is `train(config, on_event, should_stop)`; everything a
caller needs to know about a run arrives through the events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import device, kernels
from .augment import random_shift
from .config import RunConfig
from .data import BatchOrder, Mnist, load_mnist
from .diagnostics import Diagnostician
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
)
from .networks import Network, build_network
from .optimizers import make_optimizer

PROGRESS_INTERVAL = 0.25  # seconds between progress events: "a few per second"
# Seconds of updates per compiled call: cancel and progress answer between
# calls, so within about twice this (bench/RESULTS.md, "Overhead").
WINDOW_SECONDS = 0.25
MAX_WINDOW = 10_000  # updates per call at most, whatever the estimate says
EVAL_CHUNK = 1000  # images per forward pass when evaluating (BN in inference mode)
LOG_LOSS_CLIP = 1e-15


class Trainer:
    """The compiled pieces of one run: network, optimizer, training window and eval step."""

    def __init__(self, config: RunConfig, data: Mnist) -> None:
        self.config = config
        self.network: Network = build_network(config)
        self.optimizer = make_optimizer(config)
        self.optimizer.build(self.network.trainable_variables)
        # Training images live in one tensor (on the GPU when there is one) and
        # batches are gathered inside the compiled window: no per-step host copy.
        self.images = tf.constant(data.train.images)
        self.labels = tf.constant(data.train.labels)
        self.order = BatchOrder(len(data.train), config.batch_size, config.seed)
        self._seed = tf.constant(config.seed, tf.int32)
        # The batch size is static so that every shape in the step is known when
        # it is traced (the kernel paths are chosen per shape, model.kernels).
        self._run_window = tf.function(
            self._window,
            input_signature=[
                tf.TensorSpec([None, config.batch_size], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.float64),
            ],
        )

    def _update(self, indices: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """Update number `step + 1` on the batch `indices`; its loss."""
        shift_seed = tf.stack([self._seed, step])
        x = random_shift(tf.gather(self.images, indices), self.config.max_shift, shift_seed)
        y = tf.gather(self.labels, indices)
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.network(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def _window(self, indices: tf.Tensor, first_step: tf.Tensor, loss_sum: tf.Tensor):
        """`len(indices)` updates in one call, from step `first_step` on.

        Returns (updates done, `loss_sum` plus their losses, the last loss): added in
        float64 one by one onto the running sum, as Python's floats added each step's
        loss before. The updates done end with the first non-finite loss, so the
        caller can report it at its exact step.

        The loop's condition reads only the step counter, never a loss: on a GPU a
        while loop's condition is evaluated on the host, and one that read the loss
        would wait for the device at every step. The first non-finite loss is kept
        on the device instead: the loop runs every update of the window (those
        after it train weights that are already not finite, and the run ends
        there), and its count, sum and last loss stop moving at that update.
        """
        count = tf.shape(indices)[0]

        def running(step, done, loss_sum, loss):
            return step < count

        def update(step, done, loss_sum, loss):
            new_loss = self._update(indices[step], first_step + step)
            # Still counting: no loss so far in this window was non-finite.
            counting = tf.math.is_finite(loss)
            return (
                step + 1,
                done + tf.cast(counting, tf.int64),
                tf.where(counting, loss_sum + tf.cast(new_loss, tf.float64), loss_sum),
                tf.where(counting, new_loss, loss),
            )

        # The count is int64: TensorFlow keeps int32 tensors of a GPU op in host memory,
        # so an int32 count would copy each step's flag back to the host.
        start = (tf.constant(0), tf.constant(0, tf.int64), loss_sum, tf.constant(0.0))
        # One iteration at a time: each update reads the weights the last one wrote.
        _, done, loss_sum, loss = tf.while_loop(running, update, start, parallel_iterations=1)
        return done, loss_sum, loss

    def compile(self) -> None:
        """Trace the training window now rather than at its first call."""
        self._run_window.get_concrete_function()

    def run(self, first_step: int, count: int, loss_sum: float = 0.0) -> tuple[int, float, float]:
        """Updates number `first_step + 1` to `first_step + count`, in one call.

        Returns (updates done, `loss_sum` plus their losses, the last loss);
        fewer than `count` updates are done only when the last loss is not finite.
        """
        done, loss_sum, loss = self._run_window(
            self.order.window(first_step, count),
            tf.constant(first_step, tf.int32),
            tf.constant(loss_sum, tf.float64),
        )
        return int(done), float(loss_sum), float(loss)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    def predict_step(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.network.forward(x, training=False)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and probe values for a whole split, in chunks."""
        logits, probes = [], []
        for start in range(0, len(images), EVAL_CHUNK):
            chunk_logits, chunk_probe = self.predict_step(images[start : start + EVAL_CHUNK])
            logits.append(chunk_logits.numpy())
            probes.append(chunk_probe.numpy())
        return np.concatenate(logits), np.concatenate(probes)


class WindowSizer:
    """How many updates the next compiled window should run.

    Between two windows the host emits progress and checks for a cancel, so a
    window should last about WINDOW_SECONDS whatever the step costs: a few steps
    of a CNN on a slow CPU, hundreds of a small MLP (or anything on a GPU),
    where the fixed cost of a call would otherwise dominate. The first window
    is one update (its call also optimises the graph, so its time is not
    counted); later ones follow the measured seconds per update so far.
    """

    def __init__(self, target_seconds: float) -> None:
        self.target = target_seconds
        self.per_step: float | None = None
        self._calls = 0

    def size(self) -> int:
        if self.per_step is None:
            return 1
        return max(1, min(MAX_WINDOW, int(self.target / self.per_step)))

    def observe(self, steps: int, seconds: float) -> None:
        self._calls += 1
        if self._calls == 1:
            return  # the first call optimises the graph: its time says nothing about a step
        per_step = seconds / max(steps, 1)
        # Smoothed, so that one window slowed by a busy machine does not swing the next.
        self.per_step = per_step if self.per_step is None else 0.5 * (self.per_step + per_step)


class Checkpointer:
    """The full training state at an evaluation: weights, optimizer slots, BN
    moving statistics, the dropout RNG state, the step (which fixes the
    position in the data order) and the elapsed time."""

    def __init__(self, trainer: Trainer | None, directory: Path, **state) -> None:
        """The state of `trainer`, or without one (a stack of runs, model.stacked)
        the variables `state` names; with both, both."""
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        if trainer is not None:
            # Variables are listed explicitly: Keras 3 does not expose every layer
            # (BN moving statistics, the dropout RNG state) to tf.train.Checkpoint
            # through the model object itself.
            state = {
                # keyed by position and name: Keras uniquifies paths per process
                "network": {f"{i}.{v.name}": v for i, v in enumerate(trainer.network.variables)},
                "optimizer": list(trainer.optimizer.variables),
                **state,
            }
        self.checkpoint = tf.train.Checkpoint(**state, step=self.step, elapsed=self.elapsed)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=1)

    def restore(self) -> tuple[int, float]:
        """(step, elapsed seconds) of the latest checkpoint, or (0, 0.0) when none."""
        if self.manager.latest_checkpoint is None:
            return 0, 0.0
        self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.step.numpy()), float(self.elapsed.numpy())

    def save(self, step: int, elapsed: float) -> None:
        self.step.assign(step)
        self.elapsed.assign(elapsed)
        self.manager.save(checkpoint_number=step)


def _loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Cross-entropy (from log-softmax, numerically safe), accuracy, and the
    multiclass log loss with probabilities clipped at 1e-15 — in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    true_log_prob = log_probs[np.arange(len(labels)), labels]
    loss = float(-true_log_prob.mean())
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    clipped = np.clip(np.exp(true_log_prob), LOG_LOSS_CLIP, 1.0)
    return loss, accuracy, float(-np.log(clipped).mean())


def train(
    config: RunConfig,
    on_event: Callable[[Event], None] = lambda event: None,
    should_stop: Callable[[], bool] | None = None,
    *,
    data: Mnist | None = None,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TestMetrics:
    """Train `config` to the end and return the test metrics.

    Emits `start`, `eval` (step 0, every `eval_every` steps and the last step),
    `progress` (at most every PROGRESS_INTERVAL s) and finally `test`.
    Raises `Diverged` (after a `diverged` event) when the loss stops being
    finite, and `Cancelled` when `should_stop()` turns true; it is asked between
    compiled windows of updates, each about WINDOW_SECONDS long.

    With `checkpoint_dir`, the full training state is saved there after every
    evaluation, and a run that finds a checkpoint there continues from it: the
    same batches, dropout masks and updates as if it had never stopped.
    """
    device_name = device.configure().device
    tf.keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_mnist(data_dir, train_subset=config.train_subset)
    with tf.device(f"/{device_name}"):
        trainer = Trainer(config, data)
        checkpointer = Checkpointer(trainer, Path(checkpoint_dir)) if checkpoint_dir else None
        # Before the restore: the diagnostics' histogram edges come from the initial weights.
        diagnostician = (
            Diagnostician(trainer, data.validation)
            if config.diagnostics != DiagnosticsLevel.OFF
            else None
        )
    first_step, elapsed_before = checkpointer.restore() if checkpointer else (0, 0.0)
    parameters = sum(int(np.prod(v.shape)) for v in trainer.network.trainable_variables)
    with kernels.recording() as chosen:
        trainer.compile()  # chooses the kernel paths (timed once per machine)
    on_event(
        StartEvent(
            total_steps=config.steps,
            device=device_name,
            parameters=parameters,
            first_step=first_step,
            kernels=chosen,
        )
    )

    # Elapsed time continues across a resume, so the curve's time axis does too.
    started = time.perf_counter() - elapsed_before
    eval_at = set(config.eval_steps())
    loss_sum, loss_count, train_seconds = 0.0, 0, 0.0
    last_progress = 0.0

    def evaluate(step: int) -> None:
        nonlocal loss_sum, loss_count, train_seconds
        if diagnostician is None:
            logits, probe = trainer.predict(data.validation.images)
        else:
            logits, probe = diagnostician.validation_pass(data.validation.images, EVAL_CHUNK)
        val_loss, val_acc, _ = _loss_and_accuracy(logits, data.validation.labels)
        p15, p50, p85 = np.percentile(probe, [15, 50, 85])
        diagnostics = diagnostician.measure(step) if diagnostician is not None else None
        on_event(
            EvalEvent(
                step=step,
                val_loss=val_loss,
                val_acc=val_acc,
                train_loss=loss_sum / loss_count if loss_count else None,
                examples_per_sec=(
                    loss_count * config.batch_size / train_seconds if train_seconds else None
                ),
                elapsed=time.perf_counter() - started,
                probe=ProbePercentiles(p15=p15, p50=p50, p85=p85),
                diagnostics=diagnostics,
            )
        )
        if not math.isfinite(val_loss):
            on_event(DivergedEvent(step=step, loss=val_loss))
            raise Diverged(step, val_loss)
        loss_sum, loss_count, train_seconds = 0.0, 0, 0.0
        if checkpointer is not None:
            # After the event: a crash in between re-evaluates this step on
            # resume (stored by step, so once) rather than leaving a gap.
            checkpointer.save(step, time.perf_counter() - started)

    # A fresh run evaluates step 0; a resumed one evaluates its checkpoint's step again.
    # The checkpoint is saved after that evaluation's event is sent, so a crash can lose
    # the event (a killed server never stored it) but keep the checkpoint: repeating it
    # leaves no gap, and a receiver that has the point drops the repeat (the weights are
    # the checkpoint's, so the numbers are the same).
    evaluate(first_step)
    sizer = WindowSizer(WINDOW_SECONDS)
    step = first_step
    while step < config.steps:
        if should_stop is not None and should_stop():
            raise Cancelled(step)
        # A window never runs past the next evaluation (nor the last step).
        next_eval = min(s for s in eval_at if s > step)
        count = min(sizer.size(), next_eval - step)
        tick = time.perf_counter()
        done, loss_sum, loss = trainer.run(step, count, loss_sum)
        now = time.perf_counter()
        sizer.observe(done, now - tick)
        train_seconds += now - tick
        step += done
        if not math.isfinite(loss):
            on_event(DivergedEvent(step=step, loss=loss))
            raise Diverged(step, loss)
        loss_count += done
        if now - last_progress >= PROGRESS_INTERVAL or step == config.steps:
            last_progress = now
            on_event(ProgressEvent(step=step, total_steps=config.steps, elapsed=now - started))
        if step in eval_at:
            evaluate(step)

    logits, _ = trainer.predict(data.test.images)
    test_loss, test_accuracy, log_loss = _loss_and_accuracy(logits, data.test.labels)
    metrics = TestEvent(test_loss=test_loss, test_accuracy=test_accuracy, log_loss=log_loss)
    on_event(metrics)
    return TestMetrics(**metrics.model_dump(exclude={"type"}))
