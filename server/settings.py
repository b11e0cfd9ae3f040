"""Server settings: flags, with environment variables as defaults (for containers)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# One full experiment (at most 200 runs, server.experiment.MAX_RUNS) can wait, with
# room beside it for single runs and comparisons.
MAX_QUEUED = 300


def default_db_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "bnlab" / "bnlab.db"


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


@dataclass
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_path: Path = field(default_factory=default_db_path)
    data_dir: str | None = None
    workers: int | None = None  # None: one per GPU, at least 2
    max_queued: int = MAX_QUEUED
    gpus: list[str] = field(default_factory=visible_gpus)
    token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)

    @property
    def checkpoint_dir(self) -> Path:
        """Training checkpoints live beside the database."""
        return self.db_path.parent / f"{self.db_path.stem}-checkpoints"

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers else max(2, len(self.gpus))
