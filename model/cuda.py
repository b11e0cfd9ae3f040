"""Why TensorFlow sees no GPU where the NVIDIA driver lists one: CUDA's libraries.

TensorFlow's wheel holds no CUDA. It loads CUDA's runtime libraries when it
starts, from the NVIDIA wheels of its `and-cuda` extra (`pip install
'bnlab[gpu]'` pins them) or the system's library path, and when one is missing it
trains on the CPU with a single warning ("Cannot dlopen some GPU libraries").
This module names the missing ones without importing TensorFlow, so that the
server and a worker can say so and how to fix it (the callers: /api/health, and a
worker told to train on a GPU).
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Sequence
from pathlib import Path

# The libraries TensorFlow 2.21 (CUDA 12, cuDNN 9) opens before it lists a GPU.
DRIVER_LIBRARY = "libcuda.so.1"
RUNTIME_LIBRARIES = (
    "libcudart.so.12",
    "libcublas.so.12",
    "libcublasLt.so.12",
    "libcufft.so.11",
    "libcusolver.so.11",
    "libcusparse.so.12",
    "libcudnn.so.9",
)
FIX = (
    "install TensorFlow's CUDA libraries with `pip install 'bnlab[gpu]'` (or use the "
    "Docker image, which has them)"
)


def _wheel_library_dirs() -> list[Path]:
    """The lib/ folders of the installed NVIDIA wheels (nvidia.cublas, nvidia.cudnn, ...),
    where TensorFlow looks first."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [lib for root in spec.submodule_search_locations for lib in Path(root).glob("*/lib")]


def _loadable(name: str, wheel_dirs: Sequence[Path]) -> bool:
    if any((folder / name).exists() for folder in wheel_dirs):
        return True
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def missing_libraries() -> list[str]:
    """The CUDA libraries TensorFlow needs that neither the NVIDIA wheels nor the
    system's library path hold, the driver's first."""
    wheel_dirs = _wheel_library_dirs()
    return [
        name for name in (DRIVER_LIBRARY, *RUNTIME_LIBRARIES) if not _loadable(name, wheel_dirs)
    ]


def gpu_missing_message(
    driver_gpus: Sequence[str], tensorflow_gpus: Sequence[str], missing: Sequence[str]
) -> str | None:
    """What to tell a user whose driver lists GPUs (`driver_gpus`, nvidia-smi's) that
    TensorFlow does not see (`tensorflow_gpus`, bnlab.model.device.tensorflow_gpus),
    given the `missing` libraries (missing_libraries()); None when they agree."""
    if not driver_gpus or len(tensorflow_gpus) >= len(driver_gpus):
        return None
    seen = f"only {len(tensorflow_gpus)}" if tensorflow_gpus else "none"
    head = (
        f"the NVIDIA driver lists {len(driver_gpus)} GPU(s) but TensorFlow sees {seen}, "
        "so training would run on the CPU"
    )
    if DRIVER_LIBRARY in missing:
        return (
            f"{head}: the driver's {DRIVER_LIBRARY} cannot be loaded (in Docker: start the "
            "container with GPU access, `docker compose` with the NVIDIA Container Toolkit)"
        )
    if missing:
        return f"{head}: CUDA libraries missing: {', '.join(missing)}; {FIX}"
    return (
        f"{head}, although CUDA's libraries are present: TensorFlow's start-up log "
        "(TF_CPP_MIN_LOG_LEVEL=0) says why; the driver may be older than CUDA 12.5 needs"
    )
