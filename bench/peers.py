"""The peers BN Lab's `train()` is timed against, and how each is timed.

Every peer trains the identical network on the same 55,000 MNIST images with
the same batch size and optimizer, as a user of that framework would write it:
Keras `model.fit` (optionally with `steps_per_execution`) and PyTorch in eager
mode. Each function returns steps per second over `steps` updates after a
warm-up (compilation, first-touch allocation) that is not timed.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from bnlab.model.config import RunConfig
from bnlab.model.data import Mnist
from bnlab.model.optimizers import ADAGRAD_INITIAL_ACCUMULATOR
from bnlab.model.training import train

WARMUP = 100  # untimed updates first; a multiple of every steps_per_execution used

TORCH_MISSING = (
    "PyTorch is a benchmark-only peer, not a dependency of BN Lab: install it with "
    "`pip install -e '.[bench]'` (or `pip install torch==2.13.0`)"
)


def keras_peer(config: RunConfig, steps_per_execution: int = 1) -> keras.Model:
    """The run's network in plain Keras layers, compiled with Keras's own optimizer."""
    bn = config.batch_norm

    def block(linear: keras.layers.Layer, activation: str, pool: bool) -> list:
        norm = [
            keras.layers.BatchNormalization(momentum=config.bn_decay, epsilon=config.bn_epsilon)
        ]
        return [
            linear,
            *(norm if bn else []),
            keras.layers.Activation(activation),
            *([keras.layers.MaxPooling2D(2, padding="same")] if pool else []),
        ]

    if config.arch == "cnn":
        layers = [
            *block(keras.layers.Conv2D(32, 5, padding="same", use_bias=not bn), "relu", True),
            *block(keras.layers.Conv2D(64, 5, padding="same", use_bias=not bn), "relu", True),
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
        ]
    else:
        layers = [keras.layers.Flatten()]
        for _ in range(3):
            layers += block(keras.layers.Dense(100, use_bias=not bn), "sigmoid", False)
    optimizer = {
        "adagrad": lambda lr: keras.optimizers.Adagrad(
            lr, initial_accumulator_value=ADAGRAD_INITIAL_ACCUMULATOR
        ),
        "sgd": keras.optimizers.SGD,
    }[config.optimizer](config.learning_rate)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            *layers,
            *([keras.layers.Dropout(config.dropout)] if config.dropout else []),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    return model


def updates_in_call(begin: int, end: int, steps_per_epoch: int) -> int:
    """The updates one compiled call of `model.fit` made: Keras reports each call as
    steps `begin` to `end` = begin + steps_per_execution - 1, also for the last call
    of an epoch, which stops early when the epoch's batches run out."""
    return min(end, steps_per_epoch - 1) - begin + 1


def epochs_for(updates: int, steps_per_epoch: int) -> int:
    """Whole epochs of `steps_per_epoch` batches that hold at least `updates` updates."""
    return -(-updates // steps_per_epoch)


class _ExecutionTimer(keras.callbacks.Callback):
    """Wall time and updates from the first compiled call that starts at or after
    WARMUP updates to the end of the last one. Keras calls these hooks once per call
    (every `steps_per_execution` updates) with the steps of the epoch it spans, so
    the updates are counted here across epochs, each call's exactly."""

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.updates = 0  # all of them so far, every epoch
        self.timed_from = -1
        self.start = self.end = 0.0
        self._begin = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch
        if self.updates >= WARMUP and self.timed_from < 0:
            self.timed_from, self.start = self.updates, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.updates += updates_in_call(self._begin, batch, self.steps_per_epoch)
        self.end = time.perf_counter()

    def steps_per_sec(self) -> float:
        return (self.updates - self.timed_from) / (self.end - self.start)


def keras_steps_per_sec(config: RunConfig, data: Mnist, steps_per_execution: int = 1) -> float:
    """`model.fit` over whole epochs of the 55,000 images in full batches (the last,
    partial one dropped, as train()'s order does), as many as WARMUP + `steps`
    updates take: asking one epoch for more steps than its data holds stops Keras
    early ("ran out of data")."""
    import tensorflow as tf

    model = keras_peer(config, steps_per_execution)
    images, labels = data.train.images, data.train.labels
    steps_per_epoch = len(labels) // config.batch_size
    batches = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    timer = _ExecutionTimer(steps_per_epoch)
    model.fit(
        batches,
        epochs=epochs_for(WARMUP + config.steps, steps_per_epoch),
        shuffle=False,  # the dataset shuffles itself, every epoch
        verbose=0,
        callbacks=[timer],
    )
    return timer.steps_per_sec()


def ours_steps_per_sec(config: RunConfig, data: Mnist) -> float:
    """train() evaluating only at the ends, timed between its own progress
    events after the warm-up (tracing and evaluation excluded)."""
    progress = []

    def on_event(event):
        if event.type == "progress":
            progress.append((event.step, event.elapsed))

    total = WARMUP + config.steps
    train(config.model_copy(update={"steps": total, "eval_every": total}), on_event, data=data)
    first = next(p for p in progress if p[0] >= WARMUP)
    last = progress[-1]
    return (last[0] - first[0]) / (last[1] - first[1])


def torch_steps_per_sec(config: RunConfig, data: Mnist) -> float:
    """The CNN in PyTorch, eager, with PyTorch's Adagrad (same learning rate and
    initial accumulator), on batches drawn the same way (a fresh permutation
    per epoch). NCHW, PyTorch's native layout on a CPU."""
    # PyTorch's OpenMP threads spin while they wait; on a machine whose cores are
    # shared (2 cores, other jobs) that made it far slower here (bench/RESULTS.md,
    # "Throughput"). Passive waiting gives the peer its best speed; TensorFlow does not
    # use OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        raise SystemExit(TORCH_MISSING) from None
    from torch import nn

    if config.arch != "cnn":
        raise ValueError("the PyTorch peer is the CNN")
    torch.manual_seed(config.seed)
    bn = config.batch_norm

    def block(conv: nn.Module, channels: int) -> list[nn.Module]:
        # PyTorch's momentum weighs the new batch: 1 - decay.
        norm = nn.BatchNorm2d(channels, eps=config.bn_epsilon, momentum=1 - config.bn_decay)
        return [conv, *([norm] if bn else []), nn.ReLU(), nn.MaxPool2d(2)]

    model = nn.Sequential(
        *block(nn.Conv2d(1, 32, 5, padding=2, bias=not bn), 32),
        *block(nn.Conv2d(32, 64, 5, padding=2, bias=not bn), 64),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(1024, 10),
    )
    optimizer = torch.optim.Adagrad(
        model.parameters(),
        lr=config.learning_rate,
        initial_accumulator_value=ADAGRAD_INITIAL_ACCUMULATOR,
    )
    images = torch.from_numpy(np.ascontiguousarray(data.train.images.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(data.train.labels.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(labels))
    model.train()
    start = 0.0
    for step in range(WARMUP + config.steps):
        if step == WARMUP:
            start = time.perf_counter()
        position = (step * config.batch_size) % len(labels)
        if position + config.batch_size > len(labels):
            order, position = torch.randperm(len(labels)), 0
        batch = order[position : position + config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images[batch]), labels[batch])
        loss.backward()
        optimizer.step()
    loss.item()
    return config.steps / (time.perf_counter() - start)
