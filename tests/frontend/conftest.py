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

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str) -> int:
        request = urllib.request.Request(self.url + path, data=b"", method="POST")
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


@pytest.fixture(scope="session")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real BN Lab server on a free port, with 2 worker processes and its own database."""
    workdir = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = workdir / "server.log"
    env = {**os.environ, "BNLAB_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port),
               "--db", str(workdir / "bnlab.db"), "--workers", "2"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
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
        yield Server(url, log)
    finally:
        _stop(proc)


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
def page(browser, server: Server, page_errors: PageErrors, request):
    """A fresh page on the dashboard. Fails the test on any page error or console error."""
    context = browser.new_context(viewport=VIEWPORT)
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
    page.goto(server.url + "/")
    page.wait_for_function("window.bnlab !== undefined && window.Plotly !== undefined")
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"FAILED-{request.node.name}.png", full_page=True)
    context.close()
    server.cancel_active()
    unexpected = page_errors.unexpected()
    assert not unexpected, "errors in the page:\n" + "\n".join(unexpected)


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
