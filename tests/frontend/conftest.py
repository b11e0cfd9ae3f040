"""Browser tests of the dashboard: a real server (real training workers) and Debian's
Chromium driven by Playwright. Nothing is downloaded: no `playwright install`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bnlab.model.data import EVAL_SUBSET_ENV_VAR
from tests.conftest import EVAL_SUBSET

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "frontend"
CHROMIUM = os.environ.get("BNLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 60.0
VIEWPORT = {"width": 1440, "height": 900}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its training workers (one process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left over, e.g. a stuck worker
    proc.wait(timeout=10)


@dataclass
class Server:
    url: str
    log: Path
    token: str | None = None

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str) -> int:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(self.url + path, data=b"", method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def cancel_active(self) -> None:
        """Leave both workers free for the next test."""
        for run in self.get("/api/runs?limit=500")["items"]:
            if run["status"] in ("queued", "running"):
                self.post(f"/api/runs/{run['id']}/cancel")


@contextlib.contextmanager
def _running_server(data_dir: Path, workdir: Path, token: str | None = None) -> Iterator[Server]:
    """A real BN Lab server on a free port, with 2 worker processes and its own database."""
    port = _free_port()
    log = workdir / "server.log"
    env = {
        **os.environ,
        "BNLAB_DATA_DIR": str(data_dir),
        EVAL_SUBSET_ENV_VAR: str(EVAL_SUBSET),  # the page is under test, not the accuracy
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BNLAB_TOKEN", None)
    command = [
        sys.executable,
        "-m",
        "bnlab",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(workdir / "bnlab.db"),
        "--workers",
        "2",
    ]
    if token:
        command += ["--token", token]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /api/health in time:\n{log.read_text()}")
            time.sleep(0.25)
        yield Server(url, log, token)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server most tests use: no access token (loopback only)."""
    with _running_server(data_dir, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="module")
def token_server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server started with --token: changes and websockets need the token."""
    token = "test-token-" + os.urandom(8).hex()
    with _running_server(data_dir, tmp_path_factory.mktemp("token-server"), token) as running:
        yield running


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package `chromium`; see the Makefile)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageErrors:
    """Uncaught page errors and console errors; a test may allow expected ones."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def open_page(browser, page_errors: PageErrors, request):
    """Opens the dashboard at a URL in a fresh browser context. Fails the test on any
    page error or console error (bar the ones the test allows)."""
    contexts = []

    def open_(url: str):
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: page_errors.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                page_errors.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )
        page.goto(url)
        page.wait_for_function("window.bnlab !== undefined && window.Plotly !== undefined")
        return page

    yield open_
    report = getattr(request.node, "report_call", None)
    for n, context in enumerate(contexts):
        if report is not None and report.failed and context.pages:
            OUTPUT.mkdir(parents=True, exist_ok=True)
            shot = OUTPUT / f"FAILED-{request.node.name}-{n}.png"
            context.pages[0].screenshot(path=shot, full_page=True)
        context.close()
    unexpected = page_errors.unexpected()
    assert not unexpected, "errors in the page:\n" + "\n".join(unexpected)


@pytest.fixture
def page(open_page, server: Server):
    """A fresh page on the dashboard of `server`."""
    yield open_page(server.url + "/")
    server.cancel_active()


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
