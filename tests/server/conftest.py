"""A real BN Lab server: `python -m server` in a subprocess on a free loopback port,
with a real SQLite file and real worker processes training on the real MNIST."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from bnlab.model.data import EVAL_SUBSET_ENV_VAR
from tests.conftest import EVAL_SUBSET

# Real training, kept small: an MLP trains and evaluates in a few seconds.
# Unshifted images (max_shift 0): 20 steps are too few for the MLP to learn
# shifted digits, and these tests check that a run learns, not the shifts.
TINY = {
    "arch": "mlp",
    "steps": 20,
    "eval_every": 5,
    "train_subset": 1000,
    "batch_size": 32,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 0.01,
    "max_shift": 0,
}
LONG = {**TINY, "steps": 100_000, "eval_every": 1000}  # runs until cancelled or killed


@pytest.fixture(scope="package", autouse=True)
def small_evaluations():
    """These tests check the service, not the accuracy: the servers they start
    evaluate on EVAL_SUBSET images ($BNLAB_EVAL_SUBSET, inherited). Set for this
    package only, before any of its servers starts."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(EVAL_SUBSET_ENV_VAR, str(EVAL_SUBSET))
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, db: Path, data_dir: Path, workers: int = 2, extra: list[str] = ()) -> None:
        self.db, self.data_dir, self.workers, self.extra = db, data_dir, workers, list(extra)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.log = db.with_suffix(f".{self.port}.log")
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def start(self) -> ServerProcess:
        host = ["--host", "127.0.0.1"] if "--host" not in self.extra else []
        cmd = [
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
            *self.extra,
        ]
        self.process = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if self.http.get("/api/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not answer /api/health within 60 s")

    def pids(self) -> list[int]:
        """The server and every process it started (workers, resource tracker)."""
        out = subprocess.run(
            ["pgrep", "-s", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def worker_pids(self) -> list[int]:
        pids = []
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(pid)
        return pids

    def stop(self, sig: int = signal.SIGTERM) -> None:
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

    # -- helpers the tests share --------------------------------------------

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.http.post(path, json=body)

    def run(self, run_id: str) -> dict:
        response = self.http.get(f"/api/runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_for(self, run_id: str, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if predicate(run):
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} never got there; last seen: {run}")

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 120) -> dict:
        return self.wait_for(run_id, lambda r: r["status"] in statuses, timeout)

    def ws(self, path: str):
        return connect(f"{self.ws_base}{path}", open_timeout=10, close_timeout=5)


def receive(ws, timeout: float = 60) -> dict:
    return json.loads(ws.recv(timeout=timeout))


@pytest.fixture
def start_server(tmp_path, data_dir):
    servers: list[ServerProcess] = []

    def start(db: Path | None = None, workers: int = 2, extra: list[str] = ()) -> ServerProcess:
        server = ServerProcess(db or tmp_path / "bnlab.db", data_dir, workers, extra).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    """One server shared by a module's tests (each test makes its own runs)."""
    server = ServerProcess(tmp_path_factory.mktemp("srv") / "bnlab.db", data_dir).start()
    yield server
    server.stop()
