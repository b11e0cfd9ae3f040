"""A server whose reads need its access token (issue #30): the page asks for the token
instead of breaking, shows the runs once it has it, and downloads with it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bnlab.server.testing import ServerProcess
from tests.frontend.dashboard import row
from tests.server.samples import load_release_db

# The servers here start on the database release 0.1.0 left (tests/server/samples.py):
# runs in the list without making one, whose worker (and its fork server's TensorFlow
# import, seconds of CPU) would start only to be cancelled. What is listed is the point.
KEPT_RUN = "completed-bn"  # a finished run of it, with its points


@pytest.fixture(scope="module")
def token_server(data_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server started with --token (as conftest's), on the release database."""
    token = "test-token-" + os.urandom(8).hex()
    db = load_release_db(tmp_path_factory.mktemp("token-server") / "bnlab.db")
    with ServerProcess(db, data_dir, token=token) as running:
        yield running


@pytest.fixture(scope="module")
def public_server(data_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """A read-only public board: a token for changes, `--public-read` for the rest."""
    token = "test-token-" + os.urandom(8).hex()
    db = load_release_db(tmp_path_factory.mktemp("public-server") / "bnlab.db")
    with ServerProcess(db, data_dir, workers=1, token=token, extra=["--public-read"]) as running:
        yield running


def made_run(server: ServerProcess) -> str:
    """A finished run in the list."""
    assert server.run(KEPT_RUN)["status"] == "completed"
    return KEPT_RUN


def test_the_page_asks_for_the_token_and_then_shows_the_runs(open_page, token_server, page_errors):
    run_id = made_run(token_server)
    # Without the token the live sockets are refused (Chromium logs each refusal).
    page_errors.allow(r"WebSocket connection to .* failed")
    page = open_page(token_server.url + "/")
    form = page.get_by_test_id("token-form")
    expect(form).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("token-reason")).to_contain_text("needs its access token")
    expect(page.get_by_test_id("run-row")).to_have_count(0)

    page.get_by_test_id("token-input").fill(token_server.token)
    page.get_by_test_id("token-input").press("Enter")
    expect(form).to_be_hidden()
    expect(row(page, run_id)).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("conn-banner")).to_be_hidden(timeout=10_000)


def test_a_link_with_the_token_shows_the_runs_and_downloads_with_it(
    open_page, token_server, page_errors
):
    run_id = made_run(token_server)
    page = open_page(f"{token_server.url}/#token={token_server.token}")
    expect(row(page, run_id)).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("token-form")).to_be_hidden()
    expect(page.get_by_test_id("health")).to_contain_text("workers")  # the reader's health
    # A download link cannot send the header: the page fetches the file with it.
    with page.expect_download() as info:
        row(page, run_id).locator("a", has_text="CSV").click()
    download = info.value
    assert download.suggested_filename == f"bnlab-{run_id}.csv"
    assert Path(download.path()).read_text().startswith("step,")
    assert not page_errors.errors  # connected on the first try, nothing refused


def test_a_wrong_token_gets_the_prompt_again(open_page, token_server, page_errors):
    page_errors.allow(r"WebSocket connection to .* failed")
    page = open_page(f"{token_server.url}/#token=not-the-token")
    expect(page.get_by_test_id("token-form")).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("token-reason")).to_contain_text("refuses this access token")


def test_a_public_board_shows_its_runs_without_the_token(open_page, public_server, page_errors):
    run_id = made_run(public_server)
    page = open_page(public_server.url + "/")
    expect(row(page, run_id)).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("token-form")).to_be_hidden()
    page.wait_for_timeout(1000)
    expect(page.get_by_test_id("conn-banner")).to_be_hidden()  # the live feed is open
    assert not page_errors.errors


def test_the_health_line_fills_once_a_token_is_entered(open_page, token_server, page_errors):
    page_errors.allow(r"status of 401")  # Chromium logs the refused requests itself
    page_errors.allow(r"WebSocket connection to .* failed")
    page = open_page(token_server.url + "/")
    health = page.get_by_test_id("health")
    expect(page.get_by_test_id("token-form")).to_be_visible()
    assert health.text_content() == ""
    page.get_by_test_id("token-input").fill(token_server.token)
    page.get_by_test_id("token-save").click()
    expect(health).to_contain_text("TensorFlow")
