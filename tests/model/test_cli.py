import json
import os
import re
import subprocess
import sys

import pytest

BNLAB = [sys.executable, "-m", "server.cli"]


def bnlab(*args, env=None, timeout=300):
    return subprocess.run(
        [*BNLAB, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_train_prints_the_seed_log_and_learns(data_dir):
    """The issue's own bar: 400 steps on the full MNIST, validation accuracy > 0.95."""
    out = bnlab("train", "--steps", "400", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Training..."
    evals = [re.fullmatch(
        r"step (\d+): validation loss = (\d+\.\d{4}), validation accuracy = (\d\.\d{4})", line
    ) for line in lines[1:4]]  # fmt: skip
    assert all(evals), lines
    assert [int(m[1]) for m in evals] == [0, 200, 400]
    assert evals[0][2] == "2.3026"
    assert float(evals[-1][3]) > 0.95
    assert lines[4] == "Testing..."
    assert re.fullmatch(
        r"test loss = \d\.\d{4}, test accuracy = 0\.9\d{3}, multiclass log loss = \d\.\d{4}",
        lines[5],
    )
    assert len(lines) == 6
    assert "Traceback" not in out.stderr


def test_json_prints_one_event_per_line(data_dir):
    out = bnlab("train", "--steps", "6", "--eval-every", "3", "--train-subset", "500",
                "--no-bn", "--arch", "mlp", "--json", "--data-dir", str(data_dir))  # fmt: skip
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "test"
    assert [e["step"] for e in events if e["type"] == "eval"] == [0, 3, 6]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--lr", "-1"], "--lr"),
        (["--steps", "0"], "--steps"),
        (["--batch-size", "100000"], "--batch-size"),
        (["--dropout", "1.5"], "--dropout"),
        (["--eval-every", "1", "--steps", "100000"], "--eval-every"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(args, flag):
    out = bnlab("train", *args)
    assert out.returncode == 2
    assert flag in out.stderr and "Traceback" not in out.stderr


def test_missing_data_is_one_clear_message(tmp_path):
    empty = tmp_path / "mnist"
    empty.mkdir()
    # no network here, and the loopback discard port makes that true anywhere
    out = bnlab("train", "--steps", "5", "--data-dir", str(empty),
                env={"BNLAB_MIRRORS": "http://127.0.0.1:9/"})  # fmt: skip
    assert out.returncode == 1
    assert str(empty) in out.stderr and "train-images-idx3-ubyte.gz" in out.stderr
    assert "Traceback" not in out.stderr
