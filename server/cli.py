"""The `bnlab` command, the one home of every subcommand's flags.

`bnlab train` (one run in the console) takes its flags from RunConfig's fields:
name, type, bounds-checked value, default, choices and help all come from the
model, so a field added there is a flag here. `bnlab serve` runs the dashboard;
`bnlab experiment` runs an experiment's runs locally, without a server;
`bnlab analyze` recomputes an exported experiment's verdicts offline.
`python -m bnlab` is the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ..model.config import RunConfig
from .web.settings import Settings

M = TypeVar("M", bound=BaseModel)

# -- flags from a model's fields ------------------------------------------------------


def flag_of(name: str, field: FieldInfo) -> str:
    """The flag that sets a field: its `flag` extra, else `--` + the name with dashes."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """(the type a flag's value has, whether the field may be None)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per field of `model`; `model_from_args` reads them back."""
    for name, field in model.model_fields.items():
        flag = flag_of(name, field)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        # argparse %-formats help; a literal % in a description must survive it.
        help_ = str(extra.get("flag_help") or field.description or "").replace("%", "%%")
        if help_[1:2].islower():  # "Drop rate" -> "drop rate", as flags' help reads; not "BN …"
            help_ = help_[0].lower() + help_[1:]
        kind, _ = _value_type(field.annotation)
        if kind is bool:
            # A flag flips the default: --no-bn stores False into batch_norm.
            action = "store_false" if field.default else "store_true"
            parser.add_argument(flag, dest=name, action=action, help=help_ or None)
            continue
        metavar = flag.removeprefix("--").upper().replace("-", "_")
        if get_origin(kind) is Literal:
            choices = get_args(kind)
            options: dict[str, Any] = {"choices": choices, "type": type(choices[0])}
        elif kind in (int, float, str):
            options = {"type": kind, "metavar": metavar}
        else:
            raise TypeError(f"{model.__name__}.{name}: no flag for a field of type {kind!r}")
        if field.default is not None:
            help_ = f"{help_} (default %(default)s)".lstrip()
        parser.add_argument(flag, dest=name, default=field.default, help=help_, **options)


def model_from_args(model: type[M], args: argparse.Namespace) -> M:
    """The model the flags describe; a bad value raises pydantic's ValidationError."""
    return model(**{name: getattr(args, name) for name in model.model_fields})


def describe_validation_error(model: type[BaseModel], error: ValidationError) -> str:
    """Pydantic's messages, each naming the flag that set the field."""
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        field = model.model_fields.get(name)
        where = flag_of(name, field) if field is not None else name
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def _directory(value: str) -> str:
    # An empty value would silently mean "the default directory" further down.
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _path(value: str) -> Path:
    return Path(_directory(value))


def add_data_dir_flag(p: argparse.ArgumentParser) -> None:
    """`--data-dir`, as every subcommand that reads MNIST takes it."""
    p.add_argument(
        "--data-dir",
        type=_directory,
        default=None,
        help="MNIST directory (default: $BNLAB_DATA_DIR, else the per-user cache)",
    )


# -- bnlab train ----------------------------------------------------------------------


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = RunConfig()
    p = subparsers.add_parser(
        "train",
        help="train one network and print its validation curve and test metrics",
        description="Train the MNIST network once. Defaults are the seed recipe, with "
        f"training images shifted by up to {defaults.max_shift} pixel "
        "(--max-shift 0: the recipe as published).",
    )
    add_model_flags(p, RunConfig)
    add_data_dir_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON event per line")
    p.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    try:
        config = model_from_args(RunConfig, args)
    except ValidationError as exc:
        print(f"bnlab train: error: {describe_validation_error(RunConfig, exc)}", file=sys.stderr)
        return 2
    # Imported here: `bnlab serve` needs none of the training core's data loading.
    from ..model.console import train_in_console

    return train_in_console(config, args.data_dir, args.json)


# -- bnlab serve ----------------------------------------------------------------------


def _bounded_int(low: int, high: int):
    """An argparse type: an integer in [low, high]. Defaults taken from the
    environment are strings and go through it too, so a bad BNLAB_PORT is
    reported like a bad --port, by argparse, naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _setting(field: str) -> Callable[[str], object]:
    """An argparse type checking a flag against its Settings field's bounds, so a
    bad --port is reported by argparse, naming the flag, and the bounds have one home."""
    info = Settings.model_fields[field]
    annotation = info.annotation
    if isinstance(annotation, types.UnionType):  # `int | None`: a flag always has a value
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    # The field's bounds (ge, le, gt) ride along as Annotated metadata; a field with
    # none (a choice) is checked by its type alone.
    adapter = TypeAdapter(Annotated[(annotation, *info.metadata)] if info.metadata else annotation)

    def parse(text: str) -> object:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc.errors()[0]['msg']}") from None

    return parse


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the dashboard, REST API and websockets",
        description="Serve BN Lab. Flags default to the BNLAB_* environment variables.",
    )
    add_serve_arguments(p)
    p.set_defaults(handler=_serve)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    # Each flag's dest is its Settings field. They default to nothing: what is not
    # given comes from the BNLAB_* environment (read by Settings), then the default.
    default = {name: field.default for name, field in Settings.model_fields.items()}
    p.add_argument("--host", help=f"address to listen on (default {default['host']}; $BNLAB_HOST)")
    p.add_argument(
        "--port", type=_setting("port"), help=f"port (default {default['port']}; $BNLAB_PORT)"
    )
    p.add_argument(
        "--db",
        dest="db_path",
        metavar="PATH",
        type=_path,
        help="SQLite database file ($BNLAB_DB; default: per-user data directory)",
    )
    p.add_argument(
        "--data-dir",
        type=_directory,
        help="MNIST directory ($BNLAB_DATA_DIR; default: per-user cache)",
    )
    p.add_argument(
        "--workers",
        type=_setting("workers"),
        help="runs trained at once (default: one per GPU, at least 2; $BNLAB_WORKERS)",
    )
    p.add_argument(
        "--token",
        help="access token required to read or change anything ($BNLAB_TOKEN); "
        "needed when --host is not a loopback address",
    )
    p.add_argument(
        "--public-read",
        action="store_const",
        const=True,  # not store_true: its False default would hide $BNLAB_PUBLIC_READ
        help="with --token, let anyone read runs and results and watch them live without "
        "it (a read-only public board); changes still need it ($BNLAB_PUBLIC_READ)",
    )
    p.add_argument(
        "--max-queued",
        type=_setting("max_queued"),
        help=f"runs allowed to wait in the queue (default {default['max_queued']}; "
        "$BNLAB_MAX_QUEUED)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a non-loopback address without a token (anyone on the "
        "network can start and delete runs)",
    )
    p.add_argument(
        "--allowed-origins",
        help="comma-separated extra origins allowed to call the API from a "
        "browser, CORS included ($BNLAB_ALLOWED_ORIGINS)",
    )
    p.add_argument(
        "--executor",
        type=_setting("executor"),
        help="where runs train: 'process' (worker processes on this machine, the default) "
        "or 'ray' (actors on a Ray cluster; needs `pip install 'bnlab[ray]'`) "
        "($BNLAB_EXECUTOR)",
    )
    p.add_argument(
        "--ray-address",
        help="the Ray cluster with --executor ray: 'auto' (one started on this machine "
        "with `ray start --head`) or its HOST:PORT (default auto; $BNLAB_RAY_ADDRESS)",
    )
    p.add_argument(
        "--device",
        type=_setting("device"),
        help="where runs train: 'auto' (a GPU per worker where the NVIDIA driver lists "
        "any, else the CPU; the default) or 'cpu' (the CPU even where there are GPUs, "
        "e.g. without CUDA's libraries) ($BNLAB_DEVICE)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=_setting("gpus_per_run"),
        help="share of a GPU each run gets; 0.25 packs four runs on a card "
        "(default 1; $BNLAB_GPUS_PER_RUN)",
    )
    p.add_argument(
        "--no-stack",
        dest="stack",
        action="store_const",
        const=False,
        help="train every run of an experiment in a process (or Ray actor) of its own "
        "instead of stacking compatible runs into one program per worker ($BNLAB_STACK=0)",
    )
    p.add_argument(
        "--checkpoint-dir",
        dest="checkpoint_root",
        metavar="PATH",
        type=Path,
        help="where runs save their training state for resuming; with --executor ray it "
        "must be reachable from every node (default: beside the database; "
        "$BNLAB_CHECKPOINT_DIR)",
    )


def _serve(args: argparse.Namespace) -> int:
    # Imported here: `bnlab train` and `--help` need none of the web stack.
    from .web.serve import serve

    return serve(args)


# -- bnlab experiment -----------------------------------------------------------------


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> None:
    # Imported when the parser is built rather than with this module: the design
    # brings pydantic models no other subcommand needs (never scipy: see its claim).
    from .experiments.design import PRESETS

    p = subparsers.add_parser(
        "experiment",
        help="run an experiment's BN/no-BN twins locally and print the verdicts",
        description="Run every cell x seed x (with, without BN) of an experiment in worker "
        "processes, then print each cell's arms, the paired BN - no-BN difference and the "
        f"verdict. DESIGN is a preset ({', '.join(PRESETS)}) or a JSON file with the body "
        "of POST /api/experiments.",
    )
    p.add_argument("design", metavar="DESIGN", help="preset name or JSON file")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the design's)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the design's)")
    p.add_argument(
        "--workers", type=_bounded_int(1, 64), default=2, help="runs at once (default %(default)s)"
    )
    add_data_dir_flag(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.add_argument(
        "--no-stack",
        dest="stack",
        action="store_false",
        help="train every run alone instead of stacking compatible runs into one program",
    )
    p.set_defaults(handler=experiment)


def experiment(args: argparse.Namespace) -> int:
    from .experiments.local import run_experiment

    return run_experiment(args)


# -- bnlab analyze --------------------------------------------------------------------


def add_analyze_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="recompute every figure and verdict of an exported experiment, offline",
        description="Read an experiment's JSON export (GET /api/experiments/{id}/export) and "
        "recompute its claim's verdict and every cell's from the runs in it, without a "
        "server; then print the table `bnlab experiment` prints. Edit a run's result in the "
        "export (test_correct, or summary.test_accuracy with test_correct null) to see "
        "what it changes.",
    )
    p.add_argument("export", metavar="EXPORT", help="the experiment's JSON export")
    p.add_argument(
        "--json", action="store_true", help="print the analysis as the API shows it (claim, cells)"
    )
    p.set_defaults(handler=analyze)


def analyze(args: argparse.Namespace) -> int:
    from .experiments.local import run_analyze

    return run_analyze(args)


# -- the command ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="BN Lab: MNIST with and without Batch Normalization."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(subparsers)
    add_serve_parser(subparsers)
    add_experiment_parser(subparsers)
    add_analyze_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.handler(args)  # imports TensorFlow or the web stack: seconds
    except KeyboardInterrupt:
        print("bnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`bnlab analyze X | head`): stop quietly, as Unix tools do,
        # and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
