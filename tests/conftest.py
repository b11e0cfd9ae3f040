"""Shared fixtures: the real MNIST directory, read through BNLAB_DATA_DIR; a fake NVIDIA
driver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bnlab.model.data import EVAL_SUBSET_ENV_VAR, DataError, ensure_files, load_mnist

# Tests that check what the product does rather than how well it learns (the
# service, the page, train()'s events) evaluate on the first EVAL_SUBSET validation
# and test images instead of all 15,000: on a small run those evaluations were
# most of the time. The tests of accuracy targets keep the full sets.
EVAL_SUBSET = 500

# Stacks train with XLA, at most 64 models at once, and the CNN alone, as forced here
# rather than timed (model.stack_paths): the suite never pays the timing unasked, and a
# machine's cached choices do not change what it tests. Servers started inside inherit it.
os.environ.setdefault("BNLAB_STACK_PATHS", "xla=1,size=64,cnn=0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST files. Tests never download (`make test` fetches them
    first): without them the suite stops with a message saying how to get them."""
    try:
        return ensure_files(os.environ.get("BNLAB_DATA_DIR"), download=False)
    except DataError as exc:
        pytest.exit(
            f"{exc}\nThe tests read the real MNIST files and never download them: run "
            f"`make test` (it fetches them first), or `python -m bnlab.model.data`, or set "
            f"BNLAB_DATA_DIR to a directory holding the four .gz files.",
            returncode=2,
        )


@pytest.fixture(scope="session")
def mnist(data_dir: Path):
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def mnist_small_eval(data_dir: Path):
    """The real MNIST with only the first EVAL_SUBSET validation and test images."""
    return load_mnist(data_dir, download=False, eval_subset=EVAL_SUBSET)


@contextmanager
def small_evaluations() -> Iterator[None]:
    """Servers started inside evaluate on EVAL_SUBSET images ($BNLAB_EVAL_SUBSET, which
    they inherit). For the packages that check the service and the page, not the
    accuracy: each enters it in a package-scoped autouse fixture of its own conftest.
    Not a fixture here: a package-scoped fixture of this conftest would belong to the
    whole `tests` package and leave the variable set for tests/model, whose accuracy
    and split-size checks then read 500 images."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(EVAL_SUBSET_ENV_VAR, str(EVAL_SUBSET))
        yield


FAKE_NVIDIA_SMI = """#!/bin/sh
# nvidia-smi -L on a one-GPU machine: what the NVIDIA driver would list.
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
"""


@pytest.fixture
def fake_nvidia_smi(monkeypatch, tmp_path) -> Path:
    """An NVIDIA driver that lists one GPU, on this machine without one: a fake
    `nvidia-smi` first on PATH (for this process and the servers it starts), and no
    CUDA_VISIBLE_DEVICES narrowing its list. TensorFlow, asked for real, sees no GPU."""
    bin_dir = tmp_path / "fake-driver"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return script
