"""The `bnlab` command: `bnlab train` (one run), `bnlab serve` (the dashboard) and
`bnlab experiment` (an experiment's runs, locally)."""

from __future__ import annotations

import argparse
import sys

from bnlab.model.cli import add_train_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="BN Lab: MNIST with and without Batch Normalization."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(subparsers)
    from bnlab.server.main import add_serve_parser
    from bnlab.server.runner import add_experiment_parser

    add_serve_parser(subparsers)
    add_experiment_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports the web stack: seconds on a slow machine
    except KeyboardInterrupt:
        print("bnlab: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
