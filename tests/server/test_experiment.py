"""The experiment design: validation naming the field, expansion into twins, status, presets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bnlab.model.config import RunConfig
from bnlab.server.experiments.design import (
    MAX_RUNS,
    PRESETS,
    ExperimentCreate,
    ExperimentStatus,
    experiment_status,
)
from bnlab.server.experiments.statistics import MIN_PAIRS
from bnlab.server.status import RunStatus


def refused(body: dict) -> tuple[tuple, str]:
    """(loc, message) of the one error `body` gets."""
    with pytest.raises(ValidationError) as info:
        ExperimentCreate.model_validate(body)
    (error,) = info.value.errors()
    return error["loc"], error["msg"]


# --- expansion ---------------------------------------------------------------------------


def test_cells_times_seeds_times_twins():
    design = ExperimentCreate(
        base={"arch": "mlp", "steps": 300, "eval_every": 100},
        vary={"learning_rate": [0.01, 0.1], "init_scale": [1, 10]},
        seeds=3,
    )
    runs = design.runs()
    assert len(runs) == 4 * 3 * 2
    assert design.cells() == [
        {"learning_rate": 0.01, "init_scale": 1.0},
        {"learning_rate": 0.01, "init_scale": 10.0},
        {"learning_rate": 0.1, "init_scale": 1.0},
        {"learning_rate": 0.1, "init_scale": 10.0},
    ]
    for bn, no_bn in zip(runs[::2], runs[1::2], strict=True):
        assert (bn.arm, no_bn.arm) == ("bn", "no_bn")
        assert bn.factors == no_bn.factors and bn.seed == no_bn.seed
        assert no_bn.config == bn.config.twin() and bn.config.batch_norm
        assert bn.config.seed == bn.seed
        assert {k: getattr(bn.config, k) for k in bn.factors} == bn.factors
        assert (bn.config.arch, bn.config.steps, bn.config.eval_every) == ("mlp", 300, 100)
    assert [r.seed for r in runs[:6]] == [0, 0, 1, 1, 2, 2]


def test_without_vary_one_cell_of_the_base():
    design = ExperimentCreate(base={"steps": 50, "eval_every": 10}, seeds=2)
    assert design.cells() == [{}]
    assert [r.config for r in design.runs()] == [
        RunConfig(steps=50, eval_every=10, seed=0),
        RunConfig(steps=50, eval_every=10, seed=0, batch_norm=False),
        RunConfig(steps=50, eval_every=10, seed=1),
        RunConfig(steps=50, eval_every=10, seed=1, batch_norm=False),
    ]


def test_values_are_stored_as_the_run_field_holds_them():
    design = ExperimentCreate(vary={"learning_rate": [1, 0.5]})
    assert design.vary == {"learning_rate": [1.0, 0.5]}
    assert all(isinstance(v, float) for v in design.vary["learning_rate"])


def test_default_seeds_can_give_a_verdict():
    assert ExperimentCreate().seeds == MIN_PAIRS


# --- bad designs: every kind, each naming its field ---------------------------------


# Every kind of bad design: (body, the field it names, words its message holds).
# test_experiments_api.py posts each one to a real server too.
BAD_DESIGNS = [
    ({"vary": {"depth": [1, 2]}}, ("vary",), ["depth", "not a run field"]),
    ({"vary": {"seed": [1, 2]}}, ("vary",), ["seed", "seeds"]),
    ({"vary": {"batch_norm": [True]}}, ("vary",), ["batch_norm", "with and without"]),
    ({"vary": {"learning_rate": []}}, ("vary",), ["learning_rate", "1 to 8"]),
    ({"vary": {"learning_rate": [0.1 * i for i in range(1, 10)]}}, ("vary",), ["1 to 8"]),
    ({"vary": {"learning_rate": [0.1, 0.2, 0.1]}}, ("vary",), ["learning_rate", "twice"]),
    ({"vary": {"learning_rate": [1, 1.0]}}, ("vary",), ["learning_rate", "twice"]),
    ({"vary": {"learning_rate": [5000]}}, ("vary",), ["learning_rate", "5000", "1000"]),
    ({"vary": {"learning_rate": ["fast"]}}, ("vary",), ["learning_rate", "'fast'"]),
    ({"vary": {"activation": ["gelu"]}}, ("vary",), ["activation", "'gelu'"]),
    ({"vary": {"init_scale": [0.0001]}}, ("vary",), ["init_scale", "0.001"]),
    (
        {"vary": {"steps": [100, 100_000]}, "base": {"eval_every": 10}},
        ("vary",),
        ["steps", "eval_every", "1000"],
    ),
    (
        {"vary": {"steps": [100_000], "eval_every": [10]}},
        ("vary",),
        ["steps=100000", "eval_every=10"],
    ),
    (
        {"vary": {"learning_rate": [0.1], "dropout": [0.1], "arch": ["mlp"]}},
        ("vary",),
        ["at most 2"],
    ),
    (
        {"base": {"learning_rate": 0.1}, "vary": {"learning_rate": [0.2]}},
        ("vary",),
        ["learning_rate", "base"],
    ),
    ({"base": {"seed": 3}}, ("base", "seed"), ["seeds"]),
    ({"base": {"batch_norm": False}}, ("base", "batch_norm"), ["with and without"]),
    ({"base": {"learning_rate": -1}}, ("base", "learning_rate"), ["greater than 0"]),
    ({"base": {"depth": 3}}, ("base", "depth"), ["Extra inputs"]),
    ({"seeds": 0}, ("seeds",), ["greater than or equal to 1"]),
    ({"seeds": 21}, ("seeds",), ["less than or equal to 20"]),
    ({"seeds": "3"}, ("seeds",), ["integer"]),
    ({"colour": "red"}, ("colour",), ["Extra inputs"]),
]


@pytest.mark.parametrize(("body", "loc", "words"), BAD_DESIGNS)
def test_bad_designs_are_refused_naming_the_field(body, loc, words):
    got_loc, message = refused(body)
    assert got_loc == loc
    for word in words:
        assert word in message, message


def test_more_than_max_runs_is_refused_with_the_count():
    body = {"vary": {"learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, "seeds": 17}
    loc, message = refused(body)
    assert loc == ("seeds",) and "204 runs" in message and str(MAX_RUNS) in message
    # exactly the limit is fine: 5 cells x 20 seeds x 2
    fine = ExperimentCreate(vary={"learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5]}, seeds=20)
    assert len(fine.runs()) == MAX_RUNS


def test_bounds_come_from_run_config_only():
    """A value refused in vary is refused with RunConfig's own words, and the edge is its edge."""
    with pytest.raises(ValidationError) as direct:
        RunConfig(dropout=1.0)
    _, message = refused({"vary": {"dropout": [0.0, 1.0]}})
    assert direct.value.errors()[0]["msg"] in message
    assert ExperimentCreate(vary={"init_scale": [0.001, 1000]}).vary["init_scale"][-1] == 1000.0


# --- status -----------------------------------------------------------------------------

Q, R, C = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED
F, X, D, N = RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DIVERGED, RunStatus.INTERRUPTED


@pytest.mark.parametrize(
    ("statuses", "status"),
    [
        ([Q, Q, Q, Q], ExperimentStatus.QUEUED),
        ([R, Q, Q, Q], ExperimentStatus.RUNNING),
        ([C, Q, Q, Q], ExperimentStatus.RUNNING),  # one ended, the rest still to come
        ([C, D, F, R], ExperimentStatus.RUNNING),
        ([C, D, F, C], ExperimentStatus.COMPLETED),  # whatever each run's outcome
        ([C, X, X, X], ExperimentStatus.CANCELLED),
        ([C, C, N, N], ExperimentStatus.INTERRUPTED),
        ([C, X, N, X], ExperimentStatus.INTERRUPTED),  # resumable wins
        ([C, C, Q, Q], ExperimentStatus.RUNNING),  # resumed: its runs queued again
        (["completed", "diverged"], ExperimentStatus.COMPLETED),
    ],
)
def test_status_from_run_statuses(statuses, status):
    assert experiment_status(statuses) == status


def test_status_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        experiment_status([])


# --- presets ----------------------------------------------------------------------------


def test_one_preset_per_claim():
    assert list(PRESETS) == [
        "speed",
        "learning-rate",
        "initialization",
        "saturating",
        "regularization",
    ]
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.title and preset.hypothesis.endswith(".")


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_design_posts_back_as_it_is_served(name):
    design = PRESETS[name].design
    served = PRESETS[name].model_dump(mode="json")["design"]
    assert "seed" not in served["base"] and "batch_norm" not in served["base"]
    assert not set(served["vary"]) & set(served["base"])
    again = ExperimentCreate.model_validate(served)
    assert again.runs() == design.runs()
    assert design.seeds >= MIN_PAIRS and len(design.runs()) <= MAX_RUNS
    assert again.claim == design.claim


def test_every_preset_states_its_claim_with_the_contrast_that_tests_it():
    kinds = {
        name: [c.kind for c in preset.design.claim.contrasts] for name, preset in PRESETS.items()
    }
    assert kinds == {
        "speed": ["milestone"],
        "learning-rate": ["sensitivity", "divergence"],
        "initialization": ["sensitivity"],
        "saturating": ["interaction", "interaction"],
        "regularization": ["cross_cell"],
    }
    (speed,) = PRESETS["speed"].design.claim.contrasts
    assert speed.accuracy == 0.97 and speed.expect == "less"
    saturating = PRESETS["saturating"].design.claim.contrasts
    assert [(c.level, c.reference) for c in saturating] == [("sigmoid", "relu"), ("tanh", "relu")]
    (regularization,) = PRESETS["regularization"].design.claim.contrasts
    assert (regularization.minuend.cell, regularization.minuend.arm) == ({"dropout": 0.0}, "bn")
    assert regularization.subtrahend.cell == {"dropout": 0.5}
    assert regularization.subtrahend.arm == "no_bn"


# --- the claim and the margin in the design (issue #26) ----------------------------------

ACTIVATIONS = {"vary": {"activation": ["relu", "tanh"]}}


def claimed(*contrasts: dict) -> dict:
    return {**ACTIVATIONS, "claim": {"statement": "BN helps", "contrasts": list(contrasts)}}


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (
            claimed({"kind": "effect", "cell": {"activation": "sigmoid"}}),
            ("claim", "contrasts", 0, "cell", "activation"),
            ["'sigmoid'", "relu", "tanh"],
        ),
        (
            claimed({"kind": "effect", "cell": {"activation": "relu"}}, {"kind": "effect"}),
            ("claim", "contrasts", 1, "cell"),
            ["activation"],
        ),
        (
            claimed({"kind": "interaction", "factor": "dropout", "level": 0, "reference": 1}),
            ("claim", "contrasts", 0, "factor"),
            ["'dropout'", "not varied"],
        ),
        (
            claimed({"kind": "sensitivity", "factor": "activation", "at": {"dropout": 0.1}}),
            ("claim", "contrasts", 0, "at"),
            ["dropout", "not varied"],
        ),
        (
            claimed({"kind": "telepathy"}),
            ("claim", "contrasts", 0),
            ["telepathy"],
        ),
        (
            {**ACTIVATIONS, "claim": {"statement": " ", "contrasts": [{"kind": "effect"}]}},
            ("claim", "statement"),
            ["say what"],
        ),
        ({"margin": 0}, ("margin",), ["greater than 0"]),
        ({"margin": 0.5}, ("margin",), ["0.05"]),
    ],
)
def test_a_claim_that_does_not_fit_the_design_is_refused_naming_the_field(body, loc, words):
    got_loc, message = refused(body)
    assert got_loc == loc
    for word in words:
        assert word in message, message


def test_a_fitting_claim_and_a_margin_are_kept():
    design = ExperimentCreate.model_validate(
        {**claimed({"kind": "effect", "cell": {"activation": "tanh"}}), "margin": 0.01}
    )
    assert design.margin == 0.01 and design.claim.contrasts[0].cell == {"activation": "tanh"}
    assert ExperimentCreate().margin == 0.005 and ExperimentCreate().claim is None
