"""Where training runs and what it reproduces (issue #29): what configure() sets, on a
fake GPU list (no machine here has a GPU), and the message naming CUDA's missing
libraries."""

from __future__ import annotations

import pytest
import tensorflow as tf

from bnlab.model import cuda, device

FAKE_GPU = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")


@pytest.fixture
def applied(monkeypatch) -> dict[str, list]:
    """What configure() asks of TensorFlow, recorded instead of applied: the real
    calls are process-wide (op determinism) and want a real GPU (memory growth)."""
    calls: dict[str, list] = {"growth": [], "determinism": [], "tf32": []}
    experimental = tf.config.experimental
    monkeypatch.setattr(
        experimental, "set_memory_growth", lambda gpu, on: calls["growth"].append((gpu, on))
    )
    monkeypatch.setattr(
        experimental, "enable_op_determinism", lambda: calls["determinism"].append(True)
    )
    monkeypatch.setattr(
        experimental, "enable_tensor_float_32_execution", lambda on: calls["tf32"].append(on)
    )
    monkeypatch.setattr(
        experimental, "tensor_float_32_execution_enabled", lambda: calls["tf32"][-1:] != [False]
    )
    return calls


def fake_gpus(monkeypatch, gpus: list) -> None:
    real = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda kind=None: list(gpus) if kind == "GPU" else real(kind),
    )


def test_a_gpu_trains_reproducibly_with_growth_determinism_and_no_tf32(monkeypatch, applied):
    fake_gpus(monkeypatch, [FAKE_GPU])
    report = device.configure()
    assert report.device == "GPU:0" and report.gpus == (FAKE_GPU.name,)
    assert applied == {"growth": [(FAKE_GPU, True)], "determinism": [True], "tf32": [False]}
    assert report.reproducible and not report.tensor_float_32
    assert "GPU:0" in report.describe() and "op determinism on" in report.describe()


def test_a_gpu_may_trade_reproducibility_for_speed(monkeypatch, applied):
    fake_gpus(monkeypatch, [FAKE_GPU])
    report = device.configure(reproducible=False)
    assert applied["determinism"] == [] and applied["tf32"] == []
    assert not report.reproducible and report.tensor_float_32


def test_the_cpu_needs_no_determinism_switch_and_says_it_sees_no_gpu(monkeypatch, applied):
    fake_gpus(monkeypatch, [])
    report = device.configure()
    assert applied == {"growth": [], "determinism": [], "tf32": []}
    assert report.device == "CPU:0" and report.gpus == () and report.reproducible
    assert report.describe() == "training on CPU:0: TensorFlow sees no GPU"


def test_tensorflow_gpus_are_tensorflows_own(monkeypatch):
    fake_gpus(monkeypatch, [FAKE_GPU])
    assert device.tensorflow_gpus() == [FAKE_GPU.name]


def test_this_machine_lacks_the_driver_library():
    # No NVIDIA driver here: its library is the first thing the message names.
    assert cuda.missing_libraries()[0] == cuda.DRIVER_LIBRARY


def test_a_gpu_tensorflow_cannot_see_is_named_with_its_fix():
    missing = ["libcudart.so.12", "libcudnn.so.9"]
    message = cuda.gpu_missing_message(["0", "1"], [], missing)
    assert "lists 2 GPU(s) but TensorFlow sees none" in message
    assert "libcudart.so.12, libcudnn.so.9" in message and "pip install 'bnlab[gpu]'" in message
    assert "GPU access" in cuda.gpu_missing_message(["0"], [], [cuda.DRIVER_LIBRARY])
    assert "TF_CPP_MIN_LOG_LEVEL=0" in cuda.gpu_missing_message(["0"], [], [])
    assert "only 1" in cuda.gpu_missing_message(["0", "1"], ["/physical_device:GPU:0"], [])


@pytest.mark.parametrize(("driver", "seen"), [([], []), (["0"], ["/physical_device:GPU:0"])])
def test_no_message_when_tensorflow_sees_what_the_driver_lists(driver, seen):
    assert cuda.gpu_missing_message(driver, seen, cuda.missing_libraries()) is None


def test_libraries_in_the_nvidia_wheels_count_as_present(monkeypatch, tmp_path):
    # TensorFlow loads the pip wheels' libraries from site-packages/nvidia/*/lib,
    # off the system's library path.
    for name in cuda.RUNTIME_LIBRARIES:
        (tmp_path / name).touch()
    monkeypatch.setattr(cuda, "_wheel_library_dirs", lambda: [tmp_path])
    assert cuda.missing_libraries() == [cuda.DRIVER_LIBRARY]
