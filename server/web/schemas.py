"""Bodies only the web layer serves: the health check and the limits the page needs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..execution.cluster import ClusterPublic, WorkerLoad


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    tensorflow: str | None
    devices: list[str]
    workers: WorkerLoad
    queue: int
    executor: Literal["process", "ray"]
    cluster: ClusterPublic | None = Field(None, description="with --executor ray")


class Limits(BaseModel):
    """The server's limits that the page needs before it asks (`GET /api/limits`)."""

    compare_max_runs: int = Field(description="Runs one compare or export request may name")


LIMITS = Limits(compare_max_runs=20)
