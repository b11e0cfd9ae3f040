"""Shared fixtures: the real MNIST directory, read through BNLAB_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bnlab.model.data import DataError, ensure_files


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST files. Tests never download: without them the suite stops
    with a message saying where to put them."""
    try:
        return ensure_files(os.environ.get("BNLAB_DATA_DIR"), download=False)
    except DataError as exc:
        pytest.exit(
            f"{exc}\nThe tests read the real MNIST files and never download them: set "
            f"BNLAB_DATA_DIR to a directory holding the four .gz files.",
            returncode=2,
        )


@pytest.fixture(scope="session")
def mnist(data_dir: Path):
    from bnlab.model.data import load_mnist

    return load_mnist(data_dir, download=False)
