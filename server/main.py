"""`bnlab serve`: run the API, websockets and dashboard with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bnlab.server.settings import DEFAULT_HOST, DEFAULT_PORT, MAX_QUEUED, Settings, default_db_path


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


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the dashboard, REST API and websockets",
        description="Serve BN Lab. Flags default to the BNLAB_* environment variables.",
    )
    add_serve_arguments(p)
    p.set_defaults(handler=serve)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ
    p.add_argument(
        "--host",
        default=env.get("BNLAB_HOST", DEFAULT_HOST),
        help="address to listen on (default 127.0.0.1; $BNLAB_HOST)",
    )
    p.add_argument(
        "--port",
        type=_bounded_int(1, 65535),
        default=env.get("BNLAB_PORT") or str(DEFAULT_PORT),
        help="port (default 8000; $BNLAB_PORT)",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=env.get("BNLAB_DB") or default_db_path(),
        help="SQLite database file ($BNLAB_DB)",
    )
    p.add_argument(
        "--data-dir",
        default=env.get("BNLAB_DATA_DIR"),
        help="MNIST directory ($BNLAB_DATA_DIR; default: per-user cache)",
    )
    p.add_argument(
        "--workers",
        type=_bounded_int(1, 64),
        default=env.get("BNLAB_WORKERS") or None,
        help="runs trained at once (default: one per GPU, at least 2)",
    )
    p.add_argument(
        "--token",
        default=env.get("BNLAB_TOKEN") or None,
        help="access token required to change anything ($BNLAB_TOKEN); "
        "needed when --host is not a loopback address",
    )
    p.add_argument(
        "--max-queued",
        type=_bounded_int(1, 10_000),
        default=env.get("BNLAB_MAX_QUEUED") or str(MAX_QUEUED),
        help="runs allowed to wait in the queue (default 100)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a non-loopback address without a token (anyone on the "
        "network can start and delete runs)",
    )
    p.add_argument(
        "--allowed-origins",
        default=env.get("BNLAB_ALLOWED_ORIGINS", ""),
        help="comma-separated extra origins allowed to call the API from a "
        "browser, CORS included ($BNLAB_ALLOWED_ORIGINS)",
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bnlab.server.app import create_app
    from bnlab.server.security import is_loopback
    from bnlab.server.store import Store, StoreError

    if not is_loopback(args.host) and not args.token:
        if not args.no_auth:
            print(
                f"bnlab serve: error: --host {args.host} is reachable from other machines; "
                "set an access token with --token or BNLAB_TOKEN (or pass --no-auth to "
                "serve without one)",
                file=sys.stderr,
            )
            return 2
        print(
            f"bnlab serve: WARNING: serving {args.host} without an access token: "
            "anyone who can reach this port can start, cancel and delete runs",
            file=sys.stderr,
        )
    origins = [o.strip().rstrip("/") for o in args.allowed_origins.split(",") if o.strip()]
    settings = Settings(
        host=args.host,
        port=args.port,
        db_path=args.db,
        data_dir=args.data_dir,
        workers=args.workers,
        token=args.token,
        allowed_origins=origins,
        max_queued=args.max_queued,
    )
    try:
        # Opened (and migrated) here, before uvicorn: inside its start-up a refused
        # database would end in a traceback instead of this message.
        Store(settings.db_path).close()
    except StoreError as exc:
        print(f"bnlab serve: error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    print(
        f"BN Lab: http://{args.host}:{args.port}  (database {settings.db_path}, "
        f"{settings.worker_count} workers)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        ws_max_size=64 * 1024,  # the streams take no input; refuse big frames early
    )
    return 0
