"""`bnlab serve`: run the API, websockets and dashboard with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, get_args

from pydantic import TypeAdapter, ValidationError

from bnlab.server.settings import Settings, SettingsError, load_settings


def _setting(field: str) -> Callable[[str], object]:
    """An argparse type checking a flag against its Settings field's bounds, so a
    bad --port is reported by argparse, naming the flag, and the bounds have one home."""
    info = Settings.model_fields[field]
    annotation = info.annotation
    if isinstance(annotation, types.UnionType):  # `int | None`: a flag always has a value
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    adapter = TypeAdapter(Annotated[(annotation, *info.metadata)])

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
    p.set_defaults(handler=serve)


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
        type=Path,
        help="SQLite database file ($BNLAB_DB; default: per-user data directory)",
    )
    p.add_argument("--data-dir", help="MNIST directory ($BNLAB_DATA_DIR; default: per-user cache)")
    p.add_argument(
        "--workers",
        type=_setting("workers"),
        help="runs trained at once (default: one per GPU, at least 2; $BNLAB_WORKERS)",
    )
    p.add_argument(
        "--token",
        help="access token required to change anything ($BNLAB_TOKEN); "
        "needed when --host is not a loopback address",
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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bnlab.server.app import create_app
    from bnlab.server.security import is_loopback
    from bnlab.server.store import StoreError

    # An empty flag counts as not given, like an empty variable (Settings' env_ignore_empty).
    flags = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v not in (None, "")
    }
    try:
        settings = load_settings(**flags)
    except SettingsError as exc:
        print(f"bnlab serve: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.token:
        if not args.no_auth:
            print(
                f"bnlab serve: error: --host {settings.host} is reachable from other machines; "
                "set an access token with --token or BNLAB_TOKEN (or pass --no-auth to "
                "serve without one)",
                file=sys.stderr,
            )
            return 2
        print(
            f"bnlab serve: WARNING: serving {settings.host} without an access token: "
            "anyone who can reach this port can start, cancel and delete runs",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    print(
        f"BN Lab: http://{settings.host}:{settings.port}  (database {settings.db_path}, "
        f"{settings.worker_count} workers)",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="info",
            ws_max_size=64 * 1024,  # the streams take no input; refuse big frames early
        )
    except StoreError as exc:
        print(f"bnlab serve: error: {exc}", file=sys.stderr)
        return 1
    return 0
