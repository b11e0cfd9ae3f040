import json
import os
import subprocess
import sys
from pathlib import Path

from bench.peers import epochs_for, updates_in_call

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_records_what_it_can_and_refuses_to_measure_a_cpu():
    """bench.gpu must never record CPU numbers as GPU ones; it goes as far as it can
    (the record of driver, CUDA, cuDNN and TF32) and says where it needs a GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("bench.gpu needs a GPU from here on")
    assert "sees no GPU" in proc.stderr
    facts = json.loads(proc.stdout)  # the record, and nothing measured
    assert facts["tensorflow_gpus"] == [] and facts["device"] == "CPU:0"
    assert facts["built_for"]["cuda"].startswith("12.") and facts["tf32"] is False
    assert {"driver_gpus", "cuda_wheels", "reproducible", "cuda_cache"} <= facts.keys()


def test_keras_peer_counts_each_call_exactly_and_fits_the_data():
    # 55,000 images at batch 64: 859 full batches an epoch. With 50 steps per call the
    # epoch's last call makes 9 updates, though Keras reports it as steps 850 to 899.
    steps_per_epoch = 55_000 // 64
    assert updates_in_call(0, 49, steps_per_epoch) == 50
    assert updates_in_call(850, 899, steps_per_epoch) == 9
    assert updates_in_call(858, 858, steps_per_epoch) == 1  # one step per call
    assert epochs_for(2100, steps_per_epoch) == 3 and epochs_for(859, steps_per_epoch) == 1


def _cell(lr: float, verdict: str, bn: tuple, no_bn: tuple) -> dict:
    def interval(mean_low_high: tuple) -> dict:
        mean, low, high = mean_low_high
        return {"test_accuracy": {"mean": mean, "ci_low": low, "ci_high": high}}

    return {
        "factors": {"learning_rate": lr},
        "arms": {"bn": interval(bn), "no_bn": interval(no_bn)},
        "effect": {"verdict": verdict},
    }


def test_stacked_experiment_bench_compares_verdicts_and_intervals_cell_by_cell():
    from bench.stacked_experiment import agreement, design_body

    stacked = [
        _cell(0.5, "bn_better", (0.95, 0.94, 0.96), (0.90, 0.88, 0.92)),
        _cell(5.0, "bn_better", (0.93, 0.92, 0.94), (0.50, 0.40, 0.60)),
    ]
    alone = [  # in another order; the second cell's BN arm outside the stacked interval
        _cell(5.0, "inconclusive", (0.97, 0.925, 0.99), (0.52, 0.41, 0.63)),
        _cell(0.5, "bn_better", (0.951, 0.94, 0.96), (0.905, 0.89, 0.92)),
    ]
    rows = agreement(stacked, alone)
    assert rows == [
        ("learning_rate=0.5", "bn_better", "bn_better", True),
        ("learning_rate=5.0", "bn_better", "inconclusive", False),
    ]
    body = design_body("learning-rate", seeds=2, steps=30)
    assert body["seeds"] == 2 and body["base"]["steps"] == 30
    assert body["base"]["eval_every"] <= 30  # an evaluation inside the shortened run


def test_presets_bench_records_the_claim_and_every_cell_as_analyze_gives_them():
    """bench.presets renders what `bnlab analyze` computes: the claim's verdict with its
    contrast's figures first, then one row per cell with raw and Holm-adjusted p."""
    from bench.presets import render
    from bnlab.server.experiments.analysis import analyze
    from bnlab.server.experiments.design import PRESETS
    from bnlab.server.experiments.statistics import RunResult

    design = PRESETS["regularization"].design.model_copy(update={"seeds": 8})
    runs = [
        RunResult(factors={"dropout": d}, seed=s, arm=arm, status="completed", test_accuracy=acc)
        for d in (0.0, 0.5)
        for s in range(8)
        for arm, acc in (("bn", 0.90 + 0.001 * s - 0.01 * d), ("no_bn", 0.88 + 0.002 * d))
    ]
    analysis = analyze(design, runs)
    text = render("regularization", analysis, len(design.runs()), (3.5, 1.0))
    assert text.startswith("#### `regularization`: 32 runs, trained in 3.5 min (load 1.0 at its")
    claim = analysis.claim
    assert f"**Verdict: {claim.verdict.value}.**" in text
    (contrast,) = claim.contrasts
    assert f"| cross_cell | 8 | {contrast.estimate * 100:+.2f} (" in text
    assert contrast.sentence in text
    for cell in analysis.cells:
        where = ", ".join(f"{k}={v}" for k, v in cell.factors.items())
        row = next(line for line in text.splitlines() if line.startswith(f"| {where} |"))
        assert row.endswith(f"| {cell.effect.verdict.value} |")
        assert f"{cell.effect.p_adjusted:.3g}" in row
