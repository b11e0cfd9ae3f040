"""What the server knows of where runs train: its worker slots and, with `--executor ray`,
the Ray cluster as last seen. Executors report these; `/api/health` serves them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerLoad(BaseModel):
    busy: int
    total: int


class ResourcePublic(BaseModel):
    total: float
    free: float


class RayNodePublic(BaseModel):
    """One live node of the Ray cluster and what it has."""

    id: str
    address: str
    cpus: float
    gpus: float


class ClusterPublic(BaseModel):
    """The Ray cluster the runs train on, as last seen (about once a second)."""

    address: str = Field(description="the address the server was given (--ray-address)")
    connected: bool
    error: str | None = Field(None, description="why the server is not connected, if it is not")
    nodes: list[RayNodePublic] = []
    cpus: ResourcePublic | None = None
    gpus: ResourcePublic | None = None
