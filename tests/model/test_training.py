import json
import math
import time

import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from bnlab.model import events as ev
from bnlab.model import kernels, training
from bnlab.model.config import MAX_EVALS, RunConfig
from bnlab.model.events import Cancelled, Diverged, EvalEvent, event_adapter
from bnlab.model.training import WindowSizer, _loss_and_accuracy, train


def tiny(**overrides) -> RunConfig:
    """A run small enough for a unit test on the real MNIST. Without diagnostics: they
    more than doubled a tiny CNN run's cost (its measures traced and taken at each
    evaluation), and training with them is training without them, to the bit
    (tests/model/test_diagnostics.py); the tests that check what a default run does
    ask for them."""
    return RunConfig(
        **{
            "steps": 30,
            "eval_every": 10,
            "train_subset": 2000,
            "batch_size": 32,
            "diagnostics": "off",
            **overrides,
        }
    )


DEFAULT_DIAGNOSTICS = RunConfig().diagnostics


def collect(config, mnist, should_stop=None):
    events = []
    try:
        result = train(config, events.append, should_stop, data=mnist)
    except (Diverged, Cancelled) as exc:
        result = exc
    return events, result


# The runs several tests compare against, each trained once per module with the default
# windows and nothing else changed: a CNN with BN, dropout and shifts (tiny()), and the
# one the resume tests interrupt. Each test that needs one trains its own second run.
REFERENCE_SEED = 4


@pytest.fixture(scope="module")
def reference_runs(mnist_small_eval):
    runs = {}

    def run(config: RunConfig):
        if config not in runs:
            runs[config] = collect(config, mnist_small_eval)
        return runs[config]

    return run


def test_a_run_reports_start_evals_progress_and_test_metrics(mnist_small_eval):
    config = tiny(steps=25, diagnostics=DEFAULT_DIAGNOSTICS)
    events, metrics = collect(config, mnist_small_eval)
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "test"
    # The start says which path each tuned gradient took (model.kernels).
    assert {op.split()[0] for op in events[0].kernels} == set(kernels.OPERATIONS)
    for op, path in events[0].kernels.items():
        assert path in kernels.OPERATIONS[op.split()[0]]
    evals = [e for e in events if e.type == "eval"]
    assert [e.step for e in evals] == [0, 10, 20, 25]  # step 0, every 10, and the last
    assert evals[0].train_loss is None and evals[0].val_loss == pytest.approx(math.log(10))
    assert all(e.train_loss > 0 and e.examples_per_sec > 0 for e in evals[1:])
    assert evals[-1].val_acc > 0.7 and evals[-1].val_loss < evals[0].val_loss
    assert all(e.probe.p15 <= e.probe.p50 <= e.probe.p85 for e in evals)
    progress = [e.step for e in events if e.type == "progress"]
    assert progress == sorted(progress) and progress[-1] == 25
    assert isinstance(metrics, ev.TestMetrics)
    assert events[-1].test_accuracy == metrics.test_accuracy > 0.7
    assert metrics.log_loss == pytest.approx(metrics.test_loss, rel=1e-3)
    for event in events:  # every event survives a JSON round trip
        assert event_adapter.validate_json(event.model_dump_json()) == event


def test_same_seed_gives_the_same_curve(mnist_small_eval, reference_runs):
    config = tiny(seed=REFERENCE_SEED)
    first, _ = reference_runs(config)
    second, _ = collect(config, mnist_small_eval)
    curve = [(e.step, e.val_loss, e.val_acc, e.train_loss) for e in first if e.type == "eval"]
    again = [(e.step, e.val_loss, e.val_acc, e.train_loss) for e in second if e.type == "eval"]
    assert curve == again


def test_bn_twin_differs_only_by_batch_norm(mnist_small_eval, reference_runs):
    bn, _ = reference_runs(tiny())
    plain, _ = collect(tiny().twin(), mnist_small_eval)
    assert bn[0].parameters != plain[0].parameters
    # identical starting weights in every shared layer, uniform logits: same step-0 loss
    assert bn[1].val_loss == plain[1].val_loss == pytest.approx(math.log(10))


@pytest.fixture
def single_steps(monkeypatch):
    """One update per compiled window: `should_stop` is asked before every step."""
    monkeypatch.setattr(training, "WINDOW_SECONDS", 0.0)


def test_should_stop_cancels_between_steps(mnist_small_eval, single_steps):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 12

    events, result = collect(tiny(), mnist_small_eval, should_stop)
    assert isinstance(result, Cancelled) and result.step == 12
    assert "test" not in [e.type for e in events]


def test_divergence_ends_the_run_with_its_curve_not_a_crash(mnist_small_eval):
    config = tiny(optimizer="sgd", learning_rate=1000, batch_norm=False)
    events, result = collect(config, mnist_small_eval)
    assert isinstance(result, Diverged)
    assert events[-1].type == "diverged" and events[-1].step == result.step
    assert any(isinstance(e, EvalEvent) for e in events)  # the curve so far
    assert json.loads(events[-1].model_dump_json())["loss"] is None  # NaN -> null


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_trains(optimizer, mnist):
    lr = {"sgd": 0.5, "momentum": 0.1, "adam": 0.01}[optimizer]
    _, metrics = collect(tiny(optimizer=optimizer, learning_rate=lr, arch="mlp", dropout=0), mnist)
    assert metrics.test_accuracy > 0.6, metrics


def test_log_loss_clips_probabilities_but_loss_does_not():
    logits = np.array([[0.0, 100.0], [5.0, 0.0]])
    labels = np.array([0, 0])
    loss, accuracy, log_loss = _loss_and_accuracy(logits, labels)
    assert loss == pytest.approx((100 + math.log1p(math.exp(-5))) / 2, rel=1e-9)
    assert log_loss == pytest.approx((-math.log(1e-15) + math.log1p(math.exp(-5))) / 2)
    assert accuracy == 0.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 10**12),
        ("learning_rate", float("nan")),
        ("learning_rate", -1),
        ("batch_size", 0),
        ("dropout", 1.0),
        ("eval_every", 0),
        ("arch", "resnet"),
        ("max_shift", -1),
        ("max_shift", 5),
        ("bogus", 1),
    ],
)
def test_out_of_range_configuration_names_the_field(field, value):
    with pytest.raises(ValidationError) as err:
        RunConfig(**{field: value})
    assert field in str(err.value)


def test_a_stored_config_means_what_it_meant_when_stored():
    config = RunConfig(max_shift=2, steps=300)
    assert RunConfig.from_stored(config.model_dump_json()) == config
    # Saved before max_shift existed: those runs trained on unshifted images.
    old = json.loads(config.model_dump_json())
    del old["max_shift"]
    assert RunConfig.from_stored(json.dumps(old)).max_shift == 0
    assert RunConfig().max_shift == 1


def test_max_shift_changes_the_images_trained_on(mnist_small_eval, reference_runs):
    shifted, _ = reference_runs(tiny())
    plain, _ = collect(tiny(max_shift=0), mnist_small_eval)
    curve = [e.val_loss for e in shifted if e.type == "eval"]
    unshifted = [e.val_loss for e in plain if e.type == "eval"]
    assert curve[0] == unshifted[0]  # same start
    assert curve[1:] != pytest.approx(unshifted[1:], rel=1e-4)


def test_evaluation_count_is_bounded():
    with pytest.raises(ValidationError, match="eval_every must be at least 101"):
        RunConfig(steps=100_000, eval_every=1)
    # The cap counts step 0's evaluation too: exactly MAX_EVALS fit, one more does not.
    assert len(RunConfig(steps=999, eval_every=1).eval_steps()) == MAX_EVALS
    with pytest.raises(ValidationError, match=r"1001 evaluations .*at least 2"):
        RunConfig(steps=1000, eval_every=1)
    assert RunConfig(steps=7, eval_every=3).eval_steps() == [0, 3, 6, 7]


@pytest.mark.parametrize("windows", ["single steps", "windows"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    windows, mnist_small_eval, reference_runs, tmp_path, monkeypatch
):
    config = tiny(seed=REFERENCE_SEED)  # 30 steps of a CNN with BN and dropout: all state matters
    whole, metrics = reference_runs(config)  # trained before the monkeypatching below

    if windows == "single steps":
        monkeypatch.setattr(training, "WINDOW_SECONDS", 0.0)
        stops = iter(range(10**6))
        should_stop = lambda: next(stops) >= 25  # noqa: E731
    else:
        # Windows of up to 4 updates; cancelled after the first window past step 20.
        monkeypatch.setattr(training, "MAX_WINDOW", 4)
        asked_after_20 = []

        def should_stop():
            if any(e.type == "eval" and e.step == 20 for e in events):
                asked_after_20.append(1)
            return len(asked_after_20) > 1

    events = []

    def on_event(event):
        events.append(event)

    try:
        train(config, on_event, should_stop, data=mnist_small_eval, checkpoint_dir=tmp_path)
    except Cancelled as exc:
        result = exc
    first = events
    assert isinstance(result, Cancelled)  # killed between checkpoints
    assert result.step == 25 if windows == "single steps" else 20 < result.step < 30
    second, resumed = collect_with(config, mnist_small_eval, tmp_path)
    assert second[0].first_step == 20  # the last checkpoint, taken at the step-20 eval
    before = [e for e in first if e.type == "eval"]
    after = [e for e in second if e.type == "eval"]
    # The checkpoint's evaluation is repeated (its first report may have been lost in
    # the crash) with the same numbers: the weights are the checkpoint's.
    assert after[0].step == before[-1].step == 20
    assert after[0].val_loss == pytest.approx(before[-1].val_loss, rel=1e-6)
    curve = before + after[1:]
    assert [e.step for e in curve] == [0, 10, 20, 30]  # no gap, no duplicated step
    reference = [e for e in whole if e.type == "eval"]
    for got, want in zip(curve, reference, strict=True):
        assert got.val_loss == pytest.approx(want.val_loss, rel=1e-5)
    assert resumed.test_loss == pytest.approx(metrics.test_loss, rel=1e-5)
    assert resumed.test_accuracy == pytest.approx(metrics.test_accuracy, abs=1e-4)
    elapsed = [e.elapsed for e in curve]
    assert elapsed == sorted(elapsed)  # time continues across the resume


def collect_with(config, mnist, checkpoint_dir, should_stop=None):
    events = []
    try:
        result = train(
            config, events.append, should_stop, data=mnist, checkpoint_dir=checkpoint_dir
        )
    except (Diverged, Cancelled) as exc:
        result = exc
    return events, result


def record_windows(monkeypatch) -> list[tuple[int, int, float]]:
    """(updates asked, updates done, seconds) of every compiled window a run calls."""
    calls = []
    run = training.Trainer.run

    def timed(self, first_step, count, loss_sum=0.0):
        tick = time.perf_counter()
        out = run(self, first_step, count, loss_sum)
        calls.append((count, out[0], time.perf_counter() - tick))
        return out

    monkeypatch.setattr(training.Trainer, "run", timed)
    return calls


def curve_of(events):
    return [(e.step, e.val_loss, e.val_acc, e.train_loss) for e in events if e.type == "eval"]


def test_windows_of_many_updates_train_exactly_as_single_steps(mnist_small_eval, monkeypatch):
    """Same batches, shifts, dropout masks and BN statistics whether the
    updates run one per call or many: the same curve, to the last bit."""
    config = tiny(steps=25, seed=6)  # CNN, BN, dropout, 1-pixel shifts
    calls = record_windows(monkeypatch)
    monkeypatch.setattr(training, "WINDOW_SECONDS", 0.0)
    singles, single_metrics = collect(config, mnist_small_eval)
    assert {asked for asked, _, _ in calls} == {1}
    calls.clear()
    monkeypatch.setattr(training, "WINDOW_SECONDS", 1000.0)
    windowed, window_metrics = collect(config, mnist_small_eval)
    # 1 (compiles), 1 (measures), then up to the next evaluation: 8, 10, 5.
    assert [asked for asked, _, _ in calls] == [1, 1, 8, 10, 5]
    assert curve_of(windowed) == curve_of(singles)
    assert window_metrics == single_metrics


def test_a_non_finite_loss_stops_the_window_at_its_exact_step(mnist_small_eval, monkeypatch):
    config = tiny(optimizer="sgd", learning_rate=1000, batch_norm=False)
    monkeypatch.setattr(training, "WINDOW_SECONDS", 0.0)
    singles, expected = collect(config, mnist_small_eval)
    assert isinstance(expected, Diverged)
    calls = record_windows(monkeypatch)
    monkeypatch.setattr(training, "WINDOW_SECONDS", 1000.0)
    windowed, result = collect(config, mnist_small_eval)
    assert isinstance(result, Diverged) and result.step == expected.step
    got, want = windowed[-1], singles[-1]
    assert got.type == want.type == "diverged" and got.step == want.step
    assert str(got.loss) == str(want.loss)  # the same non-finite value (nan != nan)
    asked, done, _ = calls[-1]
    assert done < asked  # it stopped inside a window, not at its end


def test_windows_last_about_the_target_time(mnist_small_eval, monkeypatch):
    """Cancel and progress are answered between windows: each lasts about
    WINDOW_SECONDS however cheap a step is (here ~1 ms: hundreds per window)."""
    config = tiny(arch="mlp", steps=3000, eval_every=3000, batch_size=16)
    calls = record_windows(monkeypatch)
    collect(config, mnist_small_eval)
    sized = [(asked, seconds) for asked, _, seconds in calls[2:] if asked > 1]
    assert max(asked for asked, _ in sized) > 20
    assert all(seconds < 4 * training.WINDOW_SECONDS for _, seconds in sized), sized


def test_window_size_follows_the_measured_step_time():
    sizer = WindowSizer(0.25)
    assert sizer.size() == 1
    sizer.observe(1, 5.0)  # the first call compiles: ignored
    assert sizer.size() == 1
    sizer.observe(1, 0.01)
    assert sizer.size() == 25
    sizer.observe(25, 0.75)  # the machine got slower: 30 ms a step
    assert sizer.size() == 12  # smoothed: 0.25 / 0.02
    fast, slow = WindowSizer(0.25), WindowSizer(0.25)
    for sizer, seconds in ((fast, 1e-9), (slow, 2.0)):
        sizer.observe(1, 1.0)
        sizer.observe(1, seconds)
    assert fast.size() == training.MAX_WINDOW
    assert slow.size() == 1  # never less than one update


def test_the_window_loop_never_waits_for_a_loss(mnist_small_eval):
    """On a GPU a while loop's condition runs on the host: one that read the loss
    would wait for the device at every step (issue #29). The traced condition may
    read only integer loop variables (the step counter), never a float."""
    trainer = training.Trainer(tiny(diagnostics=DEFAULT_DIAGNOSTICS), mnist_small_eval)
    graph = trainer._run_window.get_concrete_function().graph
    (loop,) = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    condition = graph._get_function(loop.get_attr("cond").name).graph
    read, pending = set(), list(condition.outputs)
    while pending:
        op = pending.pop().op
        if op.type == "Placeholder":
            read.add(op.outputs[0].dtype)
        pending.extend(op.inputs)
    assert read and read <= {tf.int32}
    assert "IsFinite" not in {op.type for op in condition.get_operations()}
