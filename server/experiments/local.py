"""`bnlab experiment`: run an experiment's runs locally, without a server.

Each run trains in a pool of worker processes, kept for the whole experiment and
started as the server starts its workers (`worker_context`: forked from a fork server
that imported TensorFlow once, or spawned on a GPU machine), one TensorFlow thread pool
per worker sized to its share of the cores and pinned to it, as the server's workers
are (`threads_per_run`, `cores_for` in bnlab.server.execution.placement; issue #14 §4,
bench/concurrency.py).
At the end it prints each cell's arms, the paired effect and the verdict.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ...model.config import ArmName, RunConfig
from ...model.data import DataError, ensure_files
from ..execution.placement import cores_for, limit_threads, pin, threads_per_run
from ..execution.processes import worker_context
from ..execution.stacks import plan_stacks
from ..execution.worker import WorkerMessage, ending, title_process, train_and_report
from ..status import Outcome
from .analysis import Analysis, ExportError, analyze, analyze_export
from .claims import ClaimResult
from .design import PRESETS, ExperimentCreate, PlannedRun
from .statistics import CurvePoint, Interval, Ratio, RunResult

# Design field -> the flag that overrides it, so an error names the flag.
FLAGS = {("seeds",): "--seeds", ("base", "steps"): "--steps"}

# --- the worker side ----------------------------------------------------------------------

_stop: Any = None  # this worker's view of the pool's stop event (a multiprocessing Event)


def _start_worker(stop, threads: int, placements) -> None:
    """Runs once in each fresh worker, before any run. `placements` holds one
    `cores_for` answer per worker the pool will ever start (it never replaces one)."""
    global _stop
    _stop = stop
    pin(placements.get())
    # Ctrl-C reaches the whole process group: the parent decides, via `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # TensorFlow's start-up chatter from every worker would bury the progress bar: the
    # log level is set by bnlab.model.environment, imported with bnlab.model.
    limit_threads(threads)
    # Placed and sized: from here on it is one of the pool's workers to `ps` and the tests.
    title_process("bnlab-pool")


@dataclass(frozen=True)
class RunReport:
    """How one run ended, as its worker sends it back."""

    outcome: Outcome
    test_accuracy: float | None = None
    error: str | None = None
    curve: tuple[CurvePoint, ...] = ()


_raw_mnist: Any = None  # decoded once per worker


def _raw(data_dir: str | None):
    global _raw_mnist
    if _raw_mnist is None:
        from ...model.data import read_raw_mnist

        _raw_mnist = read_raw_mnist(data_dir, download=False)
    return _raw_mnist


class _Collector:
    """One run's report, built from the messages its training sends."""

    def __init__(self) -> None:
        self.curve: list[CurvePoint] = []
        self.test_accuracy: float | None = None
        self.ending = WorkerMessage(outcome=Outcome.FAILED, error="the worker sent no outcome")

    def send(self, message: WorkerMessage) -> None:
        from ...model.events import EvalEvent, TestEvent, event_adapter

        if message.outcome is not None:
            self.ending = message
            return
        event = event_adapter.validate_json(message.event)
        if isinstance(event, EvalEvent):
            point = CurvePoint(step=event.step, val_acc=event.val_acc, val_loss=event.val_loss)
            self.curve.append(point)
        elif isinstance(event, TestEvent):
            self.test_accuracy = event.test_accuracy

    def report(self) -> RunReport:
        completed = self.ending.outcome == Outcome.COMPLETED
        accuracy = self.test_accuracy if completed else None
        return RunReport(self.ending.outcome, accuracy, self.ending.error, tuple(self.curve))


def _train_one(config_json: str, data_dir: str | None) -> RunReport:
    """One run, in a worker: its outcome, test accuracy and validation curve. How the
    run ended is told by `train_and_report`, as for the server's runs."""
    try:
        raw = _raw(data_dir)
    except Exception as exc:  # reported with the run; the other runs go on
        return RunReport(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
    run = _Collector()
    train_and_report(config_json, run.send, _stop.is_set, raw=raw)
    return run.report()


def _train_stack(configs_json: list[str], data_dir: str | None) -> list[RunReport]:
    """Runs that share a stack key, trained as one stack (issue #27) in a worker."""
    from ...model.data import split_mnist
    from ...model.events import TestMetrics
    from ...model.stacked import train_stack

    runs = [_Collector() for _ in configs_json]
    try:
        configs = [RunConfig.model_validate_json(c) for c in configs_json]

        def on_event(index: int, event) -> None:
            message = WorkerMessage(event=event.model_dump_json())
            runs[index].send(message)

        outcomes = train_stack(configs, on_event, _stop.is_set, data=split_mnist(_raw(data_dir)))
    except Exception as exc:  # every run of the stack fails with it; the others go on
        return [RunReport(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}") for _ in runs]
    for run, outcome in zip(runs, outcomes, strict=True):
        run.send(ending(None if isinstance(outcome, TestMetrics) else outcome))
    return [run.report() for run in runs]


# --- the parent side ----------------------------------------------------------------------


def run_design(
    design: ExperimentCreate,
    *,
    workers: int,
    data_dir: str | None,
    stack: bool = True,
    on_done: Callable[[PlannedRun, RunResult, str | None], None] = lambda *_: None,
) -> list[RunResult]:
    """Every run of `design`, `workers` runs (or stacks) at a time; results in the
    design's order. With `stack`, runs that can train as one program do (issue #27,
    grouped as the server groups them: execution.stacks). `on_done(planned, result,
    error)` hears of each run as it ends."""
    threads = threads_per_run(workers)
    context = worker_context([])
    stop = context.Event()
    placements = context.SimpleQueue()
    for slot in range(workers):
        placements.put(cores_for(slot, workers))
    planned = design.runs()
    results: dict[int, RunResult] = {}
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(stop, threads, placements)
    )
    try:
        keys = [run.config.stack_key() if stack else None for run in planned]
        futures: dict[Future, list[int]] = {}
        for members in plan_stacks(keys, workers):
            configs = [planned[i].config.model_dump_json() for i in members]
            if keys[members[0]] is None:
                futures[pool.submit(_train_one, configs[0], data_dir)] = members
            else:
                futures[pool.submit(_train_stack, configs, data_dir)] = members
        for future in as_completed(futures):
            members = futures[future]
            try:
                reports = future.result()
            except Exception as exc:  # the worker itself died (out of memory?)
                died = RunReport(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
                reports = [died] * len(members)
            if isinstance(reports, RunReport):
                reports = [reports]
            for i, report in zip(members, reports, strict=True):
                results[i] = _result(planned[i], report)
                on_done(planned[i], results[i], report.error)
    except BaseException:
        stop.set()  # running runs stop between steps; queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(planned))]


def _result(planned: PlannedRun, report: RunReport) -> RunResult:
    return RunResult(
        factors=planned.factors,
        seed=planned.seed,
        arm=planned.arm,
        status=report.outcome.status,
        test_accuracy=report.test_accuracy,
        curve=list(report.curve),
    )


# --- the command --------------------------------------------------------------------------


class DesignError(Exception):
    """The design could not be read or is invalid; the message names the flag or field."""


def load_design(name_or_path: str, seeds: int | None, steps: int | None) -> ExperimentCreate:
    """A preset or a JSON file, with the command line's overrides, validated as one."""
    if name_or_path in PRESETS:
        body = PRESETS[name_or_path].design.model_dump(mode="json")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DesignError(
                f"DESIGN: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a file"
            )
        try:
            body = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DesignError(f"DESIGN: cannot read {path}: {exc}") from None
        if not isinstance(body, dict):
            raise DesignError(f"DESIGN: {path} must hold a JSON object")
    if seeds is not None:
        body["seeds"] = seeds
    if steps is not None:
        if "steps" in body.get("vary", {}):
            raise DesignError("--steps: this design varies steps; edit its values instead")
        body.setdefault("base", {})["steps"] = steps
    try:
        return ExperimentCreate.model_validate(body)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            loc = tuple(item["loc"])
            where = FLAGS.get(loc, ".".join(str(part) for part in loc))
            lines.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
        raise DesignError("; ".join(lines)) from None


def run_experiment(args: argparse.Namespace) -> int:
    try:
        design = load_design(args.design, args.seeds, args.steps)
        ensure_files(args.data_dir, download=True)  # any download once, before the workers
    except DesignError as exc:
        print(f"bnlab experiment: error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"bnlab experiment: error: {exc}", file=sys.stderr)
        return 1
    total = len(design.runs())
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="run", file=sys.stderr)

    def on_done(planned: PlannedRun, result: RunResult, error: str | None) -> None:
        if result.status == "failed":  # diverged runs are results, told in the table
            where = f"{_cell_name(planned.factors)}, seed {planned.seed}, {planned.arm}"
            line = f"bnlab experiment: run {where} failed: {error}"
            if bar is not None:
                bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
        if bar is not None:
            bar.update()
            bar.set_postfix_str(f"last: {_cell_name(planned.factors)} seed {planned.seed}")

    started = time.perf_counter()
    try:
        results = run_design(
            design,
            workers=args.workers,
            data_dir=args.data_dir,
            stack=args.stack,
            on_done=on_done,
        )
    except KeyboardInterrupt:
        print("bnlab experiment: interrupted", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    analysis = analyze(design, results)
    seconds = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    "design": design.model_dump(mode="json"),
                    "seconds": seconds,
                    **analysis.model_dump(mode="json", include={"claim", "cells"}),
                    "runs": [r.model_dump(mode="json", exclude={"curve"}) for r in results],
                }
            )
        )
    else:
        print_table(analysis, design, seconds, sys.stdout)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    """`bnlab analyze EXPORT.json`: every figure and verdict of an exported experiment,
    recomputed here, offline; the table, or with --json the API's `claim` and `cells`."""
    try:
        design, analysis = analyze_export(Path(args.export))
    except ExportError as exc:
        print(f"bnlab analyze: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(analysis.model_dump_json(include={"claim", "cells"}))
    else:
        print_table(analysis, design, None, sys.stdout)
    return 0


# --- the table ----------------------------------------------------------------------------


def _cell_name(factors: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in factors.items()) or "base"


def _interval(i: Interval) -> str:
    """An accuracy (or a difference of two) in percent: mean [95 % CI]."""
    if i.mean is None:
        return "-"
    if i.ci_low is None or i.ci_high is None:
        return f"{i.mean * 100:.2f}"
    return f"{i.mean * 100:.2f} [{i.ci_low * 100:.2f}, {i.ci_high * 100:.2f}]"


def _ratio(r: Ratio) -> str:
    if r.estimate is None:
        return "-"
    low = "?" if r.ci_low is None else f"{r.ci_low:.2f}"
    high = "inf" if r.ci_high is None else f"{r.ci_high:.2f}"
    return f"{r.estimate:.2f}x [{low}, {high}]"


def _print_claim(claim: ClaimResult, out: TextIO) -> None:
    """The headline: the claim's verdict, then each contrast's figures."""
    print(f"Claim: {claim.statement}", file=out)
    print(f"Verdict: {claim.verdict.value.replace('_', ' ').upper()}", file=out)
    for result in claim.contrasts:
        print(f"  {result.contrast.kind}: {result.sentence}", file=out)
    print("", file=out)


def print_table(
    analysis: Analysis, design: ExperimentCreate, seconds: float | None, out: TextIO
) -> None:
    """The claim's verdict as the headline, then one row per cell: test accuracy in %
    (mean [95 % CI]) per arm, their paired difference, raw and Holm-adjusted p, the
    speed-up to 98 % and the verdict; then each verdict in words. `seconds`: how long
    the runs took (None: re-analysed from an export)."""
    cells = analysis.cells
    header = [
        "cell",
        "n",
        "BN %",
        "no-BN %",
        "BN - no-BN (pp)",
        "p",
        "p Holm",
        "speed-up 98 %",
        "verdict",
    ]
    rows = []
    for cell in cells:
        effect = cell.effect
        rows.append(
            [
                _cell_name(cell.factors),
                str(effect.n_pairs),
                _interval(cell.arms[ArmName.BN].test_accuracy),
                _interval(cell.arms[ArmName.NO_BN].test_accuracy),
                _interval(effect.difference),
                "-" if effect.p_value is None else f"{effect.p_value:.3g}",
                "-" if effect.p_adjusted is None else f"{effect.p_adjusted:.3g}",
                _ratio(effect.speedup),
                effect.verdict.value,
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    label = design.label or "experiment"
    took = "re-analysed from an export" if seconds is None else f"in {seconds / 60:.1f} min"
    print(f"{label}: {len(design.runs())} runs {took}", file=out)
    if analysis.claim is not None:
        _print_claim(analysis.claim, out)
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    for cell in cells:
        bn, no_bn = cell.arms[ArmName.BN], cell.arms[ArmName.NO_BN]
        note = ""
        if bn.n_diverged or no_bn.n_diverged:
            note += f" Diverged: BN {bn.n_diverged}, no-BN {no_bn.n_diverged}."
        if bn.n_finished < bn.n or no_bn.n_finished < no_bn.n:
            note += (
                f" Without a result (failed or stopped): BN {bn.n - bn.n_finished}, "
                f"no-BN {no_bn.n - no_bn.n_finished}."
            )
        print(f"- {_cell_name(cell.factors)}: {cell.effect.sentence}{note}", file=out)
    print(
        f"Test: {cells[0].effect.test}, paired by seed, Holm-corrected over the "
        f"{len(cells)} cells; each interval at the level its verdict is decided at.",
        file=out,
    )
