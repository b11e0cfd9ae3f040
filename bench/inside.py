"""Inside the network: what `full` diagnostics show for BN vs no BN (issue #17, §5).

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.inside \
        [--seeds 0 1] [--mlp-steps 4000] [--cnn-steps 1000]

Two comparisons, each a BN run and its no-BN twin per seed, trained by `train()` with
`diagnostics="full"`:
- the `saturating` experiment's sigmoid cell: the paper's MLP (3 x 100 sigmoid, SGD
  0.5, batch 60, no dropout or shifts) for `--mlp-steps`, evaluated every 200 steps;
- the seed CNN (ReLU, Adagrad 0.01, batch 64, dropout 0.5, 1-pixel shifts) cut to
  `--cnn-steps` (the default run is 5,000), evaluated every 200 steps.

Each measure is summarised per run as its median over the evaluations after step 0
(at step 0 the logits layer is zero, so no hidden layer has a gradient yet), then
averaged over seeds. Santurkar et al.'s ICS is shown relative to the layer's gradient,
``||G - G'|| / ||G||``, beside the cosine: BN changes the gradients' scale, so the raw
distance compares the scales as much as the shift. Records the tables in
bench/RESULTS.md (section "inside"); what they mean is written beside it by hand.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.data import Mnist, load_mnist
from bnlab.model.events import EvalEvent, Event, LayerDiagnostics
from bnlab.model.training import train

PAPER_MLP = {
    "arch": "mlp",
    "activation": "sigmoid",
    "optimizer": "sgd",
    "learning_rate": 0.5,
    "batch_size": 60,
    "dropout": 0.0,
    "max_shift": 0,
}


def run(config: RunConfig, data: Mnist) -> tuple[list[EvalEvent], float]:
    """The evaluations of one run and its test accuracy."""
    events: list[Event] = []
    metrics = train(config, events.append, data=data)
    return [e for e in events if isinstance(e, EvalEvent)], metrics.test_accuracy


def _median(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return statistics.median(finite) if finite else None


def _relative_ics(layer: LayerDiagnostics) -> float | None:
    if layer.ics_distance is None or not layer.grad_norm:
        return None
    return layer.ics_distance / layer.grad_norm


def summarise(evals: list[EvalEvent], accuracy: float) -> dict[str, float | None]:
    """Each measure of one run, as its median over the evaluations after step 0."""
    later = [e for e in evals if e.step > 0 and e.diagnostics is not None]
    first = later[0].diagnostics
    out: dict[str, float | None] = {"test accuracy": accuracy}
    for i, layer in enumerate(first.layers):
        name = layer.name

        def over_time(measure: Callable[[LayerDiagnostics], float | None], i: int = i):
            return _median([measure(e.diagnostics.layers[i]) for e in later])

        if i > 0:  # the first layer has no earlier layers: no shift by definition
            out[f"{name}: ICS ||G - G'|| / ||G||"] = over_time(_relative_ics)
            out[f"{name}: ICS cos(G, G')"] = over_time(lambda layer: layer.ics_cosine)
        out[f"{name}: gradient norm"] = over_time(lambda layer: layer.grad_norm)
        out[f"{name}: effective step"] = over_time(lambda layer: layer.effective_step)
        # How far the input to the nonlinearity moved over training (the BN paper's
        # Figure 1): the range of its median across the evaluations.
        medians = [e.diagnostics.layers[i].pre_activation.p50 for e in later]
        medians = [m for m in medians if m is not None]
        out[f"{name}: drift of the median input to the nonlinearity"] = (
            max(medians) - min(medians) if medians else None
        )
        last = later[-1].diagnostics.layers[i].pre_activation
        out[f"{name}: p85 - p15 of that input at the end"] = (
            last.p85 - last.p15 if last.p85 is not None and last.p15 is not None else None
        )
        if layer.bn_gap is not None:
            out[f"{name}: BN gap"] = over_time(lambda layer: layer.bn_gap)
    landscapes = [e.diagnostics.landscape for e in later if e.diagnostics.landscape]
    out["loss range along the gradient"] = _median([s.loss_range for s in landscapes])
    out["gradient predictiveness max ||g - g'||"] = _median(
        [s.grad_predictiveness for s in landscapes]
    )
    out["β-smoothness"] = _median([s.beta_smoothness for s in landscapes])
    last = later[-1].diagnostics
    out["val. accuracy with batch statistics (last)"] = last.val_acc_batch_stats
    # On the same images as the batch-statistics one: val_acc below is on all of them.
    out["val. accuracy with moving statistics, same images (last)"] = last.val_acc_moving_stats
    out["val. accuracy (last)"] = later[-1].val_acc
    return out


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def compare(title: str, base: RunConfig, seeds: list[int], data: Mnist) -> str:
    """A markdown table of BN vs no BN for `base`, each measure a mean over `seeds`."""
    arms: dict[bool, list[dict[str, float | None]]] = {True: [], False: []}
    for seed in seeds:
        for bn in (True, False):
            config = base.model_copy(update={"batch_norm": bn, "seed": seed})
            arms[bn].append(summarise(*run(config, data)))
            print(f"{title}: seed {seed}, BN {bn}: done", flush=True)
    keys = list(dict.fromkeys(k for summary in arms[True] + arms[False] for k in summary))
    rows = [
        f"| {key} | {_cell(_mean([s.get(key) for s in arms[True]]))} "
        f"| {_cell(_mean([s.get(key) for s in arms[False]]))} |"
        for key in keys
    ]
    return "\n".join(
        [
            f"#### {title}",
            "",
            "| median over evaluations after step 0, mean of seeds | BN | no BN |",
            "| --- | --- | --- |",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--mlp-steps", type=int, default=4000)
    parser.add_argument("--cnn-steps", type=int, default=1000)
    args = parser.parse_args()
    data = load_mnist()
    full = {"diagnostics": "full", "eval_every": 200}
    seeds = ", ".join(map(str, args.seeds))
    mlp = compare(
        f"Paper MLP, sigmoid (the `saturating` sigmoid cell), {args.mlp_steps:,} steps, "
        f"seeds {seeds}",
        RunConfig(**PAPER_MLP, **full, steps=args.mlp_steps),
        args.seeds,
        data,
    )
    cnn = compare(
        f"Seed CNN, {args.cnn_steps:,} steps (the default run is 5,000), seeds {seeds}",
        RunConfig(**full, steps=args.cnn_steps),
        args.seeds,
        data,
    )
    flags = f"--seeds {' '.join(map(str, args.seeds))} --mlp-steps {args.mlp_steps} "
    body = "\n".join(
        [
            "### Inside the network: ICS and smoothness with and without BN (issue #17)",
            "",
            f"`python -m bench.inside {flags}--cnn-steps {args.cnn_steps}` on {machine()}.",
            "Every run with `diagnostics=full` (bnlab.model.diagnostics defines each measure).",
            "",
            mlp,
            "",
            cnn,
        ]
    )
    print(body)
    write_section("inside", body)


if __name__ == "__main__":
    main()
