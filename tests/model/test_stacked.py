"""A stack of runs (model.stacked) trains each run as it would train alone."""

import pytest

from bnlab.model import events as ev
from bnlab.model import stacked
from bnlab.model.config import PAPER_MLP, RunConfig
from bnlab.model.data import load_mnist
from bnlab.model.events import Cancelled, Diverged, TrainingPath
from bnlab.model.stacked import train_stack
from bnlab.model.training import train

STEPS, EVAL_EVERY = 50, 25


def mlp(**overrides) -> RunConfig:
    """The paper's MLP (SGD, batch 60, no dropout, no shifts) for a few steps."""
    fields = {
        **PAPER_MLP,
        "steps": STEPS,
        "eval_every": EVAL_EVERY,
    }
    return RunConfig(**fields | overrides)


# Both arms, two seeds, two learning rates; and a model that diverges at step 4 alone
# (ReLU, no BN, SGD 1000): the others must not notice it.
ARMS = [
    mlp(seed=s, batch_norm=bn, learning_rate=lr)
    for s, lr in ((1, 0.5), (2, 0.1))
    for bn in (True, False)
]
DIVERGING = mlp(seed=3, batch_norm=False, activation="relu", learning_rate=1000.0)
STACK = [*ARMS, DIVERGING]


def collect_stack(configs, mnist, **kwargs):
    events = {i: [] for i in range(len(configs))}
    outcomes = train_stack(configs, lambda i, e: events[i].append(e), data=mnist, **kwargs)
    return events, outcomes


def collect_alone(config, mnist):
    events = []
    try:
        result = train(config, events.append, data=mnist)
    except Diverged as exc:
        result = exc
    return events, result


@pytest.fixture(scope="module")
def stack_run(mnist_small_eval):
    return collect_stack(STACK, mnist_small_eval)


def _evals(events):
    return [e for e in events if e.type == "eval"]


@pytest.mark.parametrize("index", range(len(ARMS)))
def test_a_stacked_model_follows_its_run_alone(index, stack_run, mnist_small_eval):
    events, outcomes = stack_run
    alone, metrics = collect_alone(STACK[index], mnist_small_eval)
    ours = events[index]
    assert [e.type for e in ours if e.type != "progress"] == [
        e.type for e in alone if e.type != "progress"
    ]
    start = ours[0]
    assert start.path is TrainingPath.STACKED and start.stack_size == len(STACK)
    assert start.parameters == alone[0].parameters and alone[0].path is TrainingPath.SINGLE
    for mine, theirs in zip(_evals(ours), _evals(alone), strict=True):
        assert mine.step == theirs.step
        assert mine.val_loss == pytest.approx(theirs.val_loss, rel=1e-5)
        assert mine.val_acc == pytest.approx(theirs.val_acc, abs=2e-3)  # one image of 500
        assert (mine.train_loss is None) == (theirs.train_loss is None)
        if mine.train_loss is not None:
            assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-5)
        assert mine.probe.p50 == pytest.approx(theirs.probe.p50, rel=1e-4, abs=1e-5)
        # `basic` diagnostics, the single run's own code on the model's weights and slots.
        for a, b in zip(mine.diagnostics.layers, theirs.diagnostics.layers, strict=True):
            assert a.name == b.name
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
            assert a.weight_norm == pytest.approx(b.weight_norm, rel=1e-5)
            assert a.effective_step == pytest.approx(b.effective_step, rel=1e-4)
            assert (a.bn_gap is None) == (b.bn_gap is None)
            if a.bn_gap is not None:
                assert a.bn_gap == pytest.approx(b.bn_gap, rel=1e-4, abs=1e-6)
            # Sampled from the stack's one pass of all models, through compiled functions
            # shared by the models of a view: each model's own units and edges still.
            for mine_d, theirs_d in ((a.pre_bn, b.pre_bn), (a.pre_activation, b.pre_activation)):
                assert (mine_d is None) == (theirs_d is None)
                if mine_d is not None:
                    assert mine_d.edges == pytest.approx(theirs_d.edges)
                    assert mine_d.p50 == pytest.approx(theirs_d.p50, rel=1e-4, abs=1e-5)
                    # A value on a bin's edge may fall either side of it in float rounding.
                    assert (
                        sum(abs(x - y) for x, y in zip(mine_d.counts, theirs_d.counts, strict=True))
                        <= 4
                    )
        moving = (mine.diagnostics.val_acc_moving_stats, theirs.diagnostics.val_acc_moving_stats)
        assert (moving[0] is None) == (moving[1] is None)
        if moving[0] is not None:
            assert moving[0] == pytest.approx(moving[1], abs=2.5e-3)  # one image of 480
    assert isinstance(outcomes[index], ev.TestMetrics)
    assert outcomes[index].test_loss == pytest.approx(metrics.test_loss, rel=1e-5)
    assert ours[-1].type == "test" and ours[-1].test_loss == outcomes[index].test_loss


def test_a_diverging_model_stops_alone_at_its_own_step(stack_run, mnist_small_eval):
    events, outcomes = stack_run
    _, result = collect_alone(DIVERGING, mnist_small_eval)
    assert isinstance(result, Diverged)
    diverged = len(STACK) - 1
    assert isinstance(outcomes[diverged], Diverged) and outcomes[diverged].step == result.step
    assert events[diverged][-1].type == "diverged" and events[diverged][-1].step == result.step
    assert "test" not in [e.type for e in events[diverged]]
    # Its progress stops with it; the others' goes on to the end.
    assert all(e.step <= result.step for e in events[diverged] if e.type == "progress")
    assert all(isinstance(outcomes[i], ev.TestMetrics) for i in range(len(ARMS)))


def test_cancel_stops_every_model_of_the_stack(mnist_small_eval, monkeypatch):
    monkeypatch.setattr(stacked, "WINDOW_SECONDS", 0.0)  # one update per window
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 7

    configs = [mlp(seed=s, diagnostics="off") for s in (5, 6)]
    events = {0: [], 1: []}
    outcomes = train_stack(
        configs, lambda i, e: events[i].append(e), should_stop, data=mnist_small_eval, xla=False
    )
    assert [type(o) for o in outcomes] == [Cancelled, Cancelled]
    assert [o.step for o in outcomes] == [7, 7]
    assert all("test" not in [e.type for e in evs] for evs in events.values())


def test_a_resumed_stack_ends_as_an_uninterrupted_one(mnist_small_eval, tmp_path, monkeypatch):
    configs = [
        mlp(seed=7, diagnostics="off", steps=30, eval_every=10),
        mlp(
            seed=8, steps=30, eval_every=10, batch_norm=False, learning_rate=0.2, diagnostics="off"
        ),
    ]
    _, uninterrupted = collect_stack(configs, mnist_small_eval)
    monkeypatch.setattr(stacked, "WINDOW_SECONDS", 0.0)
    steps = []

    def stop_after_15() -> bool:
        steps.append(1)
        return len(steps) > 15

    _, cancelled = collect_stack(
        configs, mnist_small_eval, checkpoint_dir=tmp_path, should_stop=stop_after_15
    )
    assert all(isinstance(o, Cancelled) and o.step == 15 for o in cancelled)
    monkeypatch.setattr(stacked, "WINDOW_SECONDS", 0.25)
    resumed, outcomes = collect_stack(configs, mnist_small_eval, checkpoint_dir=tmp_path)
    for i in range(len(configs)):
        assert resumed[i][0].type == "start" and resumed[i][0].first_step == 10
        assert [e.step for e in _evals(resumed[i])] == [10, 20, 30]
        assert outcomes[i].test_loss == pytest.approx(uninterrupted[i].test_loss, rel=1e-6)


def test_runs_that_differ_in_schedule_do_not_stack(mnist_small_eval):
    assert mlp(seed=1).stack_key() == mlp(seed=2, learning_rate=5.0, dropout=0.2).stack_key()
    assert mlp().stack_key() != mlp(steps=STEPS + 1).stack_key()
    # BN and no-BN can share a stack (the trainer selects per model), but the scheduler
    # keeps them apart: two stacks measured faster.
    assert mlp().stack_key() != mlp(batch_norm=False).stack_key()
    # The CNN trains alone where grouped convolutions were not timed faster (forced off
    # for the suite, tests/conftest.py; model.stack_paths).
    assert RunConfig().stack_key() is None
    with pytest.raises(ValueError, match="share"):
        train_stack([mlp(), mlp(batch_size=32)], data=mnist_small_eval)


def test_a_stack_of_nothing_is_nothing():
    assert train_stack([]) == []


def test_a_stack_larger_than_the_machines_size_trains_in_parts(stack_run, mnist_small_eval):
    """More runs than the machine's stack size (model.stack_paths) train as parts of
    that size, one after the other; each part's runs end before the next part starts."""
    configs = [c.model_copy(update={"diagnostics": "off"}) for c in STACK[:3]]
    heard = []
    outcomes = train_stack(
        configs,
        lambda i, e: heard.append((i, e.type, getattr(e, "stack_size", None))),
        data=mnist_small_eval,
        size=2,
        xla=False,
        on_outcome=lambda i, outcome: heard.append((i, "outcome", None)),
    )
    assert [(i, size) for i, kind, size in heard if kind == "start"] == [(0, 2), (1, 2), (2, 1)]
    assert heard.index((1, "outcome", None)) < heard.index((2, "start", 1))
    whole = stack_run[1]
    for i in range(len(configs)):
        assert outcomes[i].test_loss == pytest.approx(whole[i].test_loss, rel=1e-5)


# The seed CNN (Adagrad 0.01, dropout 0.5, shifts of a pixel) at a small batch on a
# small training subset, for a few steps: its grouped convolutions under XLA are slow on
# a CPU (model.stack_paths), and what is checked is that each model is its run alone.
CNN = {"batch_size": 16, "steps": 4, "eval_every": 2, "train_subset": 256}
# XLA's grouped convolutions sum in another order than a run alone's, and the CNN's
# first Adagrad steps (its loss rises from 2.3 to about 4.7) amplify that rounding to
# about 1e-4 relative; a wrong batch, shift or dropout mask moves the loss by percents.
CNN_REL = 1e-3
# The diagnostics are the most sensitive: at step 2 the first convolution's gradient
# norm matched its run alone to 2e-6, at step 4 (val loss 1e-4 apart) to 0.55 %, the
# median of a layer's values to 0.14 % (seed 1, BN; by hand).
CNN_DIAGNOSTICS_REL = 1e-2


def test_a_stacked_cnn_follows_its_runs_alone(mnist_small_eval, data_dir):
    # Both arms in one stack (the trainer selects per model): one XLA compilation of
    # the slow grouped convolutions instead of two.
    configs = [
        RunConfig(**CNN, seed=1, batch_norm=True, diagnostics="basic"),
        RunConfig(**CNN, seed=2, batch_norm=False, diagnostics="basic"),
    ]
    events, outcomes = collect_stack(configs, mnist_small_eval, xla=True)
    # A run alone with a training subset reads only those images (the stack indexes
    # the same first ones of the whole set).
    subset = load_mnist(data_dir, download=False, train_subset=CNN["train_subset"], eval_subset=500)
    for i, config in enumerate(configs):
        alone, metrics = collect_alone(config, subset)
        ours = events[i]
        assert ours[0].path is TrainingPath.STACKED and ours[0].stack_size == 2
        assert ours[0].parameters == alone[0].parameters
        for mine, theirs in zip(_evals(ours), _evals(alone), strict=True):
            assert mine.step == theirs.step
            assert mine.val_loss == pytest.approx(theirs.val_loss, rel=CNN_REL)
            if mine.train_loss is not None:
                assert mine.train_loss == pytest.approx(theirs.train_loss, rel=CNN_REL)
            assert mine.probe.p50 == pytest.approx(theirs.probe.p50, rel=1e-3, abs=1e-4)
            assert (mine.diagnostics is None) == (theirs.diagnostics is None)
            if mine.diagnostics is None:
                continue
            for a, b in zip(mine.diagnostics.layers, theirs.diagnostics.layers, strict=True):
                assert a.name == b.name
                assert a.grad_norm == pytest.approx(b.grad_norm, rel=CNN_DIAGNOSTICS_REL)
                assert a.weight_norm == pytest.approx(b.weight_norm, rel=1e-5)
                assert (a.pre_bn is None) == (b.pre_bn is None)
                assert a.pre_activation.p50 == pytest.approx(
                    b.pre_activation.p50, rel=CNN_DIAGNOSTICS_REL, abs=1e-4
                )
        assert outcomes[i].test_loss == pytest.approx(metrics.test_loss, rel=CNN_REL)
