"""`bnlab experiment`: a real tiny experiment in worker processes, and bad designs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnlab.model.config import PAPER_MLP
from bnlab.server.execution.placement import cores_for
from bnlab.server.experiments.analysis import analyze
from bnlab.server.experiments.design import PRESETS
from bnlab.server.experiments.local import DesignError, load_design, print_table
from bnlab.server.experiments.statistics import RunResult
from bnlab.server.testing import session_pids

TINY_MLP = {**PAPER_MLP, "steps": 60, "eval_every": 20, "train_subset": 1000, "diagnostics": "off"}


def bnlab(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "bnlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )


def test_a_tiny_experiment_runs_every_twin_and_reports_each_cell(tmp_path, data_dir):
    design = tmp_path / "tiny.json"
    design.write_text(
        json.dumps({"label": "tiny", "base": TINY_MLP, "vary": {"init_scale": [1, 10]}, "seeds": 2})
    )
    out = bnlab("experiment", str(design), "--json", "--workers", "2", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    runs = [RunResult.model_validate(r) for r in result["runs"]]
    # every cell x seed x arm once, all trained to the end
    assert sorted((r.factors["init_scale"], r.seed, r.arm) for r in runs) == sorted(
        (scale, seed, arm) for scale in (1.0, 10.0) for seed in (0, 1) for arm in ("bn", "no_bn")
    )
    assert {r.status for r in runs} == {"completed"}
    assert all(0 <= r.test_accuracy <= 1 for r in runs)
    cells = result["cells"]
    assert [c["factors"] for c in cells] == [{"init_scale": 1.0}, {"init_scale": 10.0}]
    for cell in cells:
        scale = cell["factors"]["init_scale"]
        acc = {(r.arm, r.seed): r.test_accuracy for r in runs if r.factors["init_scale"] == scale}
        assert cell["arms"]["bn"]["n_finished"] == cell["arms"]["no_bn"]["n_finished"] == 2
        # the difference is paired by seed, from the very runs listed
        paired = [acc["bn", s] - acc["no_bn", s] for s in (0, 1)]
        assert cell["effect"]["difference"]["mean"] == pytest.approx(np.mean(paired))
        assert cell["effect"]["verdict"] == "not_enough_seeds"
        # evaluations at 0, 20, 40, 60, each over both seeds
        curve = cell["arms"]["bn"]["curve"]
        assert [(p["step"], p["n"]) for p in curve] == [(0, 2), (20, 2), (40, 2), (60, 2)]


def test_the_table_has_a_row_and_a_sentence_per_cell():
    runs = [
        RunResult(factors={"dropout": d}, seed=s, arm=arm, status="completed", test_accuracy=acc)
        for d in (0.0, 0.5)
        for s in range(7)
        for arm, acc in (("bn", 0.97 + 0.001 * s), ("no_bn", 0.96))
    ]
    runs[1] = runs[1].model_copy(update={"status": "diverged", "test_accuracy": None})
    runs[3] = runs[3].model_copy(update={"status": "failed", "test_accuracy": None})
    out = io.StringIO()
    design = load_design(PRESETS["regularization"].name, None, None)
    print_table(analyze(design, runs), design, 90.0, out)
    text = out.getvalue()
    assert "regularization: 48 runs in 1.5 min" in text
    # seven seeds: enough for two cells after Holm's correction (2/2**7 < 0.05/2)
    assert text.count("bn_better") == 2 and "dropout=0.5" in text
    assert "BN better" in text and "n = 7 seed pairs" in text
    assert "after Holm's correction over 2 cells" in text
    # dropout=0.0 lost seed 1's pair to a failure; its diverged twin still counts
    assert "n = 6 seed pairs" in text
    assert "Diverged: BN 0, no-BN 1." in text
    assert "Without a result (failed or stopped): BN 0, no-BN 1." in text


def test_overrides_apply_to_a_preset():
    design = load_design("learning-rate", 6, 300)
    assert design.seeds == 6 and design.base.steps == 300
    assert {r.config.steps for r in design.runs()} == {300}


@pytest.mark.parametrize(
    ("name", "seeds", "steps", "words"),
    [
        ("nope", None, None, ["DESIGN", "'nope'", "speed"]),
        ("speed", 0, None, ["--seeds", "greater than or equal to 1"]),
        ("speed", None, 0, ["--steps", "greater than or equal to 1"]),
        ("speed", None, 100_000, ["eval_every", "steps=100000"]),
    ],
)
def test_bad_designs_name_the_flag(name, seeds, steps, words):
    with pytest.raises(DesignError) as info:
        load_design(name, seeds, steps)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"vary": {"seed": [1, 2]}}', ["vary", "seed"]),
        ('{"base": {"learning_rate": -1}}', ["base.learning_rate", "greater than 0"]),
        ("not json", ["DESIGN", "cannot read"]),
        ("[1, 2]", ["DESIGN", "JSON object"]),
    ],
)
def test_bad_design_files_name_the_field(tmp_path, content, words):
    path = tmp_path / "design.json"
    path.write_text(content)
    with pytest.raises(DesignError) as info:
        load_design(str(path), None, None)
    for word in words:
        assert word in str(info.value)


def test_a_bad_design_is_one_line_on_the_command_line():
    out = bnlab("experiment", "speed", "--seeds", "21")
    assert out.returncode == 2
    assert out.stderr.startswith("bnlab experiment: error: --seeds:")
    assert "Traceback" not in out.stderr
    out = bnlab("experiment", "speed", "--workers", "0")
    assert out.returncode == 2 and "--workers" in out.stderr and "Traceback" not in out.stderr


def _pool_workers(proc: subprocess.Popen) -> list[int]:
    """The pool's workers among the processes of `proc`'s session: each titles itself
    once placed (forked from a fork server, they are not `proc`'s own children)."""
    found = []
    for pid in session_pids(proc):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "bnlab-pool":
                found.append(pid)
        except OSError:  # gone meanwhile
            continue
    return found


def _loaded_tensorflow(pid: int) -> bool:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_stops_the_runs_and_the_workers(tmp_path, data_dir):
    design = tmp_path / "long.json"
    design.write_text(json.dumps({"base": {**TINY_MLP, "steps": 100_000, "eval_every": 1000}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnlab", "experiment", str(design), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    workers: list[int] = []
    while len([w for w in workers if _loaded_tensorflow(w)]) < 2:
        assert time.monotonic() < deadline, "the workers never started training"
        time.sleep(0.2)
        workers = [p for p in _pool_workers(proc) if _loaded_tensorflow(p)]
    time.sleep(3)  # into the first steps
    # Two at once, each on cores of its own (server.worker.cores_for: one each on 2 cores).
    placed = sorted(sorted(os.sched_getaffinity(w)) for w in workers)
    usable = os.sched_getaffinity(0)
    assert placed == sorted(sorted(cores_for(slot, 2) or usable) for slot in range(2))
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


# --- bnlab analyze: an exported experiment, re-analysed offline (issue #26) -------------


def hand_export(bn_gain: float = 0.01) -> dict:
    """An export as GET /api/experiments/{id}/export gives it (the fields analyze reads):
    the regularization preset at 7 seeds, BN without dropout ahead of no-BN with it."""
    design = PRESETS["regularization"].design.model_copy(update={"seeds": 7})
    runs = []
    for planned in design.runs():
        accuracy = 0.95 + 0.001 * planned.seed
        if planned.arm == "bn" and planned.factors["dropout"] == 0.0:
            accuracy += bn_gain
        runs.append(
            {
                "run_id": f"r{len(runs)}",
                "factors": planned.factors,
                "seed": planned.seed,
                "arm": planned.arm,
                "status": "completed",
                "test_correct": round(accuracy * 10_000),
                "summary": {"test_accuracy": accuracy},
            }
        )
    experiment = {"design": design.model_dump(mode="json"), "status": "completed"}
    return {"experiment": experiment, "runs": runs, "curves": []}


def analyze_cli(path, *flags):
    from bnlab.server.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["analyze", str(path), *flags])
    return code, out.getvalue(), err.getvalue()


def test_analyze_prints_the_claim_as_the_headline_then_the_cells(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(hand_export()))
    code, out, err = analyze_cli(path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "regularization: 28 runs re-analysed from an export"
    assert lines[1] == f"Claim: {PRESETS['regularization'].design.claim.statement}"
    assert lines[2] == "Verdict: SUPPORTED"
    assert "cross_cell: bn at dropout=0.0 minus no_bn at dropout=0.5: +1.00 points" in lines[3]
    assert out.index("Verdict") < out.index("p Holm") < out.index("- dropout=0.0")


def test_analyze_json_is_the_apis_claim_and_cells_and_follows_an_edit(tmp_path):
    path = tmp_path / "export.json"
    document = hand_export()
    path.write_text(json.dumps(document))
    code, out, _ = analyze_cli(path, "--json")
    before = json.loads(out)
    assert code == 0 and set(before) == {"claim", "cells"}
    assert before["claim"]["verdict"] == "supported"
    assert before["claim"]["contrasts"][0]["estimate"] == pytest.approx(0.01)
    # one run's test accuracy edited (its count set to null): every figure follows
    first = document["runs"][0]
    assert (first["factors"], first["arm"], first["seed"]) == ({"dropout": 0.0}, "bn", 0)
    first["summary"]["test_accuracy"] = 0.88
    first["test_correct"] = None
    path.write_text(json.dumps(document))
    code, out, _ = analyze_cli(path, "--json")
    after = json.loads(out)
    assert code == 0
    assert after["claim"]["contrasts"][0]["estimate"] == pytest.approx(0.01 - 0.08 / 7)
    assert after["claim"]["verdict"] != "supported"
    assert after["cells"][0]["effect"]["difference"]["mean"] == pytest.approx(0.01 - 0.08 / 7)
    # the other cell's runs are as they were (its Holm step may move: one family)
    assert after["cells"][1]["arms"] == before["cells"][1]["arms"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: "not json", ["cannot read it as JSON"]),
        (lambda d: {**d, "runs": []}, ["runs", "at least 1"]),
        (lambda d: d["runs"][3].update(status="exploded") or d, ["runs.3.status"]),
        (lambda d: d["runs"][2].update(factors={"dropout": 0.3}) or d, ["runs.2.factors"]),
        (lambda d: d["runs"][1].update(test_correct=1) or d, ["runs.1", "disagree"]),
        (lambda d: d["experiment"]["design"].update(seeds=0) or d, ["experiment.design.seeds"]),
    ],
)
def test_analyze_refuses_a_bad_export_naming_the_file_and_field(tmp_path, edit, words):
    path = tmp_path / "bad.json"
    document = edit(hand_export())
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    code, out, err = analyze_cli(path)
    assert code == 2 and out == ""
    assert err.startswith(f"bnlab analyze: error: {path}: ") and len(err.splitlines()) == 1
    for word in words:
        assert word in err, err


def test_analyze_names_a_missing_file(tmp_path):
    code, _, err = analyze_cli(tmp_path / "nope.json")
    assert code == 2 and "nope.json" in err
