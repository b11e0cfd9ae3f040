"""`bnlab serve`: placeholder until the service lands."""

import argparse


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve the dashboard")
    p.set_defaults(handler=lambda args: 0)
