"""The FastAPI application: REST, websockets, the dashboard, and error shapes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from bnlab import __version__

from ..execution.executor import Executor, ExecutorKind
from ..execution.processes import ProcessExecutor
from ..experiments.service import ExperimentService
from ..live.hub import Hub
from ..runs.service import Conflict, NotFound, QueueFull, RunService
from ..storage.store import Store, StoreError
from . import ws
from .routes import experiments, health, runs
from .security import AccessGuard, is_loopback, loopback_hosts
from .settings import Settings

log = logging.getLogger("bnlab")
# The dashboard ships inside the package, so any install (wheel, editable,
# container) serves the files that came with its own code.
FRONTEND = Path(str(resources.files("bnlab.frontend")))


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _field(error: dict) -> str:
    # ("body", "steps") -> "steps"; ("query", "limit") -> "limit"
    if error["type"] == "json_invalid":  # loc holds a character offset, not a field
        return "body"
    parts = [str(p) for p in error["loc"] if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "loc": list(e["loc"]),
            "field": _field(e),
            "msg": e["msg"].removeprefix("Value error, "),
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def _error(status: int, headers: dict | None = None):
    def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status, headers=headers)

    return handler


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal server error; see the server log"}, 500)


def make_executor(settings: Settings) -> Executor:
    if settings.executor == ExecutorKind.RAY:
        # Imported only here: the plain install has no Ray.
        from ..execution.ray_executor import RayExecutor

        return RayExecutor(
            settings.ray_address,
            settings.gpus_per_run,
            settings.workers,
            settings.data_dir,
            settings.checkpoint_dir,
        )
    return ProcessExecutor(
        settings.worker_count,
        settings.gpus,
        settings.data_dir,
        settings.checkpoint_dir,
        stacking=settings.stack,
    )


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = Store(settings.db_path)
        executor = make_executor(settings)
        service = RunService(store, executor, Hub(), settings.max_queued)
        experiments = ExperimentService(service)
        await service.start()
        app.state.service = service
        app.state.experiments = experiments
        app.state.settings = settings
        try:
            yield
        finally:
            await service.stop()
            store.close()

    app = FastAPI(
        title="BN Lab",
        summary="Train MNIST with and without Batch Normalization and watch it live.",
        version=__version__,
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NotFound, _error(404))
    app.add_exception_handler(Conflict, _error(409))
    app.add_exception_handler(QueueFull, _error(429, {"Retry-After": "60"}))
    app.add_exception_handler(StoreError, _error(503))
    app.add_exception_handler(Exception, _unexpected)
    # Middleware added last runs first: Host check, then CORS, then the AccessGuard.
    app.add_middleware(
        AccessGuard,
        token=settings.token,
        allowed_origins=settings.allowed_origins,
        public_read=settings.public_read,
    )
    if settings.allowed_origins:  # CORS stays closed unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if settings.token is None and is_loopback(settings.host):
        # DNS-rebinding defence, see security.py. A foreign Host gets Starlette's
        # 400 "Invalid host header", the answer web frameworks give a Host they do
        # not serve (Django's too): the request is malformed for this server.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=loopback_hosts(settings.host))
    for routes in (runs, experiments, health):
        app.include_router(routes.router)
    app.include_router(ws.router)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")
    return app
