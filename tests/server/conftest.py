"""Server fixtures: real BN Lab servers (bnlab.server.testing) with a real SQLite file
and real worker processes training on the real MNIST."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bnlab.server.testing import ServerProcess
from tests.conftest import small_evaluations
from tests.server.samples import load_release_db


@pytest.fixture(scope="package", autouse=True)
def _service_tests_evaluate_on_a_small_split() -> Iterator[None]:
    """The service is under test here, not the accuracy (tests/conftest.py)."""
    with small_evaluations():
        yield


@pytest.fixture
def start_server(tmp_path, data_dir):
    servers: list[ServerProcess] = []

    def start(
        db: Path | None = None,
        workers: int = 2,
        extra: list[str] = (),
        token: str | None = None,
        data: Path | None = None,  # another MNIST directory than the real one
    ) -> ServerProcess:
        server = ServerProcess(db or tmp_path / "bnlab.db", data or data_dir, workers, extra, token)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    """One server shared by a module's tests (each test makes its own runs)."""
    server = ServerProcess(tmp_path_factory.mktemp("srv") / "bnlab.db", data_dir).start()
    yield server
    server.stop()


@pytest.fixture
def release_db(tmp_path) -> Path:
    return load_release_db(tmp_path / "release.db")


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
