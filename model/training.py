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

from bnlab.model import device
from bnlab.model.augment import random_shift
from bnlab.model.config import RunConfig
from bnlab.model.data import BatchOrder, Mnist, load_mnist
from bnlab.model.events import (
    Cancelled,
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
from bnlab.model.networks import Network, build_network
from bnlab.model.optimizers import make_optimizer

PROGRESS_INTERVAL = 0.25  # seconds between progress events: "a few per second"
EVAL_CHUNK = 1000  # images per forward pass when evaluating (BN in inference mode)
LOG_LOSS_CLIP = 1e-15


class Trainer:
    """The compiled pieces of one run: network, optimizer, train and eval steps."""

    def __init__(self, config: RunConfig, data: Mnist) -> None:
        self.config = config
        self.network: Network = build_network(config)
        self.optimizer = make_optimizer(config)
        self.optimizer.build(self.network.trainable_variables)
        # Training images live in one tensor (on the GPU when there is one) and
        # batches are gathered inside the compiled step: no per-step host copy.
        self.images = tf.constant(data.train.images)
        self.labels = tf.constant(data.train.labels)
        self.order = BatchOrder(len(data.train), config.batch_size, config.seed)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int32)])
    def train_step(self, indices: tf.Tensor, shift_seed: tf.Tensor) -> tf.Tensor:
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

    def step(self, step: int) -> float:
        """Do update number `step + 1` (batches are numbered from 0); return its loss."""
        shift_seed = tf.constant([self.config.seed, step], tf.int32)
        return float(self.train_step(self.order.indices(step), shift_seed))


class Checkpointer:
    """The full training state at an evaluation: weights, optimizer slots, BN
    moving statistics, the dropout RNG state, the step (which fixes the
    position in the data order) and the elapsed time."""

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        # Variables are listed explicitly: Keras 3 does not expose every layer
        # (BN moving statistics, the dropout RNG state) to tf.train.Checkpoint
        # through the model object itself.
        self.checkpoint = tf.train.Checkpoint(
            # keyed by position and name: Keras uniquifies paths per process
            network={f"{i}.{v.name}": v for i, v in enumerate(trainer.network.variables)},
            optimizer=list(trainer.optimizer.variables),
            step=self.step,
            elapsed=self.elapsed,
        )
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
    finite, and `Cancelled` when `should_stop()` turns true between steps.

    With `checkpoint_dir`, the full training state is saved there after every
    evaluation, and a run that finds a checkpoint there continues from it: the
    same batches, dropout masks and updates as if it had never stopped.
    """
    device_name = device.configure()
    tf.keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_mnist(data_dir, train_subset=config.train_subset)
    with tf.device(f"/{device_name}"):
        trainer = Trainer(config, data)
        checkpointer = Checkpointer(trainer, Path(checkpoint_dir)) if checkpoint_dir else None
    first_step, elapsed_before = checkpointer.restore() if checkpointer else (0, 0.0)
    parameters = sum(int(np.prod(v.shape)) for v in trainer.network.trainable_variables)
    on_event(
        StartEvent(
            total_steps=config.steps,
            device=device_name,
            parameters=parameters,
            first_step=first_step,
        )
    )

    # Elapsed time continues across a resume, so the curve's time axis does too.
    started = time.perf_counter() - elapsed_before
    eval_at = set(config.eval_steps())
    loss_sum, loss_count, train_seconds = 0.0, 0, 0.0
    last_progress = 0.0

    def evaluate(step: int) -> None:
        nonlocal loss_sum, loss_count, train_seconds
        logits, probe = trainer.predict(data.validation.images)
        val_loss, val_acc, _ = _loss_and_accuracy(logits, data.validation.labels)
        p15, p50, p85 = np.percentile(probe, [15, 50, 85])
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

    if first_step == 0:
        evaluate(0)
    for step in range(first_step, config.steps):
        if should_stop is not None and should_stop():
            raise Cancelled(step)
        tick = time.perf_counter()
        loss = trainer.step(step)
        now = time.perf_counter()
        train_seconds += now - tick
        if not math.isfinite(loss):
            on_event(DivergedEvent(step=step + 1, loss=loss))
            raise Diverged(step + 1, loss)
        loss_sum += loss
        loss_count += 1
        if now - last_progress >= PROGRESS_INTERVAL or step + 1 == config.steps:
            last_progress = now
            on_event(ProgressEvent(step=step + 1, total_steps=config.steps, elapsed=now - started))
        if step + 1 in eval_at:
            evaluate(step + 1)

    logits, _ = trainer.predict(data.test.images)
    test_loss, test_accuracy, log_loss = _loss_and_accuracy(logits, data.test.labels)
    metrics = TestEvent(test_loss=test_loss, test_accuracy=test_accuracy, log_loss=log_loss)
    on_event(metrics)
    return TestMetrics(**metrics.model_dump(exclude={"type"}))
