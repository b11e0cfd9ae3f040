"""What `make run` installs, read from make's dry run (`make -n -B`: every command it
would run, none run): on a machine whose NVIDIA driver lists a GPU (a fake
`nvidia-smi` here) TensorFlow's CUDA libraries too, as `bnlab[gpu]` (issue #29)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make here")


def installs(path: str, *variables: str) -> list[str]:
    """The `pip install` lines of `make run VARIABLES` with PATH `path`."""
    out = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "run", *variables],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [
        line.split("-e ", 1)[1] for line in out.splitlines() if "pip install --quiet -e" in line
    ]


@pytest.fixture
def driver_path(tmp_path) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"\n')
    script.chmod(0o755)
    return f"{tmp_path}:{os.environ['PATH']}"


def test_without_a_driver_make_run_installs_what_serving_needs():
    assert shutil.which("nvidia-smi") is None  # this machine: no NVIDIA driver
    assert installs(os.environ["PATH"]) == ["'.'"]
    assert installs(os.environ["PATH"], "RAY=1") == ["'.[ray]'"]
    assert installs(os.environ["PATH"], "GPU=1") == ["'.[gpu]'"]


def test_with_a_driver_make_run_installs_cuda_s_libraries_unless_told_not_to(driver_path):
    assert installs(driver_path) == ["'.[gpu]'"]
    assert installs(driver_path, "RAY=1") == ["'.[gpu,ray]'"]
    assert installs(driver_path, "GPU=0") == ["'.'"]
