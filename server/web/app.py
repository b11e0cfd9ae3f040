"""The FastAPI application: REST, websockets and the dashboard (its errors: problems.py)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from bnlab import __version__

from ..execution.devices import DeviceProbe
from ..execution.executor import Executor, ExecutorKind
from ..execution.processes import ProcessExecutor
from ..experiments.service import ExperimentService
from ..live.hub import Hub
from ..runs.service import RunService
from ..storage.store import Store
from . import problems, ws
from .routes import experiments, health, runs
from .security import AccessGuard, HostGuard, is_loopback, loopback_hosts
from .settings import Settings

# The dashboard ships inside the package, so any install (wheel, editable,
# container) serves the files that came with its own code.
FRONTEND = Path(str(resources.files("bnlab.frontend")))


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


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
            stacking=settings.stack,
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
        # Which devices TensorFlow sees, asked in the background once the server is up.
        devices = DeviceProbe(settings.gpus)
        devices.start()
        app.state.service = service
        app.state.experiments = experiments
        app.state.settings = settings
        app.state.devices = devices
        try:
            yield
        finally:
            await devices.stop()
            await service.stop()
            store.close()

    app = FastAPI(
        title="BN Lab",
        summary="Train MNIST with and without Batch Normalization and watch it live.",
        version=__version__,
        lifespan=lifespan,
    )
    problems.install(app)
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
        # DNS-rebinding defence, see security.py: a foreign Host gets 400.
        app.add_middleware(HostGuard, hosts=loopback_hosts(settings.host))
    for routes in (runs, experiments, health):
        app.include_router(routes.router, responses=problems.RESPONSES)
    app.include_router(ws.router)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")
    return app
