import json
import multiprocessing

import pytest
import tensorflow as tf

from bnlab.model import kernels

DENSE = {
    "tf": lambda kernel, dy: tf.matmul(dy, kernel, transpose_b=True),
    "relayout": lambda kernel, dy: tf.transpose(tf.matmul(kernel, dy, transpose_b=True)),
}
SHAPES = [(6, 4), (3, 4)]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty per-user cache and no choices made yet in this process, choosing as on
    a CPU (where paths are timed) also on a host with a GPU."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.setattr(kernels, "_memo", {})
    monkeypatch.setattr(kernels, "on_gpu", lambda: False)
    return tmp_path


def test_a_gpu_keeps_cudnns_paths_untimed(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "on_gpu", lambda: True)
    monkeypatch.setattr(kernels, "_time", lambda *_: pytest.fail("a GPU's paths are not timed"))
    with kernels.recording() as chosen:
        assert kernels.choose("dense.dx", SHAPES, DENSE) == kernels.REFERENCE
    assert chosen == {"dense.dx 6x4 3x4": kernels.REFERENCE}


def test_the_fastest_candidate_is_timed_once_then_cached_per_machine_and_shape(
    fresh_cache, monkeypatch
):
    timed = []

    def fake_time(candidates, shapes):
        timed.append(shapes)
        return {"tf": 2.0, "relayout": 1.0}

    monkeypatch.setattr(kernels, "_time", fake_time)
    with kernels.recording() as chosen:
        assert kernels.choose("dense.dx", SHAPES, DENSE) == "relayout"
    assert chosen == {"dense.dx 6x4 3x4": "relayout"}
    stored = json.loads((fresh_cache / "bnlab" / kernels.CACHE_FILE).read_text())
    [(key, path)] = stored.items()
    assert path == "relayout"
    assert kernels.cpu_model() in key and tf.__version__ in key and "6x4 3x4" in key

    monkeypatch.setattr(kernels, "_memo", {})  # a new process: the file answers
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "relayout"
    assert len(timed) == 1
    kernels.choose("dense.dx", [(6, 4), (5, 4)], DENSE)  # another shape is timed anew
    assert len(timed) == 2


def test_an_alternative_must_be_clearly_faster_than_the_reference(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "_time", lambda *_: {"tf": 1.0, "relayout": 0.98})
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "tf"  # within timing noise


def test_timing_really_runs_every_candidate(fresh_cache):
    seconds = kernels._time(DENSE, SHAPES)
    assert set(seconds) == {"tf", "relayout"} and all(s > 0 for s in seconds.values())


def test_the_environment_forces_paths(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "_time", lambda *_: pytest.fail("a forced path is not timed"))
    monkeypatch.setenv(kernels.ENV_VAR, "tf")
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "tf"
    monkeypatch.setenv(kernels.ENV_VAR, "dense.dx=relayout, conv2d.dx=tf")
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "relayout"


@pytest.mark.parametrize("value", ["fastest", "dense.dx=forward", "conv3d.dx=tf"])
def test_a_bad_forced_path_names_the_variable_and_the_choices(value, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, value)
    with pytest.raises(ValueError, match=r"BNLAB_KERNELS: .*dense\.dx=tf\|relayout"):
        kernels.forced()


def test_unknown_shapes_take_the_reference_without_timing(fresh_cache, monkeypatch):
    monkeypatch.setattr(kernels, "_time", lambda *_: pytest.fail("nothing to time"))
    assert kernels.choose("dense.dx", [(6, 4), (None, 4)], DENSE) == "tf"


def test_a_read_only_cache_only_costs_a_re_timing(fresh_cache, monkeypatch):
    (fresh_cache / "bnlab").write_text("not a directory")
    monkeypatch.setattr(kernels, "_time", lambda *_: {"tf": 1.0, "relayout": 2.0})
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "tf"


def test_each_thread_pool_size_times_its_own_choice(fresh_cache, monkeypatch):
    # One run of two at once on 2 cores has one thread, a run alone two: the fastest
    # path for one thread may not be the fastest for two.
    monkeypatch.setattr(kernels, "intra_op_threads", lambda: 1)
    monkeypatch.setattr(kernels, "_time", lambda *_: {"tf": 1.0, "relayout": 2.0})
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "tf"
    monkeypatch.setattr(kernels, "intra_op_threads", lambda: 2)
    monkeypatch.setattr(kernels, "_time", lambda *_: {"tf": 2.0, "relayout": 1.0})
    assert kernels.choose("dense.dx", SHAPES, DENSE) == "relayout"
    stored = json.loads((fresh_cache / "bnlab" / kernels.CACHE_FILE).read_text())
    assert sorted((" 1 thread(s) " in key, path) for key, path in stored.items()) == [
        (False, "relayout"),
        (True, "tf"),
    ]
    assert kernels.chosen_paths() == {"dense.dx 6x4 3x4": "relayout"}  # the latest choice


def _write_many(worker: int) -> None:
    for i in range(40):
        kernels._write_cache(f"worker {worker} choice {i}", "tf")


def test_choices_written_at_once_by_several_workers_all_survive(fresh_cache):
    """Workers started together time their kernels and write the cache at the same
    moment; without the lock one worker's read-modify-write drops another's choice."""
    context = multiprocessing.get_context("fork")  # no TensorFlow op runs in the children
    workers = [context.Process(target=_write_many, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(kernels._read_cache()) == 4 * 40
