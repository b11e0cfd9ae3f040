"""Reproduce the seed experiment: the full default BN run and its no-BN twin.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.reproduce \
        [--steps N] [--seed N] [--lr X] [--max-shift N]

Prints both logs in the seed's format and records them, with the step at which
each first reaches 98 % validation accuracy, in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import time

from pydantic import ValidationError

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.console import LogPrinter
from bnlab.model.data import load_mnist
from bnlab.model.events import EvalEvent, Event
from bnlab.model.training import train
from bnlab.server.cli import describe_validation_error


def run(config: RunConfig, data) -> dict:
    log = io.StringIO()
    printer = LogPrinter(config, as_json=False, out=log, err=io.StringIO())
    evals: list[EvalEvent] = []

    def on_event(event: Event) -> None:
        printer(event)
        if event.type == "eval":
            evals.append(event)
            print(
                f"  {'BN' if config.batch_norm else 'no-BN'} step {event.step}: "
                f"val acc {event.val_acc:.4f}",
                flush=True,
            )

    started = time.perf_counter()
    metrics = train(config, on_event, data=data)
    reach = next((e.step for e in evals if e.val_acc >= 0.98), None)
    return {
        "log": log.getvalue(),
        "metrics": metrics,
        "reach98": reach,
        "wall": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=RunConfig().steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lr", type=float, default=RunConfig().learning_rate, help="learning rate of both runs"
    )
    parser.add_argument(
        "--max-shift",
        type=int,
        default=RunConfig().max_shift,
        help="training-image shift of both runs (0: the seed recipe's unshifted images)",
    )
    args = parser.parse_args()
    try:  # before the data loads and minutes of training
        bn = RunConfig(
            steps=args.steps, seed=args.seed, learning_rate=args.lr, max_shift=args.max_shift
        )
    except ValidationError as exc:
        parser.error(describe_validation_error(RunConfig, exc))
    recipe = RunConfig()
    # What differs from the defaults names the section, so a variant is added
    # to the record instead of replacing the defaults' own run.
    changes: list[tuple[str, str, str]] = []  # (flag, value, how the title reads it)
    if bn.steps != recipe.steps:
        changes.append(("steps", str(bn.steps), f"{bn.steps:,} steps"))
    if bn.learning_rate != recipe.learning_rate:
        lr = f"{bn.learning_rate:g}"
        changes.append(("lr", lr, f"learning rate {lr}"))
    if bn.max_shift != recipe.max_shift:
        changes.append(("max-shift", str(bn.max_shift), ""))  # said by `subject`
    data = load_mnist()
    results = {label: run(config, data) for label, config in (("BN", bn), ("no-BN", bn.twin()))}
    variant = " and ".join(title for _, _, title in changes if title)
    flags = "".join(f" --{flag} {value}" for flag, value, _ in changes)
    # The defaults are the seed recipe plus random shifts of the training images.
    subject = (
        "seed recipe" if bn.max_shift == 0 else f"seed recipe with {bn.max_shift}-pixel shifts"
    )
    lines = [
        f"### Reproduction: {subject}{f' at {variant}' if variant else ''}, "
        f"BN vs no-BN (seed {args.seed})",
        "",
        f"`python -m bench.reproduce{flags} --seed {args.seed}` on {machine()}.",
        "",
        "| run | test accuracy | test loss | log loss | first step ≥ 98 % val acc | wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in results.items():
        m = r["metrics"]
        lines.append(
            f"| {label} | {m.test_accuracy:.4f} | {m.test_loss:.4f} | {m.log_loss:.4f} | "
            f"{r['reach98'] if r['reach98'] is not None else 'never'} | {r['wall']:.0f} s |"
        )
    for label, r in results.items():
        lines += ["", f"#### {label} log", "", "```", r["log"].rstrip(), "```"]
    body = "\n".join(lines)
    print(body)
    name = "reproduce" + "".join(f"-{flag}{value}" for flag, value, _ in changes)
    write_section(name if args.seed == 0 else f"{name}-seed{args.seed}", body)


if __name__ == "__main__":
    main()
