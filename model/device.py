"""Where training runs, and what a run on it reproduces.

No machine BN Lab is tested on has a GPU: what this module decides is checked on
the CPU against a fake device list. The server pins each worker to one card with
CUDA_VISIBLE_DEVICES, so inside a worker the card is always GPU:0.

What a GPU run reproduces (docs/gpu.md). The CPU kernels a run uses are
deterministic as they are: the same run gives the same bits, twins are identical,
resume continues bit for bit. A GPU's are not by default (cuDNN's backward
convolutions are autotuned per process, BiasAddGrad and the sparse softmax
cross-entropy add in a racing order), and Ampere and Hopper round float32 matrix
products to TF32's 10-bit mantissa. A reproducible configuration (the default,
which every run uses: resume, twins and paired experiments rely on it) turns
TensorFlow's op determinism on and TF32 off on a GPU, trading some speed for the
same promises as on the CPU; the CPU gets neither, as it needs neither (op
determinism would change some CPU kernels' order of addition, so CPU runs would no
longer match the ones stored before, for nothing gained). A GPU's
results still differ from a CPU's in the last bits (other kernels, other orders
of addition): reproducible means run to run on one machine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class DeviceReport:
    """Which device trains this process's runs, as TensorFlow itself sees them."""

    device: str  # "GPU:0" or "CPU:0", for tf.device
    gpus: tuple[str, ...]  # TensorFlow's physical GPUs ("/physical_device:GPU:0", ...)
    # The same run gives the same bits on this machine: the CPU's kernels always, a
    # GPU's with op determinism on.
    reproducible: bool
    tensor_float_32: bool  # float32 matrix products may round to TF32 (Ampere and later)

    def describe(self) -> str:
        """One line for a log: where training runs and what it reproduces."""
        if not self.gpus:
            return f"training on {self.device}: TensorFlow sees no GPU"
        return (
            f"training on {self.device} of {len(self.gpus)} GPU(s) TensorFlow sees; "
            f"{'reproducible (op determinism on)' if self.reproducible else 'not reproducible'}, "
            f"TF32 {'on' if self.tensor_float_32 else 'off'}"
        )


def tensorflow_gpus() -> list[str]:
    """The GPUs TensorFlow can train on (not the ones nvidia-smi lists: without
    CUDA's libraries TensorFlow sees none of them; bnlab.model.cuda says why)."""
    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def configure(reproducible: bool = True) -> DeviceReport:
    """Set up this process for training and report the device it trains on.

    On every GPU: memory growth, so that one run does not reserve the whole card
    and several can share it. `reproducible` (on a GPU): op determinism on and
    TF32 off, as the module docstring says why. Call it before the first op on a
    GPU; a second call in the same process (a second run) changes nothing.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: already initialised in this process (a second run), when
        # growth was set the first time.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if gpus and reproducible:
        tf.config.experimental.enable_op_determinism()
        tf.config.experimental.enable_tensor_float_32_execution(False)
    return DeviceReport(
        device="GPU:0" if gpus else "CPU:0",
        gpus=tuple(gpu.name for gpu in gpus),
        reproducible=reproducible or not gpus,
        tensor_float_32=bool(gpus) and tf.config.experimental.tensor_float_32_execution_enabled(),
    )
