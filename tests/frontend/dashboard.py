"""Helpers that drive the dashboard page the way a person would."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The tiny training recipe every test uses: a run takes ~10-20 s on 2 CPU cores. The
# paper's MLP without diagnostics: half the CPU of the default CNN with them (a worker's
# start-up is most of a tiny run). The tests that need the CNN's slower steps, or the
# Inside panel's measures, ask for them (CNN).
TINY = {
    "arch": "mlp",
    "diagnostics": "off",
    "steps": 40,
    "eval_every": 10,
    "batch_size": 32,
    "train_subset": 2000,
}
# The form's own network and diagnostics, as a person starting it unchanged gets them.
CNN = {"arch": "cnn", "diagnostics": "basic"}


def fill_form(page, *, single: bool = False, batch_norm: bool = True, **values) -> None:
    """Fill the start form: TINY plus `values` (field name -> value)."""
    page.get_by_test_id("mode-single" if single else "mode-compare").check()
    if single:
        page.get_by_test_id("field-batch_norm").set_checked(batch_norm)
    advanced = page.get_by_test_id("advanced")
    if advanced.get_attribute("open") is None:
        advanced.locator("summary").click()
    for name, value in {**TINY, **values}.items():
        field_ = page.get_by_test_id(f"field-{name}")
        if field_.evaluate("el => el.tagName") == "SELECT":
            field_.select_option(str(value))
        else:
            field_.fill(str(value))


def start(page, *, single: bool = False, **values) -> list[dict]:
    """Start a comparison (or a single run) from the form; returns the new runs."""
    fill_form(page, single=single, **values)
    path = "/api/runs" if single else "/api/comparisons"
    with page.expect_response(
        lambda r: r.url.endswith(path) and r.request.method == "POST"
    ) as info:
        page.get_by_test_id("submit").click()
    response = info.value
    assert response.status == 201, response.text()
    body = response.json()
    return [body] if single else body["runs"]


def row(page, run_id: str):
    return page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')


def acc_trace_lengths(page, run_ids: list[str]) -> list[int]:
    """Number of points of each run's raw trace on the accuracy chart."""
    return page.evaluate(
        """ids => {
            const data = document.querySelector('[data-testid=chart-acc]').data || [];
            return ids.map(id => {
                const t = data.find(t => t.meta && t.meta.runId === id && t.meta.kind === 'raw');
                return t ? t.x.length : -1;
            });
        }""",
        run_ids,
    )


def save_screenshot(page, output_dir: Path, name: str, docs_name: str = "screenshot.png") -> Path:
    """The page as a PNG in the test output; with $BNLAB_SAVE_SCREENSHOT also as
    docs/<docs_name>, the README's picture."""
    path = output_dir / name
    page.screenshot(path=path, full_page=True)
    if os.environ.get("BNLAB_SAVE_SCREENSHOT"):
        shutil.copyfile(path, ROOT / "docs" / docs_name)
    return path
