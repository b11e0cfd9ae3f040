"""The header says where training runs (issue #29): TensorFlow's own devices, and a
warning naming the missing CUDA libraries when the NVIDIA driver lists a GPU that
TensorFlow cannot see (a fake `nvidia-smi` here; TensorFlow, asked for real, sees
none). Real browser, real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from bnlab.model import cuda
from bnlab.server.testing import ServerProcess


@pytest.fixture
def driver_server(fake_nvidia_smi, data_dir, tmp_path) -> Iterator[ServerProcess]:
    """A server whose NVIDIA driver lists a GPU TensorFlow cannot see. A fixture, asked
    for before the page: it stops after the page has closed."""
    with ServerProcess(tmp_path / "bnlab.db", data_dir, workers=1) as server:
        yield server


def test_the_header_warns_of_a_gpu_tensorflow_cannot_see(driver_server, open_page):
    page = open_page(driver_server.url + "/")
    # Shown once the server has asked TensorFlow (seconds after its start): the page
    # asks again until then.
    warning = page.get_by_test_id("device-warning")
    expect(warning).to_be_visible(timeout=120_000)
    expect(warning).to_contain_text("the NVIDIA driver lists 1 GPU(s) but TensorFlow sees none")
    expect(warning).to_contain_text(cuda.DRIVER_LIBRARY)
    # TensorFlow's devices, not the driver's GPU:0 the worker is given.
    expect(page.get_by_test_id("health")).to_contain_text("CPU · 1 workers")
    expect(page.get_by_test_id("health")).not_to_contain_text("GPU")


def test_no_warning_where_tensorflow_sees_what_the_driver_lists(page):
    expect(page.get_by_test_id("health")).to_contain_text("CPU")
    warning = page.get_by_test_id("device-warning")
    expect(warning).to_have_count(1)
    expect(warning).to_be_hidden()
