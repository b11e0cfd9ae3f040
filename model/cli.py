"""`bnlab train`: one run from the command line, in the seed recipe's log format."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from pydantic import ValidationError

from bnlab.model.config import RunConfig
from bnlab.model.data import DataError, load_mnist
from bnlab.model.events import Event, TrainingStopped

# Run-configuration field -> the flag that sets it, so errors name the flag.
FLAGS = {
    "arch": "--arch",
    "batch_norm": "--no-bn",
    "optimizer": "--optimizer",
    "learning_rate": "--lr",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "eval_every": "--eval-every",
    "dropout": "--dropout",
    "bn_decay": "--bn-decay",
    "bn_epsilon": "--bn-epsilon",
    "max_shift": "--max-shift",
    "activation": "--activation",
    "init_scale": "--init-scale",
    "seed": "--seed",
    "train_subset": "--train-subset",
}


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = RunConfig()
    p = subparsers.add_parser(
        "train",
        help="train one network and print its validation curve and test metrics",
        description="Train the MNIST network once. Defaults are the seed recipe, with "
        f"training images shifted by up to {defaults.max_shift} pixel "
        "(--max-shift 0: the recipe as published).",
    )
    p.add_argument("--no-bn", action="store_true", help="train without batch normalization")
    p.add_argument("--arch", choices=["cnn", "mlp"], default=defaults.arch)
    p.add_argument(
        "--optimizer", choices=["adagrad", "sgd", "momentum", "adam"], default=defaults.optimizer
    )
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--steps", type=int, default=defaults.steps, help="number of updates")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every)
    p.add_argument("--dropout", type=float, default=defaults.dropout, help="drop rate")
    p.add_argument("--bn-decay", type=float, default=defaults.bn_decay)
    p.add_argument("--bn-epsilon", type=float, default=defaults.bn_epsilon)
    p.add_argument(
        "--max-shift",
        type=int,
        default=defaults.max_shift,
        help="shift each training image by up to N pixels (default %(default)s; 0: the "
        "recipe's unshifted images)",
    )
    p.add_argument(
        "--activation",
        choices=["relu", "sigmoid", "tanh"],
        default=defaults.activation,
        help="hidden nonlinearity (default: the network's own, relu for cnn, sigmoid for mlp)",
    )
    p.add_argument(
        "--init-scale",
        type=float,
        default=defaults.init_scale,
        help="multiply the std of every initial weight by this (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--train-subset", type=int, default=None, help="train on N images only")
    p.add_argument(
        "--data-dir",
        type=_directory,
        default=None,
        help="MNIST directory (default: $BNLAB_DATA_DIR, else ~/.cache/bnlab/mnist)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON event per line")
    p.set_defaults(handler=run_train)


def _directory(value: str) -> str:
    # An empty value would silently mean "the default directory" further down.
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        arch=args.arch,
        batch_norm=not args.no_bn,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        steps=args.steps,
        eval_every=args.eval_every,
        dropout=args.dropout,
        bn_decay=args.bn_decay,
        bn_epsilon=args.bn_epsilon,
        max_shift=args.max_shift,
        activation=args.activation,
        init_scale=args.init_scale,
        seed=args.seed,
        train_subset=args.train_subset,
    )


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        where = FLAGS.get(field, field)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


class LogPrinter:
    """Prints events as the seed recipe's log, or as JSON lines."""

    def __init__(self, config: RunConfig, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.bar = None
        if not as_json and err.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=config.steps, unit="step", file=err, leave=False)

    def __call__(self, event: Event) -> None:
        if self.as_json:
            print(event.model_dump_json(), file=self.out, flush=True)
            return
        match event.type:
            case "start":
                self.write("Training...")
            case "eval":
                self.write(
                    f"step {event.step}: validation loss = {event.val_loss:.4f}, "
                    f"validation accuracy = {event.val_acc:.4f}"
                )
            case "progress" if self.bar is not None:
                self.bar.update(event.step - self.bar.n)
            case "test":
                self.close_bar()
                self.write("Testing...")
                self.write(
                    f"test loss = {event.test_loss:.4f}, test accuracy = "
                    f"{event.test_accuracy:.4f}, multiclass log loss = {event.log_loss:.4f}"
                )

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.out)
            self.out.flush()  # tqdm does not: `bnlab train | tee log` would lag
        else:
            print(line, file=self.out, flush=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_train(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        print(f"bnlab train: error: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    printer = LogPrinter(config, args.json, sys.stdout, sys.stderr)
    try:
        # Data first (and any download): a data error is then the only thing
        # printed, before TensorFlow's start-up lines.
        data = load_mnist(args.data_dir, train_subset=config.train_subset)
        from bnlab.model.training import train

        train(config, printer, data=data)
    except DataError as exc:
        printer.close_bar()
        print(f"bnlab train: error: {exc}", file=sys.stderr)
        return 1
    except TrainingStopped as exc:
        printer.close_bar()
        print(f"bnlab train: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        printer.close_bar()
        print("bnlab train: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a killed-by-SIGPIPE
        # tool would. Point stdout at /dev/null so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
