"""`bnlab serve`: run the API, websockets and dashboard with uvicorn (flags: server/cli.py)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

from ..execution.executor import ExecutorKind
from .settings import DeviceChoice, Settings, SettingsError, load_settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The flags given (each named by its Settings field) over the BNLAB_* environment."""
    # An empty flag counts as not given, like an empty variable (Settings' env_ignore_empty).
    flags = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v not in (None, "")
    }
    return load_settings(**flags)


def serve(args: argparse.Namespace) -> int:
    from .security import is_loopback

    try:
        settings = settings_from_args(args)
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
    if settings.token and settings.public_read:
        print(
            "bnlab serve: reads are public (--public-read): anyone who can reach this port "
            "can see every run, watch it live and download its results; changes need the token",
            file=sys.stderr,
        )
    if settings.executor == ExecutorKind.RAY and importlib.util.find_spec("ray") is None:
        print(
            "bnlab serve: error: --executor ray needs Ray: pip install 'bnlab[ray]'",
            file=sys.stderr,
        )
        return 2
    from ..storage.store import Store, StoreError

    try:
        # Opened (and migrated) here, before uvicorn: inside its start-up a refused
        # database would end in a traceback instead of this message.
        Store(settings.db_path).close()
    except StoreError as exc:
        print(f"bnlab serve: error: {exc}", file=sys.stderr)
        return 1
    # The web stack's imports take seconds, a minute or more on a cold install: say
    # something at once rather than leave the terminal silent until the address.
    print("bnlab serve: starting…", file=sys.stderr, flush=True)
    import uvicorn

    from .app import create_app

    if settings.device == DeviceChoice.CPU:
        # Inherited by every process the server starts (its workers, the device probe):
        # TensorFlow there sees no GPU, as the user asked, and none fails for want of one.
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    where = (
        f"{settings.worker_count} workers"
        if settings.executor == ExecutorKind.PROCESS
        else f"runs on the Ray cluster at {settings.ray_address}"
    )
    print(
        f"BN Lab: http://{settings.host}:{settings.port}  (database {settings.db_path}, {where})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        ws_max_size=64 * 1024,  # the streams take no input; refuse big frames early
    )
    return 0
