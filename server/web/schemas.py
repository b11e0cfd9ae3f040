"""Bodies only the web layer serves: the health check and the limits the page needs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..execution.cluster import ClusterPublic, WorkerLoad

READERS_ONLY = "null for a caller without the access token when reads need it"


class Health(BaseModel):
    """Whether the server is up. A caller that may not read the lab's data (no token
    on a server whose reads need it) gets status, version, executor and can_read only:
    a health check needs no more, and the rest says what the lab is doing (queue,
    busy workers), what it runs on (devices) and where (the Ray nodes' addresses)."""

    status: Literal["ok"] = "ok"
    version: str = Field(description="BN Lab's version")
    executor: Literal["process", "ray"]
    can_read: bool = Field(
        description="whether this caller may read runs and experiments: false without the "
        "access token on a server whose reads need it (the page then asks for the token)"
    )
    tensorflow: str | None = Field(None, description=f"its version; {READERS_ONLY}")
    devices: list[str] | None = Field(
        None,
        description="the devices the workers are given: a GPU each where the NVIDIA driver "
        f"(nvidia-smi) lists any, else the CPU; {READERS_ONLY}",
    )
    tensorflow_devices: list[str] | None = Field(
        None,
        description="the devices TensorFlow itself sees (GPU:0, ... or CPU), asked once "
        "after the server starts: null until it has answered (seconds); " + READERS_ONLY,
    )
    device_warning: str | None = Field(
        None,
        description="why training would not run where `devices` says: the GPUs the driver "
        "lists that TensorFlow does not see, the CUDA libraries missing and the fix; "
        + READERS_ONLY,
    )
    workers: WorkerLoad | None = Field(None, description=READERS_ONLY)
    queue: int | None = Field(None, description=READERS_ONLY)
    cluster: ClusterPublic | None = Field(None, description=f"with --executor ray; {READERS_ONLY}")


class Limits(BaseModel):
    """The server's limits that the page needs before it asks (`GET /api/limits`)."""

    compare_max_runs: int = Field(description="Runs one compare or export request may name")


LIMITS = Limits(compare_max_runs=20)
