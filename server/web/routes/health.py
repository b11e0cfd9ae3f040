"""REST routes about the server itself: its health and the limits the page needs."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter, Request

from bnlab import __version__

from ...execution.cluster import WorkerLoad
from ..deps import DevicesDep, ServiceDep, SettingsDep
from ..schemas import LIMITS, Health, Limits
from ..security import may_read

router = APIRouter(prefix="/api")


@router.get("/health", response_model=Health)
async def health(
    request: Request, service: ServiceDep, settings: SettingsDep, devices: DevicesDep
) -> Health:
    """Open to every caller (health checks carry no token); see Health for what a
    caller without the token is told."""
    executor = service.executor.kind
    if not may_read(request):
        return Health(version=__version__, executor=executor, can_read=False)
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = None
    driver_devices = [f"GPU:{g}" for g in settings.gpus] or ["CPU"]
    return Health(
        version=__version__,
        executor=executor,
        can_read=True,
        tensorflow=tf_version,
        devices=driver_devices,
        tensorflow_devices=devices.devices,
        device_warning=devices.warning,
        workers=WorkerLoad(busy=service.executor.busy(), total=service.executor.capacity),
        queue=service.queue_length(),
        cluster=service.executor.cluster(),
    )


@router.get("/limits", response_model=Limits)
async def limits() -> Limits:
    """What the server refuses above, so the page can say so before it asks."""
    return LIMITS
