"""REST routes about the server itself: its health and the limits the page needs."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter

from ...execution.cluster import WorkerLoad
from ..deps import ServiceDep, SettingsDep
from ..schemas import LIMITS, Health, Limits

router = APIRouter(prefix="/api")


@router.get("/health", response_model=Health)
async def health(service: ServiceDep, settings: SettingsDep) -> Health:
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = None
    devices = [f"GPU:{g}" for g in settings.gpus] or ["CPU"]
    return Health(
        tensorflow=tf_version,
        devices=devices,
        workers=WorkerLoad(busy=service.executor.busy(), total=service.executor.capacity),
        queue=service.queue_length(),
        executor=service.executor.kind,
        cluster=service.executor.cluster(),
    )


@router.get("/limits", response_model=Limits)
async def limits() -> Limits:
    """What the server refuses above, so the page can say so before it asks."""
    return LIMITS
