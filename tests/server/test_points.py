"""The CSV table of points (bnlab.server.storage.points.PointCsv): the diagnostics flattened
into one column per single value, named by its path, for whatever layers the exported
points have."""

from __future__ import annotations

from bnlab.model.events import EvalPoint, ProbePercentiles
from bnlab.server.storage.points import POINT_COLUMNS, PointCsv
from tests.server.samples import sample_diagnostics

SCALARS = [c for c in POINT_COLUMNS if c != "diagnostics"]


def point(step: int, diagnostics=None) -> EvalPoint:
    return EvalPoint(
        step=step,
        val_loss=0.5,
        val_acc=0.9,
        train_loss=None,
        examples_per_sec=1000.0,
        elapsed=1.5,
        probe=ProbePercentiles(p15=-1.0, p50=0.0, p85=1.0),
        diagnostics=diagnostics,
    )


def test_points_without_diagnostics_keep_the_columns_they_always_had():
    table = PointCsv([point(0), point(10)])
    assert table.columns == SCALARS
    assert list(table.rows()) == [
        [0, 0.5, 0.9, None, 1000.0, 1.5, -1.0, 0.0, 1.0],
        [10, 0.5, 0.9, None, 1000.0, 1.5, -1.0, 0.0, 1.0],
    ]


def test_every_single_value_of_the_diagnostics_has_a_column_named_by_its_path():
    diagnostics = sample_diagnostics(bn=True, full=True, layers=("conv1", "fc1"))
    table = PointCsv([point(0, diagnostics)])
    layer = [
        *(f"pre_bn.{p}" for p in ("p15", "p50", "p85")),
        *(f"pre_activation.{p}" for p in ("p15", "p50", "p85")),
        "grad_norm",
        "weight_norm",
        "effective_step",
        "bn_gap",
        "ics_distance",
        "ics_cosine",
    ]
    assert table.columns == [
        *SCALARS,
        "diagnostics.level",
        *(f"diagnostics.layers.conv1.{c}" for c in layer),
        *(f"diagnostics.layers.fc1.{c}" for c in layer),
        "diagnostics.val_acc_batch_stats",
        "diagnostics.val_acc_moving_stats",
        "diagnostics.landscape.loss_range",
        "diagnostics.landscape.grad_predictiveness",
        "diagnostics.landscape.beta_smoothness",
    ]
    [row] = table.rows()
    values = dict(zip(table.columns, row, strict=True))
    fc1 = diagnostics.layers[1]
    assert values["diagnostics.level"] == "full"
    assert values["diagnostics.layers.fc1.pre_bn.p85"] == fc1.pre_bn.p85
    assert values["diagnostics.layers.fc1.effective_step"] == fc1.effective_step
    assert values["diagnostics.layers.conv1.ics_cosine"] == diagnostics.layers[0].ics_cosine
    assert values["diagnostics.landscape.beta_smoothness"] == 3.0
    assert values["diagnostics.val_acc_batch_stats"] == 0.85


def test_the_columns_cover_the_layers_of_every_point_and_missing_ones_are_empty():
    # An MLP run without BN, a CNN run with it, and a run stored before diagnostics.
    mlp = point(0, sample_diagnostics(bn=False, layers=("fc1", "fc2")))
    cnn = point(0, sample_diagnostics(bn=True, layers=("conv1", "fc1")))
    table = PointCsv([mlp, cnn, point(0)])
    layers = [c.split(".")[2] for c in table.columns if c.startswith("diagnostics.layers.")]
    assert list(dict.fromkeys(layers)) == ["fc1", "fc2", "conv1"]
    assert not any(c.startswith("diagnostics.landscape") for c in table.columns)  # basic only
    mlp_row, cnn_row, old_row = (dict(zip(table.columns, r, strict=True)) for r in table.rows())
    assert mlp_row["diagnostics.layers.conv1.grad_norm"] is None
    assert mlp_row["diagnostics.layers.fc1.pre_bn.p50"] is None  # no BN: nothing before it
    assert mlp_row["diagnostics.layers.fc2.grad_norm"] == 1.5
    assert cnn_row["diagnostics.layers.conv1.pre_bn.p50"] == 2.0
    assert cnn_row["diagnostics.layers.fc2.weight_norm"] is None
    assert {old_row[c] for c in table.columns if c.startswith("diagnostics.")} == {None}
    assert old_row["val_acc"] == 0.9
