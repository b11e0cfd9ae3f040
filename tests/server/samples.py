"""What the server tests train and read: small run configurations, the release 0.1.0
database, and made-up diagnostics. Plain values and functions, imported by the
tests that use them (the fixtures are in conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
