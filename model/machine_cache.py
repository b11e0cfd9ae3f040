"""The per-user cache of choices timed once per machine, and what names the machine.

Some choices are the fastest of several ways to compute the same numbers, and which
is fastest depends on the machine: the kernel paths (model.kernels) and the stack's
compilation and size (model.stack_paths). Each is timed once and kept here, in a JSON
file of the per-user cache, under a key that names the machine (`cpu_model`) and what
else the timing depended on. TensorFlow-free, so that the server can read a choice a
worker made (whether the CNN stacks) without importing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def path(name: str) -> Path:
    """The cache file `name` (e.g. "kernels.json")."""
    return Path(platformdirs.user_cache_dir("bnlab")) / name


def read(name: str) -> dict:
    try:
        stored = json.loads(path(name).read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def write(name: str, key: str, value: object) -> None:
    """Add one choice to the file `name`, under a lock and re-reading first: two
    workers started together time and write at the same moment, and neither may drop
    the other's choice (a lost one is re-timed next run and may come out the other way)."""
    target = path(name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            entries = {**read(name), key: value}
            with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False) as tmp:
                json.dump(entries, tmp, indent=1, sort_keys=True)
            Path(tmp.name).replace(target)
    except OSError:
        pass  # a read-only home: the choice is re-timed next run, nothing worse


@contextlib.contextmanager
def timing(name: str) -> Iterator[None]:
    """Held while a choice of the file `name` is timed: workers started together would
    otherwise time at once, each measuring the other's load; the next one in re-reads
    the file and finds the choice made. Without a writable cache, nothing is held."""
    target = path(name).with_suffix(".timing.lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = open(target, "w")  # noqa: SIM115  (held for the block, closed below)
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
