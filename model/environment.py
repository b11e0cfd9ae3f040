"""The process environment TensorFlow and CUDA read when they start: set before the
first `import tensorflow` (bnlab.model's package import calls `prepare()`), so
without importing TensorFlow itself.

- **The log.** On a machine without an NVIDIA driver, TensorFlow's start-up lines
  are noise (``failed call to cuInit: CUDA error``, "Could not find cuda drivers"):
  its C++ log is cut to errors that matter (level 3) and the few lines it writes
  before its logger is configured are filtered out of the import. On a machine
  with a driver the log keeps its warnings (level 1): the ones a GPU user must
  see, "Cannot dlopen some GPU libraries" (TensorFlow falls back to the CPU) and
  the PTX JIT warning (the first run on a Hopper card compiles its kernels for
  minutes), are warnings.
- **CUDA's JIT cache.** TensorFlow 2.21's wheel carries only PTX for compute_90
  (H100, H200): every fresh process JIT-compiles its kernels unless the driver's
  cache keeps them. The cache goes to a per-user directory (the image sets a
  volume instead) and may hold 4 GiB, CUDA's maximum, rather than its 256 MiB
  default, which one TensorFlow build's kernels overflow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs

CUDA_CACHE_MAXSIZE = 4 * 1024**3  # bytes: the most CUDA accepts
# Levels of TF_CPP_MIN_LOG_LEVEL: 1 hides INFO, 3 hides INFO, WARNING and ERROR.
LOG_LEVEL_WITH_GPU = "1"
LOG_LEVEL_WITHOUT_GPU = "3"
# What TensorFlow writes to stderr during its import on a machine without CUDA,
# before its log level applies: lines nobody there can act on.
_IMPORT_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
)


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded here (or passed into this container),
    asked of the kernel and the driver's tool, not of TensorFlow."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def cuda_cache_dir() -> Path:
    """Where CUDA keeps JIT-compiled kernels across processes: $CUDA_CACHE_PATH when
    set (the image's volume), else this user's cache directory."""
    configured = os.environ.get("CUDA_CACHE_PATH")
    return Path(configured) if configured else Path(platformdirs.user_cache_dir("bnlab")) / "cuda"


def prepare() -> None:
    """Set the variables TensorFlow and the CUDA driver read at start-up, keeping
    any the user set; once TensorFlow is imported they no longer matter."""
    gpu_machine = nvidia_driver_present()
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", LOG_LEVEL_WITH_GPU if gpu_machine else LOG_LEVEL_WITHOUT_GPU
    )
    os.environ.setdefault("CUDA_CACHE_PATH", str(cuda_cache_dir()))
    os.environ.setdefault("CUDA_CACHE_MAXSIZE", str(CUDA_CACHE_MAXSIZE))
    if gpu_machine:
        # Made here rather than trusted to the driver; unwritable, CUDA just compiles
        # without a cache, as it would have.
        with contextlib.suppress(OSError):
            cuda_cache_dir().mkdir(parents=True, exist_ok=True)
    if not gpu_machine and "tensorflow" not in sys.modules and not _hooked():
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Catch what is written to file descriptor 2 (C++ writes there directly, past
    sys.stderr) and write it back without the import noise, also when it raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [
                line
                for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                if not _IMPORT_NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, its module executed with the noise filtered."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        with _filtered_stderr():
            self.inner.exec_module(module)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, the way Python would, and hands back a spec whose
    loader filters the import's stderr. It leaves sys.meta_path at its first use,
    so that every other import goes by untouched."""

    def find_spec(self, name: str, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _hooked() -> bool:
    return any(isinstance(finder, _QuietImport) for finder in sys.meta_path)
