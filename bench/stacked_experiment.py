"""Stacked training end to end (issue #27): a preset trained stacked and per run, side by side.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.stacked_experiment \\
        [--preset learning-rate] [--quick | --seeds N --steps N] [--paths server,cli]

In one run of the bench, on the same machine, the preset's design (default: its own
seeds and steps, diagnostics at their default) is trained four times, one after the
other: through the server (a `bnlab serve` process, bnlab.server.testing.ServerProcess,
with its default of stacking and with `--no-stack`; the design POSTed to
/api/experiments, timed from the POST until the experiment is completed) and through
`bnlab experiment` (a subprocess, default and `--no-stack`, timed from its start to its
exit, TensorFlow's start-up included as a user waits for it). Printed: wall time per
path, the stacked/per-run ratio, and per cell whether the two verdicts agree and
whether each arm's mean test accuracy lies inside the other path's 95 % interval.

`--quick` trains fewer seeds and steps (said so in the record); `--check` a tiny design
through `bnlab experiment` only, printing and recording nothing (tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import machine, write_section
from bnlab.server.experiments.design import PRESETS
from bnlab.server.testing import ServerProcess

TARGETS = {"server": 5.0, "cli": 2.5}  # issue #27: stacked vs per run, end to end
QUICK = {"seeds": 3, "steps": 1000}
POLL = 1.0


@dataclass
class Outcome:
    """One training of the design: its wall time and its cells (as the API gives them)."""

    seconds: float
    cells: list[dict]


def design_body(preset: str, seeds: int | None, steps: int | None) -> dict:
    body = PRESETS[preset].design.model_dump(mode="json")
    if seeds is not None:
        body["seeds"] = seeds
    if steps is not None:
        body["base"]["steps"] = steps
        body["base"]["eval_every"] = min(body["base"]["eval_every"], steps)
    return body


def train_experiment(
    server: ServerProcess, body: dict, progress: str | None = None
) -> tuple[dict, float]:
    """POST the design as the Experiments tab does and wait until it has ended: the
    experiment as the API gives it, and the seconds from the POST. `progress`: a name
    to show a line of runs ended so far under, on stderr."""
    started = time.perf_counter()
    response = server.post("/api/experiments", body)
    response.raise_for_status()
    experiment_id = response.json()["id"]
    while True:
        experiment = server.get(f"/api/experiments/{experiment_id}").json()
        if progress is not None:
            done = sum(r["status"] not in ("queued", "running") for r in experiment["runs"])
            seconds = time.perf_counter() - started
            line = f"\r{progress}: {done}/{len(experiment['runs'])} runs, {seconds:.0f} s"
            print(line, end="", file=sys.stderr, flush=True)
        if experiment["status"] not in ("queued", "running"):
            break
        time.sleep(POLL)
    if progress is not None:
        print(file=sys.stderr)
    return experiment, time.perf_counter() - started


def via_server(body: dict, data_dir: str, workers: int, stack: bool, tmp: Path) -> Outcome:
    extra = [] if stack else ["--no-stack"]
    db = tmp / f"server-{'stack' if stack else 'runs'}.db"
    with ServerProcess(db, Path(data_dir), workers=workers, extra=extra) as server:
        experiment, seconds = train_experiment(server, body)
    if experiment["status"] != "completed":
        raise RuntimeError(f"the server's experiment ended {experiment['status']}")
    return Outcome(seconds, experiment["cells"])


def via_cli(body: dict, data_dir: str, workers: int, stack: bool, tmp: Path) -> Outcome:
    design = tmp / "design.json"
    design.write_text(json.dumps(body))
    command = [sys.executable, "-m", "bnlab", "experiment", str(design), "--json"]
    command += ["--workers", str(workers), "--data-dir", data_dir]
    if not stack:
        command.append("--no-stack")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"bnlab experiment exited {done.returncode}:\n{done.stderr[-3000:]}")
    return Outcome(seconds, json.loads(done.stdout)["cells"])


PATHS = {"server": via_server, "cli": via_cli}


def _name(cell: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell["factors"].items()) or "(one cell)"


def _inside(value: float | None, interval: dict) -> bool:
    """Whether `value` lies in `interval` (an interval without bounds: a point, compared)."""
    low, high = interval["ci_low"], interval["ci_high"]
    if value is None or interval["mean"] is None:
        return value is None and interval["mean"] is None
    if low is None or high is None:
        return abs(value - interval["mean"]) < 1e-9
    return low - 1e-12 <= value <= high + 1e-12


def agreement(stacked: list[dict], alone: list[dict]) -> list[tuple[str, str, str, bool]]:
    """Per cell (name, stacked verdict, per-run verdict, every arm's mean test accuracy
    inside the other path's interval, both ways)."""
    others = {_name(c): c for c in alone}
    rows = []
    for cell in stacked:
        other = others[_name(cell)]
        within = all(
            _inside(cell["arms"][arm]["test_accuracy"]["mean"], other["arms"][arm]["test_accuracy"])
            and _inside(
                other["arms"][arm]["test_accuracy"]["mean"], cell["arms"][arm]["test_accuracy"]
            )
            for arm in cell["arms"]
        )
        rows.append((_name(cell), cell["effect"]["verdict"], other["effect"]["verdict"], within))
    return rows


def report(body: dict, results: dict[str, dict[bool, Outcome]], header: str) -> str:
    runs = body["seeds"] * 2 * max(1, _cells(body))
    lines = [
        header,
        "",
        "| path | stacked, s | per run, s | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for path, sides in results.items():
        ratio = sides[False].seconds / sides[True].seconds
        met = "met" if ratio >= TARGETS[path] else "not met"
        lines.append(
            f"| {path} | {sides[True].seconds:.0f} | {sides[False].seconds:.0f} | "
            f"**{ratio:.2f}x** | ≥ {TARGETS[path]:g}x ({met}) |"
        )
    lines += ["", f"{runs} runs per training.", ""]
    lines += ["| path | cell | verdict stacked | verdict per run | p Holm, stacked / per run |"]
    lines[-1] += " test acc. within |"
    lines += ["|---|---|---|---|---|---|"]
    for path, sides in results.items():
        p_of = [
            {_name(c): c["effect"].get("p_adjusted") for c in sides[k].cells} for k in (True, False)
        ]
        for name, mine, theirs, within in agreement(sides[True].cells, sides[False].cells):
            ps = " / ".join("-" if p[name] is None else f"{p[name]:.3g}" for p in p_of)
            lines.append(
                f"| {path} | {name} | {mine} | {theirs} | {ps} | {'yes' if within else '**no**'} |"
            )
    return "\n".join(lines)


def _cells(body: dict) -> int:
    count = 1
    for values in body.get("vary", {}).values():
        count *= len(values)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="learning-rate", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument(
        "--quick", action="store_true", help=f"seeds {QUICK['seeds']}, steps {QUICK['steps']}"
    )
    parser.add_argument("--paths", default="server,cli", help="server, cli or both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="a tiny design, `bnlab experiment`")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    data_dir = os.environ.get("BNLAB_DATA_DIR", "")
    if args.check:
        args.seeds, args.steps, args.paths, args.no_record = 2, 20, "cli", True
    elif args.quick:
        args.seeds = args.seeds or QUICK["seeds"]
        args.steps = args.steps or QUICK["steps"]
    body = design_body(args.preset, args.seeds, args.steps)
    if args.check:
        body["vary"] = {k: v[:1] for k, v in body["vary"].items()}
    paths = [p.strip() for p in args.paths.split(",")]
    load_before = os.getloadavg()[0]
    results: dict[str, dict[bool, Outcome]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            results[path] = {}
            for stack in (True, False):
                outcome = PATHS[path](body, data_dir, args.workers, stack, Path(tmp))
                results[path][stack] = outcome
                label = "stacked" if stack else "per run"
                print(f"{path:6} {label:8} {outcome.seconds:7.1f} s", flush=True)
    preset = PRESETS[args.preset].design
    if args.quick:
        size = "quick variant"
    elif (body["seeds"], body["base"]["steps"]) == (preset.seeds, preset.base.steps):
        size = "default size"
    else:
        size = (
            f"custom size (the preset's default: {preset.seeds} seeds, {preset.base.steps} steps)"
        )
    command = " ".join(["python -m bench.stacked_experiment", *sys.argv[1:]])
    header = (
        f"`{command}` on {machine()}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Preset `{args.preset}`, {size}: "
        f"{body['seeds']} seeds, {body['base']['steps']} steps, eval every "
        f"{body['base']['eval_every']}, diagnostics {body['base'].get('diagnostics')}, "
        f"{args.workers} workers."
    )
    text = report(body, results, header)
    print(text)
    if not args.no_record:
        section = "stacked-experiment-quick" if args.quick else "stacked-experiment"
        write_section(section, text)


if __name__ == "__main__":
    main()
