import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_refuses_to_measure_a_cpu():
    """bench.gpu must never record CPU numbers as GPU ones."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "sees no GPU" in proc.stderr
    assert "Throughput" not in proc.stdout  # nothing measured, nothing written
