"""The stack's per-machine choices (model.stack_paths): forced, timed once, cached."""

import json

import pytest

from bnlab.model import machine_cache, stack_paths
from bnlab.model.config import PAPER_MLP, RunConfig

MLP = RunConfig(**PAPER_MLP, diagnostics="off")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty per-user cache, nothing forced and nothing chosen yet in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(stack_paths.ENV_VAR, raising=False)
    monkeypatch.setattr(stack_paths, "_memo", {})
    return tmp_path


def stored(cache) -> dict:
    return json.loads((cache / "bnlab" / stack_paths.CACHE_FILE).read_text())


def test_the_environment_forces_choices(monkeypatch):
    monkeypatch.setenv(stack_paths.ENV_VAR, "xla=0, size=16,cnn=1")
    assert stack_paths.forced() == {"xla": 0, "size": 16, "cnn": 1}
    assert stack_paths.cnn_stacks()
    monkeypatch.setenv(stack_paths.ENV_VAR, "")
    assert stack_paths.forced() == {}


@pytest.mark.parametrize("value", ["xla=2", "size=0", "size=65", "size=x", "gpu=1", "xla"])
def test_a_bad_forced_choice_names_the_variable(value, monkeypatch):
    monkeypatch.setenv(stack_paths.ENV_VAR, value)
    with pytest.raises(ValueError, match=r"BNLAB_STACK_PATHS: .*xla=0\|1, size=1\.\.64"):
        stack_paths.forced()


def test_the_cnn_stacks_only_where_a_worker_timed_it_faster(fresh_cache, monkeypatch):
    assert not stack_paths.cnn_stacks()  # never timed: one run per worker
    assert RunConfig().stack_key() is None
    machine_cache.write(stack_paths.CACHE_FILE, stack_paths._cnn_key(), {"stacks": True})
    assert stack_paths.cnn_stacks()
    assert RunConfig().stack_key() == RunConfig(seed=3, learning_rate=0.1).stack_key()
    assert RunConfig().stack_key() is not None
    monkeypatch.setenv(stack_paths.ENV_VAR, "cnn=0")  # forced beats cached
    assert RunConfig().stack_key() is None


def test_a_stack_kind_is_timed_once_then_cached_per_machine(fresh_cache, monkeypatch):
    timed = []

    def fake_time(template, data, force):
        timed.append(template)
        return stack_paths.Choice(True, 32, {"size: xla=1 size=32": 1.0})

    def fake_cnn(batch):
        timed.append("cnn")
        machine_cache.write(stack_paths.CACHE_FILE, stack_paths._cnn_key(), {"stacks": False})

    monkeypatch.setattr(stack_paths, "_time_stack", fake_time)
    monkeypatch.setattr(stack_paths, "time_cnn", fake_cnn)
    choice = stack_paths.choose([MLP, MLP.model_copy(update={"seed": 1})], data=None)
    assert (choice.xla, choice.size) == (True, 32)
    assert timed == ["cnn", MLP]  # and the CNN, which nobody had timed yet
    [(key, value)] = [kv for kv in stored(fresh_cache).items() if "stack.cnn" not in kv[0]]
    assert machine_cache.cpu_model() in key and "mlp batch 60 bn 1" in key
    assert value == {"xla": True, "size": 32, "rates": {"size: xla=1 size=32": 1.0}}

    monkeypatch.setattr(stack_paths, "_memo", {})  # a new process: the file answers
    assert stack_paths.choose([MLP], data=None)[:2] == (True, 32)
    assert len(timed) == 2
    stack_paths.choose([MLP.twin()], data=None)  # another kind of stack is timed anew
    assert timed[-1] == MLP.twin() and len(timed) == 3
    monkeypatch.setenv(stack_paths.ENV_VAR, "size=8")  # forced beats cached
    assert stack_paths.choose([MLP], data=None)[:2] == (True, 8)


def test_forced_choices_are_not_timed(fresh_cache, monkeypatch):
    monkeypatch.setattr(stack_paths, "_time_stack", lambda *_: pytest.fail("forced"))
    monkeypatch.setattr(stack_paths, "time_cnn", lambda *_: pytest.fail("forced"))
    monkeypatch.setenv(stack_paths.ENV_VAR, "xla=0,size=4,cnn=0")
    assert stack_paths.choose([MLP], data=None)[:2] == (False, 4)


def test_timing_really_trains_each_size_and_keeps_the_largest_near_the_best(
    fresh_cache, monkeypatch, mnist_small_eval
):
    monkeypatch.setattr(stack_paths, "SIZES", (1, 2))
    monkeypatch.setattr(stack_paths, "ROUNDS", 2)
    monkeypatch.setattr(stack_paths, "SECONDS_PER_ROUND", 0.02)
    choice = stack_paths._time_stack(MLP, mnist_small_eval, {"xla": 0})
    assert not choice.xla
    assert set(choice.rates) == {"size: xla=0 size=1", "size: xla=0 size=2"}
    assert all(rate > 0 for rate in choice.rates.values())
    best = max(choice.rates.values())
    near = [s for s in (1, 2) if choice.rates[f"size: xla=0 size={s}"] >= 0.9 * best]
    assert choice.size == max(near)


def test_the_cnn_verdict_is_timed_and_read_back_without_tensorflow(fresh_cache):
    verdict = stack_paths.time_cnn(batch=2)  # the real convolutions, a tiny batch
    [(key, value)] = stored(fresh_cache).items()
    assert key == stack_paths._cnn_key() and value["stacks"] is verdict
    assert set(value["seconds"]) == {"grouped", "separate"} and value["batch"] == 2
    assert stack_paths.cnn_stacks() is verdict
