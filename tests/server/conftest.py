"""Server fixtures: real BN Lab servers (bnlab.server.testing) with a real SQLite file
and real worker processes training on the real MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnlab.server.testing import ServerProcess

# Real training, kept small: an MLP trains and evaluates in a few seconds.
# Unshifted images (max_shift 0): 20 steps are too few for the MLP to learn
# shifted digits, and these tests check that a run learns, not the shifts.
TINY = {
    "arch": "mlp",
    "steps": 20,
    "eval_every": 5,
    "train_subset": 1000,
    "batch_size": 32,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 0.01,
    "max_shift": 0,
}
LONG = {**TINY, "steps": 100_000, "eval_every": 1000}  # runs until cancelled or killed


@pytest.fixture
def start_server(tmp_path, data_dir):
    servers: list[ServerProcess] = []

    def start(
        db: Path | None = None, workers: int = 2, extra: list[str] = (), token: str | None = None
    ) -> ServerProcess:
        server = ServerProcess(db or tmp_path / "bnlab.db", data_dir, workers, extra, token)
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
