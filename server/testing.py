"""A real BN Lab server for tests and benchmarks: `python -m bnlab serve` in a
subprocess on a free loopback port, with its own SQLite file and real worker
processes, and the client side to drive it (HTTP, websockets, waiting for a run).

The server tests, the browser tests and `bench/` all start servers with this one
module, as Starlette ships `starlette.testclient` with itself. It needs httpx (in
the `dev` extra); nothing in the served application imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from .live.messages import server_message
from .status import RunStatus

START_TIMEOUT = 60.0  # seconds for the server to answer /api/health
# Settings the server reads from the environment that a test's flags do not set:
# the server under test is configured by its arguments alone.
SCRUBBED_ENV = (
    "BNLAB_TOKEN",
    "BNLAB_PUBLIC_READ",
    "BNLAB_ALLOWED_ORIGINS",
    "BNLAB_MAX_QUEUED",
    "BNLAB_WORKERS",
    "BNLAB_DEVICE",
)


def session_pids(process: subprocess.Popen | None) -> list[int]:
    """Every process in the session `process` leads (started with start_new_session)."""
    if process is None:
        return []
    out = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server process. `start()` returns once it is healthy; `stop()` ends it and
    every process it started. Its output goes to `log` (beside the database)."""

    def __init__(
        self,
        db: Path,
        data_dir: Path,
        workers: int = 2,
        extra: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        self.db, self.data_dir, self.workers, self.extra = db, data_dir, workers, list(extra)
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = db.with_suffix(f".{self.port}.log")
        self.process: subprocess.Popen | None = None
        # No token here even when the server has one: tests check what is refused.
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def command(self) -> list[str]:
        host = [] if "--host" in self.extra else ["--host", "127.0.0.1"]
        token = ["--token", self.token] if self.token else []
        return [
            sys.executable,
            "-m",
            "bnlab",
            "serve",
            *host,
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            *token,
            *self.extra,
        ]

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"  # the log shows what happened up to a crash
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: stop() finds every child
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if self.http.get("/api/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer /api/health in {timeout:.0f} s")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def pids(self) -> list[int]:
        """The server and every process it started (workers, resource tracker)."""
        return session_pids(self.process)

    def worker_pids(self) -> list[int]:
        """The server's run, stack and Ray driver workers (each titles itself
        `bnlab-…`: `worker.title_process`), not its fork server or resource tracker."""
        pids = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().startswith("bnlab-"):
                    pids.append(pid)
        return pids

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with `sig` (SIGKILL: a crash), then end whatever it left."""
        if self.process is None:
            return
        if sig == signal.SIGKILL:
            self.process.kill()
        else:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # whatever the server left behind (workers of a killed server) goes too
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- driving it -----------------------------------------------------------------

    def auth(self) -> dict[str, str]:
        """Headers that carry the server's token, when it has one."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.auth())

    def get(self, path: str, **params: Any) -> httpx.Response:
        """A read with the token, when the server has one (its reads need it)."""
        return self.http.get(path, params=params, headers=self.auth())

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.get(f"/api/runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_for(
        self, run_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run = None
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if predicate(run):
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} never got there; last seen: {run}")

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_for(run_id, lambda r: r["status"] in statuses, timeout)

    def cancel_active(self) -> None:
        """Cancel every queued or running run: the workers are free for what comes next."""
        for run in self.get("/api/runs", limit=500).json()["items"]:
            if RunStatus(run["status"]).active:
                self.post(f"/api/runs/{run['id']}/cancel")

    def ws(self, path: str) -> ClientConnection:
        return connect(f"{self.ws_url}{path}", open_timeout=10, close_timeout=5)


# `ray` as a module of this interpreter, not the console script beside it: a venv
# that borrows its packages (a .pth to another site-packages) has no script of its
# own, and the script of the other venv would run Ray's workers on *its* Python.
RAY = [sys.executable, "-m", "ray.scripts.scripts"]


NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def _ray_start(args: list[str], temp_dir: Path) -> subprocess.Popen:
    """`ray start --block ARGS` in a session of its own, logging to TEMP_DIR/ray.log,
    once its raylet's socket is there (the node has joined)."""
    log = (temp_dir / "ray.log").open("wb")
    # Free ports for what would otherwise take a fixed one (the dashboard agent's
    # 52365): several nodes, and clusters of tests running side by side, on one host.
    ports = [arg for flag in NODE_PORTS for arg in (flag, str(free_port()))]
    command = [*RAY, "start", "--block", "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    process = subprocess.Popen(
        [*command, *ports, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not list(temp_dir.glob("session_latest/sockets/raylet*")):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (temp_dir / "ray.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ray start failed:\n{tail}")
        time.sleep(0.2)
    return process


class RayNode:
    """One node of a `RayCluster` (its head or one that joined), in a session of its
    own: `pids()` are exactly its processes, raylet, workers and actors included."""

    def __init__(self) -> None:
        # Short: Ray's unix sockets live below it and their paths have a length limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="bnray-", dir="/tmp"))
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        return (self.temp_dir / "ray.log").read_text(errors="replace")[-3000:]

    def pids(self) -> list[int]:
        return session_pids(self.process)

    def actor_pids(self, classes: tuple[str, ...] = ("RunActor", "StackActor")) -> list[int]:
        """Processes running a run's or a stack's actor (Ray titles them after the
        actor class; `classes`: only these)."""
        titles = tuple(f"ray::{name}".encode() for name in classes)
        pids = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(titles):
                    pids.append(pid)
        return pids

    def stop(self) -> None:
        """SIGKILL every process of the node at once: to the cluster, the host is gone."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
            self.process = None


class RayCluster(RayNode):
    """A real local Ray cluster (`ray start --head`), its head node being this object;
    `add_node()` joins more nodes on this machine. Logical GPUs: Ray schedules them
    on any machine, which is what lets GPU packing be tested without a GPU. The caller
    sets RAY_AUTH_MODE (tests and benchmarks: disabled) for it and its clients.
    `system_config` is Ray's `--system-config` (e.g. the GCS's node health checks)."""

    def __init__(self, cpus: int = 2, gpus: int = 1, system_config: dict | None = None) -> None:
        super().__init__()
        self.cpus, self.gpus, self.system_config = cpus, gpus, system_config
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[RayNode] = []

    def start(self) -> RayCluster:
        config = ["--system-config", json.dumps(self.system_config)] if self.system_config else []
        self.process = _ray_start(
            [
                "--head",
                "--port",
                str(self.port),
                "--num-cpus",
                str(self.cpus),
                "--num-gpus",
                str(self.gpus),
                "--include-dashboard",
                "false",
                *config,
            ],
            self.temp_dir,
        )
        return self

    def add_node(self, cpus: int, gpus: int) -> RayNode:
        """One more node on this machine (`ray start --address`)."""
        node = RayNode()
        node.process = _ray_start(
            ["--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus)],
            node.temp_dir,
        )
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        """Every node, the joined ones first (a head gone first leaves them retrying)."""
        for node in self.nodes:
            node.stop()
        super().stop()


def receive(ws: ClientConnection, timeout: float = 60) -> dict[str, Any]:
    """The next message of a stream, checked against the websocket message union."""
    text = ws.recv(timeout=timeout)
    server_message.validate_json(text)  # raises on a frame the documented union lacks
    return json.loads(text)
