"""A run's default label: what the legend shows when the user gave none."""

from bnlab.model.config import RunConfig
from bnlab.server.runs.service import default_label


def test_a_runs_default_label_shows_the_knobs_only_when_set():
    assert default_label(RunConfig()) == "BN · cnn · adagrad 0.01"
    tuned = RunConfig(arch="mlp", activation="tanh", init_scale=10, batch_norm=False)
    assert default_label(tuned) == "no-BN · mlp tanh · adagrad 0.01 · init scale 10"
