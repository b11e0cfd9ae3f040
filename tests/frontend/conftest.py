"""Browser tests of the dashboard: a real server (bnlab.server.testing, real training
workers) and Debian's Chromium driven by Playwright. Nothing is downloaded: no
`playwright install`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bnlab.server.testing import ServerProcess
from tests.conftest import small_evaluations

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
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="package", autouse=True)
def _service_tests_evaluate_on_a_small_split() -> Iterator[None]:
    """The service is under test here, not the accuracy (tests/conftest.py)."""
    with small_evaluations():
        yield


# Package, not session: a session fixture is set up before the package's autouse one,
# so the server would start without $BNLAB_EVAL_SUBSET; this package is its only user.
@pytest.fixture(scope="package")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server most tests use: no access token (loopback only)."""
    db = tmp_path_factory.mktemp("server") / "bnlab.db"
    with ServerProcess(db, data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def token_server(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server started with --token: reads, changes and websockets need the token."""
    token = "test-token-" + os.urandom(8).hex()
    db = tmp_path_factory.mktemp("token-server") / "bnlab.db"
    with ServerProcess(db, data_dir, token=token) as running:
        yield running


# Package, not session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and async tests after this package (anyio) cannot run theirs.
@pytest.fixture(scope="package")
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


def wait_until_ready(page) -> None:
    """The page's modules have run and the form has its fields (from the API's schema)."""
    page.wait_for_function(
        "window.bnlab !== undefined && window.Plotly !== undefined"
        " && document.querySelector('[data-testid=run-form]').dataset.state === 'ready'"
    )


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
        wait_until_ready(page)
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
def page(open_page, server: ServerProcess):
    """A fresh page on the dashboard of `server`."""
    yield open_page(server.url + "/")
    server.cancel_active()


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
