"""Where training runs (issue #29), on a machine whose NVIDIA driver lists a GPU that
TensorFlow cannot see: a fake `nvidia-smi` lists one, and TensorFlow, asked for real
on this CPU machine, sees none (no CUDA libraries, no driver library). The server
says so in /api/health with the missing libraries and the fix, a worker given that
GPU fails its runs with the same reason instead of training on the CPU unnoticed,
and a server told to use the CPU trains there."""

from __future__ import annotations

import time
from typing import Any

from bnlab.model import cuda
from bnlab.server.testing import ServerProcess
from tests.server.samples import TINY
from tests.server.test_stacks import DESIGN, _stack_worker_pids


def known_devices(server: ServerProcess, timeout: float = 120) -> dict[str, Any]:
    """/api/health once the server has asked TensorFlow for its devices."""
    deadline = time.monotonic() + timeout
    while (health := server.get("/api/health").json())["tensorflow_devices"] is None:
        assert health["device_warning"] is None, health
        assert time.monotonic() < deadline, "the server never learnt TensorFlow's devices"
        time.sleep(0.2)
    return health


def test_a_gpu_tensorflow_cannot_see_is_reported_and_fails_runs_with_the_fix(
    start_server, fake_nvidia_smi
):
    server = start_server(workers=1)
    # A single run, in a worker process of its own given GPU 0 (started at once: its
    # start-up and the server's question to TensorFlow overlap).
    run = server.post("/api/runs", TINY).json()
    health = known_devices(server)
    # The driver's GPU is what the worker is given; TensorFlow's own devices say CPU.
    assert health["devices"] == ["GPU:0"] and health["tensorflow_devices"] == ["CPU"]
    warning = health["device_warning"]
    assert "the NVIDIA driver lists 1 GPU(s) but TensorFlow sees none" in warning
    assert cuda.DRIVER_LIBRARY in warning  # the first library missing here, with its fix
    assert warning in server.log.read_text()  # and the terminal is told too

    failed = server.wait_status(run["id"], "completed", "failed")
    assert failed["status"] == "failed" and failed["step"] == 0
    assert "TensorFlow sees none" in failed["error"] and cuda.DRIVER_LIBRARY in failed["error"]
    assert "--device cpu" in failed["error"]
    assert "Traceback" not in server.log.read_text()  # a reason, not a crash

    # An experiment's MLP runs: one stack, in a stack worker given GPU 0 too.
    design = {**DESIGN, "vary": {"learning_rate": [0.01]}, "seeds": 1}
    experiment_id = server.post("/api/experiments", design).json()["id"]
    deadline = time.monotonic() + 120
    while True:
        runs = server.get(f"/api/experiments/{experiment_id}").json()["runs"]
        if runs and all(r["status"] == "failed" for r in runs):
            break
        assert time.monotonic() < deadline, [r["status"] for r in runs]
        time.sleep(0.2)
    assert _stack_worker_pids(server)  # there, and waiting for the next stack
    assert all("TensorFlow sees none" in r["error"] for r in runs)


def test_the_cpu_chosen_trains_beside_a_gpu_tensorflow_cannot_see(start_server, fake_nvidia_smi):
    server = start_server(workers=1, extra=["--device", "cpu"])
    run = server.post("/api/runs", TINY).json()
    health = known_devices(server)
    assert health["devices"] == health["tensorflow_devices"] == ["CPU"]
    assert health["device_warning"] is None
    done = server.wait_status(run["id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["device"] == "CPU:0"
