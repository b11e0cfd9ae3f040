"""A newcomer's first hour on the runs page (issue #28): the answer under the curves, runs
named by the address, legend names that keep what tells runs apart, and the small things
that read as broken. One tiny comparison (diagnostics off) backs the page's checks; the
rules behind the words are checked on the page's own modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from bnlab.server.testing import ServerProcess
from tests.frontend.conftest import wait_until_ready
from tests.frontend.dashboard import TINY, row

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def comparison(server: ServerProcess) -> list[dict[str, Any]]:
    """A finished tiny comparison (BN first), trained with diagnostics off."""
    started = server.post("/api/comparisons", TINY)
    assert started.status_code == 201, started.text
    runs = started.json()["runs"]
    for run in runs:
        assert server.wait_status(run["id"], "completed", "failed", timeout=300)["status"] == (
            "completed"
        )
    return runs


def _headline(page, bn: dict, no_bn: dict) -> dict:
    return page.evaluate(
        """async ([bn, noBn]) => (await import('/js/runs/headline.js')).headline(bn, noBn)""",
        [bn, no_bn],
    )


def _entry(status: str, accuracy: float | None, steps_to: dict[str, int | None]) -> dict:
    return {
        "run": {"status": status},
        "summary": {"test_accuracy": accuracy, "best_val_acc": 0.9, "steps_to": steps_to},
    }


def test_the_answer_says_who_reached_each_milestone_first_and_when(page):
    never = {"0.97": None, "0.98": None, "0.99": None}
    # 600 steps: BN reached 97 % at step 500, no-BN never did, nobody reached 98 %.
    answer = _headline(
        page,
        _entry("completed", 0.9752, {**never, "0.97": 500}),
        _entry("completed", 0.9611, never),
    )
    assert answer["lead"] == ("Test accuracy: BN 97.52 %, no-BN 96.11 % (BN ahead, +1.41 pp).")
    assert [m["text"] for m in answer["milestones"]] == [
        "97 %: BN at step 500; no-BN never reached it.",
        "98 %: neither run reached it.",
    ]
    # Both reached it: who first, when, and how many more steps the other took.
    answer = _headline(
        page,
        _entry("completed", 0.99, {"0.97": 200, "0.98": 400, "0.99": None}),
        _entry("completed", 0.985, {"0.97": 500, "0.98": 1400, "0.99": None}),
    )
    assert answer["milestones"][0]["text"] == (
        "97 %: BN first, at step 200; no-BN at step 500 (2.50\N{MULTIPLICATION SIGN} the steps)."
    )
    assert answer["milestones"][2]["text"] == "99 %: neither run reached it."
    # While training, nothing is "never" yet, and the test accuracy is still to come.
    answer = _headline(
        page,
        _entry("running", None, {**never, "0.97": 300}),
        _entry("running", None, never),
    )
    assert answer["lead"].startswith("Still training")
    assert answer["milestones"][0]["text"] == (
        "97 %: BN at step 300; no-BN has not reached it yet."
    )
    # Short of the first milestone (the quick look: BN at 95 %, no-BN at chance), the
    # answer says how far each run got, and where.
    low = _entry("completed", 0.9565, never)
    low["summary"].update(best_val_acc=0.958, best_val_acc_step=300)
    chance = _entry("completed", 0.1135, never)
    chance["summary"].update(best_val_acc=0.1126, best_val_acc_step=50)
    answer = _headline(page, low, chance)
    assert answer["lead"] == (
        "Test accuracy: BN 95.65 %, no-BN 11.35 % (BN ahead, +84.30 pp). no-BN did not "
        "learn: its best validation accuracy, 11.26 %, is near chance (one digit in ten)."
    )
    assert [m["text"] for m in answer["milestones"]] == [
        "97 % validation accuracy: neither run reached it; "
        "best BN 95.80 % (step 300), no-BN 11.26 % (step 50)."
    ]


def test_a_deep_link_shows_its_runs_at_the_top_with_the_answer_under_the_curves(
    open_page, server, comparison
):
    ids = [r["id"] for r in comparison]
    page = open_page(server.url + f"/#runs={','.join(ids)}")
    # The runs named, alone in the table and selected; the address keeps saying so.
    page.wait_for_function(
        "ids => window.bnlab.selected().slice().sort().join() === ids.slice().sort().join()",
        arg=ids,
    )
    shown = page.locator("[data-testid=run-row]:visible")
    expect(shown).to_have_count(2)
    for run_id in ids:
        expect(row(page, run_id)).to_be_visible()
    assert page.url.endswith(f"#runs={','.join(ids)}")
    assert page.evaluate("window.scrollY") == 0

    # The answer, in words and numbers, right under the curves.
    panel = page.get_by_test_id("compare-panel")
    expect(panel).to_have_attribute("data-state", "complete", timeout=20_000)
    assert panel.evaluate(
        "el => !!el.previousElementSibling.querySelector('[data-testid=chart-acc]')"
    )
    lead = page.get_by_test_id("headline-lead")
    expect(lead).to_contain_text("Test accuracy: BN ")
    expect(lead).to_contain_text(" pp)")
    # 40 steps reach no milestone: the answer says how far each run got instead.
    expect(page.get_by_test_id("headline-milestone").first).to_contain_text(
        "97 % validation accuracy: neither run reached it; best BN "
    )
    expect(page.get_by_test_id("speedup")).to_contain_text(
        "never reached 98 % validation accuracy (best: "
    )

    # Diagnostics off: the panel says so once, in its status line, and shows no chart
    # (not six lines repeating it).
    inside = page.get_by_test_id("inside-panel")
    expect(inside.locator(".inside-chart:visible")).to_have_count(0)
    expect(inside).to_contain_text("trained with diagnostics off")
    expect(inside).to_contain_text("Train with diagnostics Basic or Full to see inside")
    assert (
        inside.inner_text().count("not recorded") + inside.inner_text().count("Not recorded") == 1
    )
    assert inside.bounding_box()["height"] < 200

    # A reload keeps the view; the user's own runs are one click away.
    page.reload()
    wait_until_ready(page)
    expect(page.locator("[data-testid=run-row]:visible")).to_have_count(2)
    page.get_by_test_id("run-group-back").click()
    page.wait_for_url("**/#runs")
    expect(page.get_by_test_id("runs-filter")).to_have_value("own")


def test_legend_names_keep_bn_and_the_varied_fields(page):
    def run(i: int, bn: bool, rate: float, seed: int) -> dict:
        arm = "BN" if bn else "no-BN"
        return {
            "id": f"run{i}",
            "label": f"sat-small · {arm} · mlp sigmoid · sgd {rate:g} · seed {seed}",
            "config": {
                "arch": "mlp",
                "batch_norm": bn,
                "optimizer": "sgd",
                "learning_rate": rate,
                "activation": "sigmoid",
                "seed": seed,
                "steps": 2000,
            },
        }

    runs = [run(0, True, 0.5, 2), run(1, False, 0.5, 2), run(2, True, 0.05, 3)]
    names = page.evaluate(
        """async runs => Object.fromEntries(
            (await import('/js/runs/labels.js')).legendNames(runs))""",
        runs,
    )
    assert names["run0"].startswith("BN · lr 0.5 · seed 2")
    assert names["run1"].startswith("no-BN · lr 0.5 · seed 2")
    assert names["run2"].startswith("BN · lr 0.05 · seed 3")
    assert all(len(n) <= 40 for n in names.values()), names
    # The hover box shows the whole label, and the legends never scroll.
    layout = page.evaluate(
        "() => { const l = document.querySelector('[data-testid=chart-acc]').layout;"
        " return {legend: l.legend, namelength: l.hoverlabel.namelength}; }"
    )
    assert layout["namelength"] == -1
    assert "maxheight" not in layout["legend"]


def test_the_small_things_read_right(page):
    # The accuracy axis of a chart with only its step-0 point stays within 0-100 %.
    accuracy = page.evaluate(
        """async () => {
            const live = document.querySelector('[data-testid=chart-acc]').layout;
            const el = document.body.appendChild(document.createElement('div'));
            Object.assign(el.style, {width: '400px', height: '300px'});
            await Plotly.newPlot(el, [{x: [0], y: [0.1]}], {yaxis: live.yaxis});
            const range = el._fullLayout.yaxis.range;
            el.remove();
            return range;
        }"""
    )
    assert accuracy[0] >= 0 and accuracy[1] <= 1, accuracy

    # An empty factor plot spans 0-100 %, not 0-5 %.
    factor = page.evaluate(
        """async () => {
            const { FactorPlot } = await import('/js/experiments/charts.js');
            const el = document.body.appendChild(document.createElement('div'));
            Object.assign(el.style, {width: '400px', height: '300px'});
            const arm = {test_accuracy: {mean: null, ci_low: null, ci_high: null},
                         n: 2, n_finished: 0, n_diverged: 0};
            const experiment = {design: {vary: {learning_rate: [0.05, 0.5]}}, cells: [0.05, 0.5]
                .map(v => ({factors: {learning_rate: v}, arms: {bn: arm, no_bn: arm}}))};
            const chart = new FactorPlot(el, {request: () => {}});
            chart.state = {experiment};
            await chart.draw();
            const range = el._fullLayout.yaxis.range;
            el.remove();
            return range;
        }"""
    )
    assert factor == [0, 1], factor

    # Accuracy differences are percentage points.
    assert page.evaluate("async () => (await import('/js/format.js')).pp(-0.0123)") == (
        "\N{MINUS SIGN}1.23 pp"
    )

    # The Activation select shows its whole choice ("Network's own").
    room, text = page.evaluate(
        """() => {
            const s = document.querySelector('[data-testid=field-activation]');
            const style = getComputedStyle(s);
            const ctx = document.createElement('canvas').getContext('2d');
            ctx.font = style.font;
            const arrow = 20;  // Chromium's drop-down arrow
            const room = s.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight) - arrow;
            return [room, Math.max(...[...s.options].map(o => ctx.measureText(o.text).width))];
        }"""
    )
    assert room >= text, (room, text)

    # An error under one field leaves the field beside it where it was.
    beside = page.get_by_test_id("field-batch_size")
    before = beside.bounding_box()["y"]
    page.get_by_test_id("field-learning_rate").fill("-1")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("error-learning_rate")).to_be_visible()
    assert beside.bounding_box()["y"] == pytest.approx(before, abs=0.5)
    assert page.get_by_test_id("field-learning_rate").bounding_box()["y"] == pytest.approx(
        before, abs=0.5
    )


def test_quick_look_starts_a_short_high_learning_rate_comparison(page, server):
    # The quick look's values live in the page's module; the request, the button's hover
    # text and the README's Quick start all say the same.
    quick = page.evaluate(
        """async () => {
          const { PRESETS, QUICK_LOOK } = await import('/js/runs/form.js');
          return { ...PRESETS[QUICK_LOOK.preset].values({}), ...QUICK_LOOK.values };
        }"""
    )
    assert quick["optimizer"] == "sgd" and quick["diagnostics"] == "off"
    with page.expect_response(
        lambda r: r.url.endswith("/api/comparisons") and r.request.method == "POST"
    ) as info:
        page.get_by_test_id("quick-look").click()
    assert info.value.status == 201, info.value.text()
    runs = info.value.json()["runs"]
    for run in runs:
        server.post(f"/api/runs/{run['id']}/cancel")  # its minute is not this test's
    configs = [r["config"] for r in runs]
    assert [c["batch_norm"] for c in configs] == [True, False]
    defaults = server.http.get("/openapi.json").json()["components"]["schemas"]["RunCreate"]
    assert all(c["arch"] == defaults["properties"]["arch"]["default"] for c in configs)
    assert all({k: c[k] for k in quick} == quick for c in configs)
    title = page.get_by_test_id("quick-look").get_attribute("title")
    assert f"for {quick['steps']} steps" in title and f"at {quick['learning_rate']}" in title
    readme = " ".join((ROOT / "README.md").read_text().split())
    quick_start = readme[readme.index("**For a quick first look**") :][:600]
    assert f"for {quick['steps']} steps" in quick_start
    assert f"SGD at {quick['learning_rate']}" in quick_start
