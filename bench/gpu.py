"""GPU: what a user waits for — a default run from process start to its test metrics,
and steps/s after warm-up against Keras and PyTorch.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.gpu [--steps N] [--reps R]
    python -m bench.gpu --check      # the record only: is this machine ready to measure?
    python -m bench.gpu --stacked [--sizes 1,8,64]   # stacks only (3. below)
    python -m bench.gpu --stacked --quick            # a smoke test of 3., on a CPU too

In the image: `docker compose run --rm bnlab python -m bench.gpu` (bench/ is in it).

For a machine with a CUDA GPU that TensorFlow sees; it has not run on one yet (BN Lab
was developed on 2-core CPU machines without one). It goes as far as it can without
one: it prints the record (driver, CUDA and cuDNN, TensorFlow, TF32 and determinism
as train() sets them) and then stops with a non-zero exit status, saying why it needs
a GPU and, when the driver lists one TensorFlow does not see, what is missing; it
never records CPU numbers as GPU ones. Measures, in this order:

1. **The cold default run through the server**, twice: `bnlab serve` started in a
   fresh process, one `RunConfig()` posted (5,000 steps, 26 evaluations, the test),
   timed from the server's start to the run's test metrics: process start, CUDA
   initialisation, the kernels' JIT compilation, cuDNN autotuning and training, as a
   user waits for them. The first with an empty CUDA cache (the first run on a new
   card: on Hopper the JIT of TensorFlow's PTX), the second with the persistent one
   (every later run). GPU utilisation is sampled with nvidia-smi during both.
2. **Steps/s after warm-up** of train() (unshifted, as the peers) against Keras
   `model.fit` (whole epochs of full batches; with `steps_per_execution` as well,
   many steps per call as train()'s windows) and PyTorch eager (when installed:
   `pip install -e '.[bench]'`), alternating in every repetition, with ratios.
3. **Stacks** (issue #27): for each size M of `--sizes`, a stack of M paper MLPs and
   one of M seed CNNs (unshifted, diagnostics off; model.stacked, the CNN's
   convolutions grouped) against one such run alone, their training windows timed
   alternately as `bench/stacked.py` times them (best of `--reps` rounds): model-steps/s
   of the stack with and without XLA, and of M runs alone one after the other. With
   `--stacked` only this is measured. `--quick` (M = 2, a CNN at batch 8, one round,
   nothing written) runs on a CPU as well: it checks the measurement works before a
   GPU's time is spent on it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bnlab.model import cuda, device, environment
from bnlab.model.config import RunConfig

STEPS_PER_EXECUTION = 50
SAMPLE_MS = 250  # nvidia-smi's sampling period during the cold runs
COLD_RUN_TIMEOUT = 3600.0  # seconds: a first run on Hopper may JIT for many minutes
CUDA_WHEELS = ("nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12")


def nvidia_smi(*query: str) -> list[str]:
    """Lines nvidia-smi answers to a --query-gpu, [] without a driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def record() -> dict:
    """What the numbers were measured on, as train() would set it up."""
    import tensorflow as tf

    report = device.configure()  # train()'s own set-up: determinism, TF32
    build = tf.sysconfig.get_build_info()
    wheels = {}
    for name in CUDA_WHEELS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            wheels[name] = importlib.metadata.version(name)
    cards = nvidia_smi("name", "driver_version", "compute_cap")
    return {
        "driver_gpus": cards,  # "name, driver, compute capability" per card
        "tensorflow": tf.__version__,
        "tensorflow_gpus": list(report.gpus),
        "built_for": {
            "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"),
            "compute": build.get("cuda_compute_capabilities"),
        },
        "cuda_wheels": wheels,
        "device": report.device,
        "reproducible": report.reproducible,
        "tf32": report.tensor_float_32,
        "cuda_cache": str(environment.cuda_cache_dir()),
        "cuda_cache_maxsize": os.environ.get("CUDA_CACHE_MAXSIZE"),
    }


def needs_a_gpu(facts: dict) -> str | None:
    """Why this machine cannot be measured, or None when it can."""
    if facts["tensorflow_gpus"]:
        return None
    why = cuda.gpu_missing_message(facts["driver_gpus"], [], cuda.missing_libraries())
    return (
        "bench.gpu needs a GPU from here on: TensorFlow sees no GPU "
        "(tf.config.list_physical_devices('GPU') is empty), so there is nothing to measure"
        + (f"; {why}" if why else "; run it on a machine with an NVIDIA GPU and its driver")
    )


class Utilisation:
    """nvidia-smi's GPU utilisation (%), sampled every SAMPLE_MS while it runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Utilisation:
        self._process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"-lms={SAMPLE_MS}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()))  # GPU 0's line first

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=30)

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        return (
            f"mean {statistics.fmean(self.samples):.0f}%, "
            f"median {statistics.median(self.samples):.0f}% of {len(self.samples)} samples"
        )


@contextlib.contextmanager
def cuda_cache(path: Path | None) -> Iterator[None]:
    """The servers started inside use `path` as CUDA's JIT cache (None: the usual one)."""
    before = os.environ.get("CUDA_CACHE_PATH")
    if path is not None:
        os.environ["CUDA_CACHE_PATH"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_CACHE_PATH", None)
        else:
            os.environ["CUDA_CACHE_PATH"] = before


def cold_run(data_dir: Path, tmp: Path, name: str) -> dict:
    """One default run through a fresh server: seconds from its start to test metrics."""
    from bnlab.server.testing import ServerProcess

    with Utilisation() as utilisation:
        started = time.perf_counter()
        server = ServerProcess(tmp / f"{name}.db", data_dir, workers=1).start()
        try:
            run = server.post("/api/runs", RunConfig().model_dump(mode="json")).json()
            done = server.wait_status(run["id"], "completed", "failed", timeout=COLD_RUN_TIMEOUT)
            wall = time.perf_counter() - started
        finally:
            server.stop()
    if done["status"] != "completed":
        raise SystemExit(f"bench.gpu: the default run failed: {done}\n{server.log_tail()}")
    return {"wall": wall, "run": done, "utilisation": utilisation.summary()}


def peers(steps: int, reps: int) -> tuple[dict[str, list[float]], RunConfig]:
    from bench.peers import keras_steps_per_sec, ours_steps_per_sec, torch_steps_per_sec
    from bnlab.model.data import load_mnist

    data = load_mnist()
    config = RunConfig(steps=steps, eval_every=steps, max_shift=0)
    sides = [
        ("ours", lambda: ours_steps_per_sec(config, data)),
        ("keras", lambda: keras_steps_per_sec(config, data)),
        ("keras-spe", lambda: keras_steps_per_sec(config, data, STEPS_PER_EXECUTION)),
    ]
    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench.gpu: no PyTorch peer (pip install -e '.[bench]')", flush=True)
    else:
        sides.append(("torch", lambda: torch_steps_per_sec(config, data)))
    measured: dict[str, list[float]] = {name: [] for name, _ in sides}
    for rep in range(reps):
        for name, measure in sides if rep % 2 == 0 else sides[::-1]:
            measured[name].append(measure())
            print(f"rep {rep + 1}: {name} {measured[name][-1]:.1f} steps/s", flush=True)
    return measured, config


STACK_SIZES = "1,8,64"
QUICK_CNN_BATCH = 8  # the CPU's grouped convolutions (under XLA) are slow: a smoke test


def stacks(sizes: list[int], rounds: int, seconds: float, quick: bool) -> list[tuple]:
    """(network, M, stack, stack model-steps/s, alone steps/s, ratio) per size and
    stack (xla=0, xla=1): the module's docstring, 3."""
    from bench.stacked import alone, stack, timed
    from bnlab.model.config import PAPER_MLP
    from bnlab.model.data import load_mnist

    data = load_mnist()
    cnn = {"max_shift": 0, "diagnostics": "off"}
    if quick:
        cnn["batch_size"] = QUICK_CNN_BATCH
    kinds = {
        "paper MLP": RunConfig(**{**PAPER_MLP, "diagnostics": "off"}),
        "seed CNN": RunConfig(**cnn),
    }
    rows = []
    for network, template in kinds.items():
        for size in sizes:
            configs = [template.model_copy(update={"seed": seed}) for seed in range(size)]
            solo = alone(data, configs[0])
            sides = [solo] + [stack(data, configs, xla, f"xla={int(xla)}") for xla in (0, 1)]
            timed(sides, rounds, seconds)
            for side in sides[1:]:
                rate, single = side.model_steps_per_sec, solo.model_steps_per_sec
                rows.append((network, size, side.name, rate, single, rate / single))
                print(
                    f"{network} M={size} {side.name}: {rate:.0f} model-steps/s, alone "
                    f"{single:.0f} steps/s: x{rate / single:.2f}",
                    flush=True,
                )
    return rows


def stacks_table(rows: list[tuple], template: RunConfig) -> list[str]:
    return [
        f"Stacks (issue #27): model-steps/s of a stack of M against one run alone (the CNN "
        f"at batch {template.batch_size}, unshifted; diagnostics off).",
        "",
        "| network | M | stack | model-steps/s | alone, steps/s | stack / alone |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {network} | {m} | {name} | {rate:.0f} | {single:.0f} | **{ratio:.2f}x** |"
            for network, m, name, rate, single, ratio in rows
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed updates per measurement")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--check", action="store_true", help="print the record and stop: can this machine measure?"
    )
    parser.add_argument("--stacked", action="store_true", help="measure stacks only (3.)")
    parser.add_argument("--sizes", default=STACK_SIZES, help="stack sizes M for 3.")
    parser.add_argument(
        "--quick", action="store_true", help="with --stacked: a smoke test, on a CPU too"
    )
    args = parser.parse_args()
    facts = record()
    print(json.dumps(facts, indent=2), flush=True)
    reason = needs_a_gpu(facts)
    if args.stacked and args.quick:  # nothing recorded: it may run anywhere
        rows = stacks([2], rounds=1, seconds=0.05, quick=True)
        print("\n".join(stacks_table(rows, RunConfig(batch_size=QUICK_CNN_BATCH))))
        return
    if reason is not None:
        sys.exit(reason)
    if args.check:
        print("bench.gpu: ready to measure", flush=True)
        return
    if args.stacked:
        measure_stacks(args, facts)
        return
    data_dir = Path(os.environ.get("BNLAB_DATA_DIR", "../shared/data/mnist")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with cuda_cache(tmp / "empty-cuda-cache"):
            first = cold_run(data_dir, tmp, "first")
        print(f"first run on this card: {first['wall']:.0f} s", flush=True)
        later = cold_run(data_dir, tmp, "later")
        print(f"a later run: {later['wall']:.0f} s", flush=True)
    measured, config = peers(args.steps, args.reps)
    median = {name: statistics.median(values) for name, values in measured.items()}

    def row(title: str, name: str) -> str:
        values = ", ".join(f"{x:.1f}" for x in measured[name])
        return f"| {title} | {median[name]:.1f} | {values} | {median['ours'] / median[name]:.2f}x |"

    from bench.report import machine, write_section

    titles = {
        "ours": "BN Lab `train()`",
        "keras": "Keras `model.fit`",
        "keras-spe": f"Keras `model.fit`, `steps_per_execution={STEPS_PER_EXECUTION}`",
        "torch": "PyTorch eager",
    }
    accuracy = (later["run"].get("test_metrics") or {}).get("test_accuracy")
    body = "\n".join(
        [
            f"### GPU: what a user waits for (BN CNN, batch {config.batch_size})",
            "",
            f"`python -m bench.gpu --steps {args.steps} --reps {args.reps}` on {machine()}; "
            f"GPUs (name, driver, compute capability): {'; '.join(facts['driver_gpus'])}; "
            f"TensorFlow {facts['tensorflow']} built for CUDA {facts['built_for']['cuda']}, "
            f"cuDNN {facts['built_for']['cudnn']}; wheels {facts['cuda_wheels']}; "
            f"reproducible (op determinism) {facts['reproducible']}, TF32 {facts['tf32']}.",
            "",
            "The default run (`RunConfig()`: 5,000 steps, 26 evaluations, the test) through "
            "the server, from its process start to the test metrics:",
            "",
            f"- first on this card (empty CUDA cache): **{first['wall']:.0f} s**; GPU "
            f"utilisation {first['utilisation']}",
            f"- a later run (the cache kept): **{later['wall']:.0f} s**; GPU utilisation "
            f"{later['utilisation']}; test accuracy {accuracy}",
            "",
            "| | median steps/s | all repetitions | train() / this |",
            "| --- | --- | --- | --- |",
            *(row(titles[name], name) for name in measured),
        ]
    )
    print(body)
    try:
        write_section("gpu", body)
    except OSError as exc:  # in the image bench/ is read-only: the body above is the record
        print(f"bench.gpu: RESULTS.md not written: {exc}", file=sys.stderr)
    measure_stacks(args, facts)


def measure_stacks(args: argparse.Namespace, facts: dict) -> None:
    """3. of the module's docstring, on a GPU, recorded in its own section."""
    from bench.report import machine, write_section

    rows = stacks([int(m) for m in args.sizes.split(",")], args.reps, seconds=1.0, quick=False)
    body = "\n".join(
        [
            "### GPU: stacks (issue #27)",
            "",
            f"`python -m bench.gpu --sizes {args.sizes} --reps {args.reps}` on {machine()}; "
            f"GPUs (name, driver, compute capability): {'; '.join(facts['driver_gpus'])}.",
            "",
            *stacks_table(rows, RunConfig()),
        ]
    )
    print(body)
    try:
        write_section("gpu-stacked", body)
    except OSError as exc:
        print(f"bench.gpu: RESULTS.md not written: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
