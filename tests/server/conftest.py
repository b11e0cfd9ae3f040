"""Server fixtures: real BN Lab servers (bnlab.server.testing) with a real SQLite file
and real worker processes training on the real MNIST."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bnlab.server.testing import ServerProcess
from tests.conftest import small_evaluations

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
    # Measuring costs each worker seconds of tracing; the service tests are about the
    # service, and test_diagnostics turns it on where it is the subject.
    "diagnostics": "off",
}
LONG = {**TINY, "steps": 100_000, "eval_every": 1000}  # runs until cancelled or killed


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


RELEASE_SQL = Path(__file__).parents[1] / "fixtures" / "release-0.1.0.sql"


def load_release_db(path: Path) -> Path:
    """A database file exactly as release 0.1.0 left it: runs of every status, a
    comparison, null points (tests/fixtures/make_release_db.py made the dump)."""
    db = sqlite3.connect(path)
    db.executescript(RELEASE_SQL.read_text(encoding="utf-8"))
    db.close()
    return path


def release_dump() -> sqlite3.Connection:
    """What release 0.1.0 wrote, read straight from the dump: the expected values."""
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.executescript(RELEASE_SQL.read_text(encoding="utf-8"))
    return db


@pytest.fixture
def release_db(tmp_path) -> Path:
    return load_release_db(tmp_path / "release.db")


def sample_diagnostics(*, bn: bool = True, full: bool = False, layers=("fc1", "fc2")):
    """Diagnostics as an evaluation records them (bnlab.model.events), with made-up values."""
    from bnlab.model.events import Diagnostics, Distribution, Landscape, LayerDiagnostics

    def distribution(shift: float) -> Distribution:
        return Distribution(
            p15=shift - 1.0,
            p50=shift,
            p85=shift + 1.0,
            edges=[shift - 2.0, shift - 1.0, shift, shift + 1.0, shift + 2.0],
            counts=[1, 5, 3, 1],
        )

    return Diagnostics(
        level="full" if full else "basic",
        layers=[
            LayerDiagnostics(
                name=name,
                pre_bn=distribution(2.0 + i) if bn else None,
                pre_activation=distribution(0.1 * i),
                grad_norm=0.5 + i,
                weight_norm=4.0 + i,
                effective_step=0.01 / (4.0 + i) ** 2,
                bn_gap=0.2 + i if bn else None,
                ics_distance=0.3 + i if full else None,
                ics_cosine=0.9 if full else None,
            )
            for i, name in enumerate(layers)
        ],
        val_acc_batch_stats=0.85 if bn else None,
        val_acc_moving_stats=0.84 if bn else None,
        landscape=Landscape(
            step_multiples=[0.5, 1.0, 2.0, 4.0],
            losses=[0.9, 0.8, 0.85, 1.2],
            grad_changes=[0.1, 0.2, 0.5, 1.5],
            loss_range=0.4,
            grad_predictiveness=1.5,
            beta_smoothness=3.0,
        )
        if full
        else None,
    )
