"""The process environment set before TensorFlow starts (issue #29): a quiet start-up
log on a machine without a GPU, and CUDA's persistent JIT cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bnlab.model import environment

# What TensorFlow writes at start-up on a machine without CUDA, none of it actionable.
NOISE = ("cuInit", "cudart_stub", "absl::InitializeLog", "cuda_platform", "cpu_feature_guard")
# Variables a developer's shell may set, which would decide what is under test.
SET_HERE = ("TF_CPP_MIN_LOG_LEVEL", "CUDA_CACHE_PATH", "CUDA_CACHE_MAXSIZE")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SET_HERE}
    return {**env, **extra}


@pytest.mark.skipif(
    environment.nvidia_driver_present(), reason="with a driver TensorFlow's warnings are kept"
)
def test_a_run_without_a_gpu_says_where_it_trains_and_nothing_else(data_dir, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnlab",
            "train",
            "--steps",
            "1",
            "--eval-every",
            "1",
            "--train-subset",
            "1000",
            "--arch",
            "mlp",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["bnlab train: training on CPU:0"], out.stderr
    assert not any(noise in out.stderr for noise in NOISE)


WORKER_VIEW = """
import json, os, sys
from bnlab.server.execution import worker  # what a spawned worker imports first
print(json.dumps({
    "tensorflow_loaded": "tensorflow" in sys.modules,
    **{name: os.environ.get(name) for name in %r},
}))
"""


def test_the_worker_sets_the_cuda_cache_before_tensorflow_starts(tmp_path):
    """CUDA reads its cache settings when TensorFlow initialises it: they must be in
    the worker's environment before its first `import tensorflow`."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_VIEW % (SET_HERE,)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(XDG_CACHE_HOME=str(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["tensorflow_loaded"] is False
    assert seen["CUDA_CACHE_PATH"] == str(tmp_path / "bnlab" / "cuda")  # the user's cache
    assert int(seen["CUDA_CACHE_MAXSIZE"]) == 4 * 1024**3  # CUDA's default 256 MiB is too small
    expected = environment.LOG_LEVEL_WITH_GPU if environment.nvidia_driver_present() else "3"
    assert seen["TF_CPP_MIN_LOG_LEVEL"] == expected


def test_settings_the_user_or_the_image_made_are_kept(monkeypatch):
    monkeypatch.setenv("CUDA_CACHE_PATH", "/var/cache/bnlab-cuda")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    environment.prepare()
    assert os.environ["CUDA_CACHE_PATH"] == "/var/cache/bnlab-cuda"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert str(environment.cuda_cache_dir()) == "/var/cache/bnlab-cuda"


def test_a_machine_with_a_driver_keeps_tensorflows_warnings(monkeypatch, tmp_path):
    """The PTX JIT warning (minutes of start-up on a new Hopper card) and "Cannot dlopen
    some GPU libraries" (training fell back to the CPU) are warnings: level 1 keeps them."""
    for name in SET_HERE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(environment, "nvidia_driver_present", lambda: True)
    hooks = list(sys.meta_path)
    environment.prepare()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == environment.LOG_LEVEL_WITH_GPU == "1"
    assert sys.meta_path == hooks  # nothing filters TensorFlow's import there
    assert (tmp_path / "bnlab" / "cuda").is_dir()  # the cache is ready for the driver
