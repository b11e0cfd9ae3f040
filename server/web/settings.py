"""Server settings: the `BNLAB_*` environment variables, overridden by flags.

pydantic-settings reads and validates the environment (for containers); `bnlab
serve` passes the flags it was given on top. The fields' bounds are the one
home for both: the flags are parsed against them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..execution.executor import ExecutorKind

ENV_PREFIX = "BNLAB_"


def default_db_path() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/bnlab (~/.local/share/bnlab) on Linux."""
    return platformdirs.user_data_path("bnlab", appauthor=False) / "bnlab.db"


def visible_gpus() -> list[str]:
    """GPU ids the NVIDIA driver reports, without importing TensorFlow.

    `nvidia-smi -L` is present wherever the NVIDIA driver (or the container
    toolkit) is; CUDA_VISIBLE_DEVICES, when set, narrows the list.
    """
    restrict = os.environ.get("CUDA_VISIBLE_DEVICES")
    if restrict is not None:
        return [g.strip() for g in restrict.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


class DeviceChoice(StrEnum):
    """Where the user wants runs to train (`--device`, $BNLAB_DEVICE)."""

    # One GPU per worker where the NVIDIA driver lists any, else the CPU. A worker
    # given a GPU that TensorFlow cannot see fails its runs, saying why, rather than
    # train on the CPU unnoticed.
    AUTO = "auto"
    # The CPU, even where there are GPUs: no worker is given one, and every process
    # the server starts sees none (CUDA_VISIBLE_DEVICES=-1, set by `bnlab serve`).
    CPU = "cpu"


class Settings(BaseSettings):
    # Empty variables count as unset: docker-compose passes `BNLAB_WORKERS=` when
    # the user set nothing. validate_by_name: `db_path=` as well as $BNLAB_DB.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, validate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    db_path: Path = Field(default_factory=default_db_path, validation_alias=f"{ENV_PREFIX}DB")
    data_dir: str | None = None
    workers: int | None = Field(None, ge=1, le=64)  # None: one per GPU, at least 2
    # One full experiment (at most 200 runs, experiment.MAX_RUNS) can wait, with room
    # beside it for single runs and comparisons.
    max_queued: int = Field(300, ge=1, le=10_000)
    token: str | None = None
    # With a token: reads and the live streams stay open to anyone who can reach the
    # port (a read-only public board); only changes need the token. Without: no effect.
    public_read: bool = False
    # NoDecode: a comma-separated list, as a shell user writes it, not JSON.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [o.strip().rstrip("/") for o in value if isinstance(o, str) and o.strip()]
        return value

    executor: ExecutorKind = ExecutorKind.PROCESS
    # The Ray cluster with executor=ray: "auto" (one started on this machine) or host:port.
    ray_address: str = "auto"
    # A share of one GPU per run: 0.25 packs four runs on a card (both executors).
    gpus_per_run: float = Field(1.0, gt=0, le=1)
    # An experiment's compatible runs train as one program per slot (issue #27);
    # False: every run in a process (or Ray actor) of its own, as before stacks.
    stack: bool = True
    # None: beside the database. With Ray, a directory every node reaches.
    checkpoint_root: Path | None = Field(None, validation_alias=f"{ENV_PREFIX}CHECKPOINT_DIR")

    device: DeviceChoice = DeviceChoice.AUTO

    @cached_property
    def gpus(self) -> list[str]:
        """The GPUs the workers are given: asked of the driver, none when the user
        chose the CPU."""
        return [] if self.device == DeviceChoice.CPU else visible_gpus()

    @property
    def checkpoint_dir(self) -> Path:
        """Training checkpoints live beside the database unless placed elsewhere
        (with Ray: a directory every node reaches)."""
        if self.checkpoint_root is not None:
            return self.checkpoint_root
        return self.db_path.parent / f"{self.db_path.stem}-checkpoints"

    @property
    def worker_count(self) -> int:
        # 1/F runs share each GPU (--gpus-per-run F); rounding down keeps them within it.
        runs_per_gpu = max(1, int(1 / self.gpus_per_run + 1e-9))
        return self.workers if self.workers else max(2, len(self.gpus) * runs_per_gpu)


class SettingsError(Exception):
    """A BNLAB_* variable holds a value the server cannot use; the message names it."""


def env_name(field: str) -> str:
    """The environment variable behind a field (or its alias): db_path -> BNLAB_DB."""
    if field.startswith(ENV_PREFIX):
        return field
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def load_settings(**flags: object) -> Settings:
    """The environment's settings with the given flags on top.

    The flags were validated when parsed (against these same fields), so what
    can still be wrong is a variable: the error names it.
    """
    try:
        return Settings(**flags)
    except ValidationError as exc:
        problems = [
            f"{env_name(str(e['loc'][0]))}={e['input']!r}: {e['msg']}" for e in exc.errors()
        ]
        raise SettingsError("; ".join(problems)) from None
