"""What `make run` installs, read from make's dry run (`make -n -B`: every command it
would run, none run): on a machine whose NVIDIA driver lists a GPU (a fake
`nvidia-smi` here) TensorFlow's CUDA libraries too, as `bnlab[gpu]` (issue #29)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make here")


def installs(*variables: str) -> list[str]:
    """The `pip install` lines of `make run VARIABLES` into a new virtualenv (a checkout's
    own .venv may hold the test tools already, and then `make run` installs nothing)."""
    out = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "run", "VENV=.venv-never-made", *variables],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [
        line.split("-e ", 1)[1] for line in out.splitlines() if "pip install --quiet -e" in line
    ]


def test_without_a_driver_make_run_installs_what_serving_needs():
    assert shutil.which("nvidia-smi") is None  # this machine: no NVIDIA driver
    assert installs() == ["'.'"]
    assert installs("RAY=1") == ["'.[ray]'"]
    assert installs("GPU=1") == ["'.[gpu]'"]


def test_with_a_driver_make_run_installs_cuda_s_libraries_unless_told_not_to(fake_nvidia_smi):
    assert installs() == ["'.[gpu]'"]
    assert installs("RAY=1") == ["'.[gpu,ray]'"]
    assert installs("GPU=0") == ["'.'"]
