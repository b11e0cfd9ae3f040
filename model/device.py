"""Where training runs: the first GPU TensorFlow sees, else the CPU.

Kept deliberately small because no machine we test on has a GPU. The server
pins each worker to one card with CUDA_VISIBLE_DEVICES, so inside a worker the
card is always GPU:0. Memory growth stops one run from reserving the whole card,
so several runs can share it.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


def configure() -> str:
    """Enable memory growth on every visible GPU; return the device to train on."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: already initialised in this process (a second run), when
        # growth was set the first time.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return "GPU:0" if gpus else "CPU:0"
