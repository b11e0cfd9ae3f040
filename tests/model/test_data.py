import gzip
import http.server
import os
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from bnlab.model import data
from bnlab.model.data import (
    FILES,
    BatchOrder,
    DataError,
    ensure_files,
    load_mnist,
    resolve_data_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def raw_labels(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=8)


def test_split_is_the_classic_tutorial_split(mnist, data_dir):
    assert mnist.train.images.shape == (55_000, 28, 28, 1)
    assert mnist.validation.images.shape == (5_000, 28, 28, 1)
    assert mnist.test.images.shape == (10_000, 28, 28, 1)
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == np.float32
        assert split.images.min() >= 0.0 and split.images.max() == 1.0
        assert set(np.unique(split.labels)) == set(range(10))
    labels = raw_labels(data_dir / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(mnist.validation.labels, labels[:5000])
    np.testing.assert_array_equal(mnist.train.labels, labels[5000:])


def test_train_subset_takes_the_first_training_images(mnist, data_dir):
    small = load_mnist(data_dir, download=False, train_subset=1000)
    assert len(small.train) == 1000
    np.testing.assert_array_equal(small.train.images, mnist.train.images[:1000])
    assert len(small.validation) == 5000 and len(small.test) == 10_000


def test_data_dir_flag_beats_env_beats_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("BNLAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == tmp_path / "cache" / "bnlab" / "mnist"


def copy_of(data_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in FILES:
        (target / name).write_bytes((data_dir / name).read_bytes())
    return target


def test_truncated_file_is_reported_not_loaded(data_dir, tmp_path):
    copy = copy_of(data_dir, tmp_path / "m")
    victim = copy / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load_mnist(copy, download=False)
    assert str(victim) in str(err.value)


def test_missing_files_name_the_directory_and_the_files(data_dir, tmp_path):
    copy = copy_of(data_dir, tmp_path / "m")
    (copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        ensure_files(copy, download=False)
    assert str(copy) in str(err.value)
    assert "train-labels-idx1-ubyte.gz" in str(err.value)
    assert "train-images" not in str(err.value)


class Mirror:
    """A real HTTP server on loopback serving a directory, standing in for a mirror."""

    def __init__(self, root: Path) -> None:
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(data_dir):
    server = Mirror(data_dir)
    yield server
    server.close()


def test_missing_files_are_downloaded_with_progress_and_verified(mirror, monkeypatch, tmp_path):
    dead = "http://127.0.0.1:9/"  # nothing listens on the discard port: the next mirror is tried
    monkeypatch.setattr(data, "MIRRORS", (dead, mirror.url))
    seen: dict[str, int] = {}

    def progress(name, total):
        seen[name] = 0
        assert total is not None and total > 0

        def update(n):
            seen[name] += n

        return update

    target = ensure_files(tmp_path / "fresh", progress=progress)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    # readable by everyone, like any data directory, not private like a temp file
    assert {(target / name).stat().st_mode & 0o777 for name in FILES} == {0o644}
    assert seen == {name: (target / name).stat().st_size for name in FILES}
    assert len(load_mnist(target, download=False).test) == 10_000


def test_download_with_wrong_bytes_is_rejected_and_leaves_nothing(mirror, monkeypatch, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILES:
        (bad / name).write_bytes(b"not mnist")
    bad_mirror = Mirror(bad)
    try:
        monkeypatch.setattr(data, "MIRRORS", (bad_mirror.url,))
        target = tmp_path / "fresh"
        with pytest.raises(DataError, match="sha256") as err:
            ensure_files(target, progress=lambda name, total: lambda n: None)
        assert str(target) in str(err.value)
        assert list(target.iterdir()) == []  # no half-written or wrong file left
    finally:
        bad_mirror.close()


def test_batch_order_is_a_pure_function_of_the_seed():
    a, b, c = BatchOrder(1000, 64, seed=7), BatchOrder(1000, 64, seed=7), BatchOrder(1000, 64, 8)
    steps = [0, 1, 15, 16, 40, 3]  # out of order on purpose: no hidden state
    for step in steps:
        np.testing.assert_array_equal(a.indices(step), b.indices(step))
    assert not np.array_equal(a.indices(0), c.indices(0))


def test_each_epoch_is_a_fresh_permutation():
    order = BatchOrder(100, 10, seed=1)
    epoch0 = np.concatenate([order.indices(s) for s in range(10)])
    epoch1 = np.concatenate([order.indices(s) for s in range(10, 20)])
    assert sorted(epoch0) == list(range(100)) and sorted(epoch1) == list(range(100))
    assert not np.array_equal(epoch0, epoch1)


def test_batches_wrap_across_epochs_when_sizes_do_not_divide():
    order = BatchOrder(10, 4, seed=3)
    seen = np.concatenate([order.indices(s) for s in range(5)])  # 20 = two epochs exactly
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


def test_a_window_of_batches_is_the_batches_of_its_steps():
    """The training loop gathers a window of batches at once: the same batches,
    in the same order, as step by step, across epoch boundaries (n=10, batch 4)."""
    order, fresh = BatchOrder(10, 4, seed=3), BatchOrder(10, 4, seed=3)
    window = order.window(3, 7)  # steps 3..9: positions 12..39, epochs 1 to 3
    assert window.shape == (7, 4) and window.dtype == np.int32
    for row, step in zip(window, range(3, 10), strict=True):
        np.testing.assert_array_equal(row, fresh.indices(step))
    positions = window.reshape(-1)  # 28 positions from 12: the rest of epoch 1, 2 and 3
    assert sorted(positions[8:18]) == list(range(10))  # epoch 2 whole, a permutation


@pytest.mark.parametrize("url", ["example.com/mnist/", "http://[::1/", "http://localhost:abc/"])
def test_a_malformed_mirror_is_a_data_error_not_a_crash(url, monkeypatch, tmp_path):
    monkeypatch.setenv(data.MIRRORS_ENV_VAR, url)
    with pytest.raises(DataError, match="could not be downloaded") as err:
        ensure_files(tmp_path / "fresh", progress=lambda name, total: lambda n: None)
    assert str(tmp_path / "fresh") in str(err.value)


def test_a_mirror_that_is_not_http_is_a_data_error(monkeypatch, tmp_path):
    # A server that answers HTTP with garbage: http.client raises BadStatusLine.
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-not-a-web-server\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        monkeypatch.setenv(data.MIRRORS_ENV_VAR, f"http://127.0.0.1:{listener.getsockname()[1]}/")
        with pytest.raises(DataError, match="could not be downloaded"):
            ensure_files(tmp_path / "fresh", progress=lambda name, total: lambda n: None)
    finally:
        listener.close()


def test_an_unreadable_file_is_a_data_error(data_dir, tmp_path):
    copy = copy_of(data_dir, tmp_path / "m")
    victim = copy / "t10k-labels-idx1-ubyte.gz"
    victim.unlink()
    # A regular file that fails every read with EIO (root reads a chmod 000 file).
    victim.symlink_to("/proc/self/mem")
    with pytest.raises(DataError, match="cannot be read") as err:
        ensure_files(copy, download=False)
    assert str(victim) in str(err.value)


def fetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m bnlab.model.data`, the step `make test` runs before the tests."""
    return subprocess.run(
        [sys.executable, "-m", "bnlab.model.data", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_make_tests_fetch_step_downloads_through_the_loader(mirror, tmp_path):
    """A fresh machine: no MNIST, BNLAB_DATA_DIR pointing at an empty directory,
    a mirror reachable. The step fetches the four verified files, with progress."""
    fresh = tmp_path / "mnist"
    out = fetch(
        env={"BNLAB_DATA_DIR": str(fresh), "BNLAB_MIRRORS": f"http://127.0.0.1:9/,{mirror.url}"}
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == fresh
    assert sorted(p.name for p in fresh.iterdir()) == sorted(FILES)
    assert ensure_files(fresh, download=False) == fresh  # checksums hold
    assert "t10k-images-idx3-ubyte.gz" in out.stderr and "100%" in out.stderr  # the progress bars
    again = fetch(env={"BNLAB_DATA_DIR": str(fresh), "BNLAB_MIRRORS": "http://127.0.0.1:9/"})
    assert again.returncode == 0 and again.stderr == ""  # present: nothing fetched


def test_offline_fetch_step_never_downloads_and_says_why(mirror, tmp_path):
    """CI runs the step with --offline: a missing file is an error, not a download."""
    empty = tmp_path / "mnist"
    empty.mkdir()
    out = fetch("--offline", env={"BNLAB_DATA_DIR": str(empty), "BNLAB_MIRRORS": mirror.url})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert str(empty) in out.stderr and "train-images-idx3-ubyte.gz" in out.stderr
    assert list(empty.iterdir()) == []


def test_ci_verifies_and_a_fresh_machine_fetches_before_the_tests():
    """The Makefile wiring: `make test` fetches MNIST before pytest, offline under CI."""
    for ci, flag in (("", ""), ("true", " --offline")):
        plan = subprocess.run(
            ["make", "--dry-run", "test", f"CI={ci}", "BIN=venv/bin"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        lines = [line.rstrip() for line in plan]
        fetch = lines.index(f"venv/bin/python -m bnlab.model.data{flag}")
        tests = next(
            i for i, line in enumerate(lines) if line.startswith("venv/bin/python -m pytest")
        )
        assert fetch < tests


def test_eval_subset_keeps_a_prefix_of_validation_and_test(mnist, data_dir):
    small = load_mnist(data_dir, download=False, eval_subset=500)
    for split, full in ((small.validation, mnist.validation), (small.test, mnist.test)):
        assert len(split) == 500
        np.testing.assert_array_equal(split.images, full.images[:500])
        np.testing.assert_array_equal(split.labels, full.labels[:500])
    np.testing.assert_array_equal(small.train.labels, mnist.train.labels)  # training untouched


def test_eval_subset_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv(data.EVAL_SUBSET_ENV_VAR, "7000")  # more than validation has: all of it
    loaded = load_mnist(data_dir, download=False)
    assert (len(loaded.validation), len(loaded.test)) == (5000, 7000)
    for bad in ("0", "-5", "many", "1.5"):
        monkeypatch.setenv(data.EVAL_SUBSET_ENV_VAR, bad)
        with pytest.raises(DataError, match=data.EVAL_SUBSET_ENV_VAR):
            load_mnist(data_dir, download=False)
