"""`bnlab train`'s console side: one run, printed in the seed recipe's log format.

The flags that make its RunConfig are built in `bnlab.server.cli`, the one home of
the command line; this module only trains and reports.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from .config import RunConfig
from .data import DataError, load_mnist
from .events import Event, TrainingStopped


class LogPrinter:
    """Prints events as the seed recipe's log, or as JSON lines."""

    def __init__(self, config: RunConfig, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err
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
                # Which device trains, on stderr: stdout keeps the seed recipe's log. The
                # only start-up line: TensorFlow's own are quiet without a GPU
                # (bnlab.model.environment).
                print(f"bnlab train: training on {event.device}", file=self.err, flush=True)
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


def train_in_console(config: RunConfig, data_dir: str | None, as_json: bool) -> int:
    """Train `config`, print its log (or JSON events) and return the exit status."""
    printer = LogPrinter(config, as_json, sys.stdout, sys.stderr)
    try:
        # Data first (and any download): a data error is then the only thing
        # printed, before TensorFlow's start-up lines.
        data = load_mnist(data_dir, train_subset=config.train_subset)
        from .training import train

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
