"""Server fixtures: real BN Lab servers (bnlab.server.testing) with a real SQLite file
and real worker processes training on the real MNIST."""

from __future__ import annotations

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
