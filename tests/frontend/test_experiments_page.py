"""The Experiments page in a real browser against a real server: a person opens the
learning-rate preset, shrinks it to a tiny design, starts it and reads the answer.
One experiment, run once per module with a dropped connection in the middle, backs
every assertion but the bad design's."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from statistics import fmean
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.frontend.conftest import OUTPUT, VIEWPORT, PageErrors, wait_until_ready
from tests.frontend.dashboard import TINY, save_screenshot

# The learning-rate preset (the paper's MLP), cut down: 2 cells x 2 seeds x 2 arms = 8
# runs of 60 steps on 1,000 images. BN's moving averages must catch up within 60 steps.
# Dropout is varied too, with one value: a second varied field brings the heatmap, and
# no more runs.
TINY_DESIGN = {
    "steps": "60",
    "eval_every": "20",
    "train_subset": "1000",
    "batch_size": "32",
    "bn_decay": "0.5",
}
LEARNING_RATES = "0.05, 0.5"
RUNS = 8
TIMEOUT_S = 240  # a tiny run takes seconds alone, much longer on a loaded machine


def open_experiments(page, url: str) -> None:
    page.goto(url)
    wait_until_ready(page)
    page.wait_for_selector("[data-testid=experiments-page][data-state=ready]", state="attached")


def open_tiny_design(page, **changes: str) -> None:
    """Open the learning-rate preset and shrink it, as a person would in the designer,
    without the preset's claim (its contrasts name rates the tiny design does not have)."""
    page.get_by_test_id("exp-preset-learning-rate").click()
    expect(page.get_by_test_id("exp-claim-statement")).to_contain_text("learning rates")
    page.get_by_test_id("exp-claim-on").uncheck()
    expect(page.get_by_test_id("exp-vary-field-0")).to_have_value("learning_rate")
    page.get_by_test_id("exp-vary-values-0").fill(changes.pop("values", LEARNING_RATES))
    page.get_by_test_id("exp-seeds").fill(changes.pop("seeds", "2"))
    for name, value in {**TINY_DESIGN, **changes}.items():
        page.get_by_test_id(f"exp-base-{name}").fill(value)


def trace(traces: list[dict[str, Any]], cell: int, arm: str, kind: str) -> dict[str, Any]:
    (found,) = [t for t in traces if t["meta"] == {"cell": cell, "arm": arm, "kind": kind}]
    return found


def chart_traces(page, testid: str) -> list[dict[str, Any]]:
    return page.evaluate(
        """id => (document.querySelector(`[data-testid=${id}]`).data || []).map(t => ({
            meta: t.meta, x: t.x, y: t.y, fill: t.fill || null, dash: t.line && t.line.dash,
            color: t.line && t.line.color, error_y: t.error_y || null, name: t.name}))""",
        testid,
    )


def count_chart_draws(page) -> None:
    """From now on, note the animation frame (its timestamp, the same for every callback
    of one frame) of every Plotly.react on an experiment chart. Once per page load: hooked
    twice, every draw would count twice."""
    page.evaluate(
        """() => {
            window.__draws = [];
            if (window.__frame !== undefined) return;
            window.__frame = null;
            const raf = window.requestAnimationFrame.bind(window);
            window.requestAnimationFrame = (cb) => raf((t) => { window.__frame = t; cb(t); });
            const react = Plotly.react;
            Plotly.react = function (el, ...rest) {
                const chart = el.closest('[data-testid=experiment-view]');
                if (chart) window.__draws.push(window.__frame);
                return react.call(this, el, ...rest);
            };
        }"""
    )


@pytest.fixture(scope="module")
def finished(browser, server) -> dict[str, Any]:
    """The tiny design started from the page and watched to the end, its live socket
    dropped (and reconnected) while runs were still ending."""
    errors = PageErrors()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda exc: errors.errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda m: m.type == "error" and errors.errors.append(f"console.error: {m.text}"),
    )
    open_experiments(page, server.url + "/#experiments")
    count_chart_draws(page)
    open_tiny_design(page)
    page.get_by_test_id("exp-vary-field-1").select_option("dropout")
    page.get_by_test_id("exp-vary-values-1").fill("0")
    plan = page.get_by_test_id("exp-plan")
    expect(plan).to_contain_text(f"{RUNS} runs")
    with page.expect_response(
        lambda r: r.url.endswith("/api/experiments") and r.request.method == "POST"
    ) as info:
        page.get_by_test_id("exp-start").click()
    assert info.value.status == 201, info.value.text()
    experiment_id = info.value.json()["id"]
    page.wait_for_url(f"**/#experiment={experiment_id}")

    # Drop the connection once some runs have ended and others have not.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        progress = server.http.get(f"/api/experiments/{experiment_id}").json()["progress"]
        if progress["runs"].get("completed", 0) >= 2:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    seqs_before_drop = page.evaluate("window.bnlab.experiment.appliedSeqs()")
    page.evaluate("window.bnlab.socket.drop(1000)")
    expect(page.get_by_test_id("exp-status")).to_have_text("completed", timeout=TIMEOUT_S * 1000)
    final = server.http.get(f"/api/experiments/{experiment_id}").json()
    # The page has drawn the final state (one chart per animation frame).
    page.wait_for_function(
        "seq => window.bnlab.experiment.appliedSeqs().at(-1) === seq", arg=final["last_seq"]
    )
    page.wait_for_timeout(300)
    yield {
        "page": page,
        "id": experiment_id,
        "final": final,
        "seqs_before_drop": seqs_before_drop,
        "errors": errors,
    }
    context.close()
    assert not errors.unexpected(), errors.errors


def test_curves_show_each_arm_as_a_mean_line_over_a_95_percent_band(finished):
    page, final = finished["page"], finished["final"]
    traces = chart_traces(page, "exp-chart-acc")
    colours = set()
    for index, cell in enumerate(final["cells"]):
        for arm in ("bn", "no_bn"):
            curve = cell["arms"][arm]["curve"]
            steps = [p["step"] for p in curve]
            assert steps == [0, 20, 40, 60]
            band = trace(traces, index, arm, "band")
            mean = trace(traces, index, arm, "mean")
            # The band runs along the upper ends and back along the lower ends, filled.
            assert band["fill"] == "toself"
            assert band["x"] == steps + steps[::-1]
            high = [p["val_acc"]["ci_high"] for p in curve]
            low = [p["val_acc"]["ci_low"] for p in curve]
            assert band["y"] == pytest.approx(high + low[::-1])
            assert all(h >= lo for h, lo in zip(high, low, strict=True))
            assert mean["x"] == steps
            assert mean["y"] == pytest.approx([p["val_acc"]["mean"] for p in curve])
            assert mean["dash"] == ("solid" if arm == "bn" else "dash")
            colours.add((index, mean["color"]))
    # One colour per cell, shared by its two arms.
    assert len({c for _, c in colours}) == len(final["cells"]) == 2
    assert len(colours) == 2
    loss = chart_traces(page, "exp-chart-loss")
    assert sum(t["meta"]["kind"] == "band" and t["fill"] == "toself" for t in loss) == 4
    # The legend sits below the axis and its labels, inside the chart, as on the Runs page:
    # it never covers the curves, however many cells there are (past a few rows it scrolls).
    for testid in ("exp-chart-acc", "factor-plot"):
        legend, axis = page.evaluate(
            """id => [' .legend .bg', ' .xaxislayer-above'].map(sel => document
                .querySelector(`[data-testid=${id}]${sel}`).getBoundingClientRect().toJSON())""",
            testid,
        )
        assert legend["top"] >= axis["bottom"] - 1, (testid, legend, axis)


def test_a_dropped_connection_resumes_with_nothing_doubled_or_missing(finished):
    page, final = finished["page"], finished["final"]
    seqs = page.evaluate("window.bnlab.experiment.appliedSeqs()")
    before = finished["seqs_before_drop"]
    assert seqs[: len(before)] == before  # the same stream, resumed
    assert len(seqs) > len(before), "no update arrived after the reconnect"
    assert seqs == sorted(set(seqs)), f"an update was applied twice: {seqs}"
    assert seqs[-1] == final["last_seq"]
    # What the page draws is exactly the server's final answer: every point once.
    traces = chart_traces(page, "exp-chart-loss")
    for index, cell in enumerate(final["cells"]):
        for arm in ("bn", "no_bn"):
            mean = trace(traces, index, arm, "mean")
            curve = cell["arms"][arm]["curve"]
            assert mean["x"] == [p["step"] for p in curve]
            assert mean["y"] == pytest.approx([p["val_loss"]["mean"] for p in curve])


def test_charts_update_at_most_once_per_animation_frame(finished):
    page = finished["page"]
    draws = page.evaluate("window.__draws")
    updates = len(page.evaluate("window.bnlab.experiment.appliedSeqs()"))
    assert draws, "the charts were never drawn"
    assert len(draws) == len(set(draws)), f"two chart draws in one frame: {draws}"
    # Four charts, redrawn only when the answer changed (a run ended), never per message.
    assert len(draws) <= 4 * updates


def test_the_verdict_table_reads_the_answer_cell_by_cell(finished):
    page, final = finished["page"], finished["final"]
    table = page.get_by_test_id("verdict-table")
    rows = table.get_by_test_id("verdict-row")
    expect(rows).to_have_count(2)
    sentences = table.get_by_test_id("verdict-sentence")
    for i, cell in enumerate(final["cells"]):
        row = rows.nth(i)
        effect = cell["effect"]
        assert effect["verdict"] == "not_enough_seeds"  # two seeds can never show p < 0.05
        expect(row).to_have_attribute("data-verdict", "not_enough_seeds")
        expect(row).to_contain_text("too few seeds to ever tell")
        # The sentence, under the cell's figures, with the test's name.
        expect(sentences.nth(i)).to_have_text(f"{effect['sentence']} ({effect['test']} test)")
        expect(sentences.nth(i)).to_contain_text("Not enough seeds to tell")
        text = row.inner_text()
        assert f"learning_rate {cell['factors']['learning_rate']}" in text
        for arm in ("bn", "no_bn"):
            accuracy = cell["arms"][arm]["test_accuracy"]
            assert f"{accuracy['mean'] * 100:.2f} %" in text
            assert f"{accuracy['ci_low'] * 100:.2f} % to {accuracy['ci_high'] * 100:.2f} %" in text
        # The table's p is the sentence's (three significant digits in both).
        p_cell = row.locator("td").nth(5)
        expect(p_cell).to_have_text(f"{effect['p_value']:.3g}")
        assert f"p = {p_cell.inner_text()}," in effect["sentence"]
        # beside it, the p the verdict is decided on: Holm over the experiment's cells
        expect(row.get_by_test_id("p-adjusted")).to_have_text(f"{effect['p_adjusted']:.3g}")
        # the paired difference, in percentage points
        difference = effect["difference"]["mean"] * 100
        sign = "+" if difference >= 0 else "\u2212"  # format.js's pp: a true minus sign
        expect(row.locator("td").nth(4)).to_contain_text(f"{sign}{abs(difference):.2f} pp")
    headers = table.locator("thead th").all_inner_texts()
    assert headers[:9] == [
        "CELL",
        "N PAIRS",
        "BN",
        "NO BN",
        "BN \N{MINUS SIGN} NO BN",
        "P",
        "P (HOLM)",
        "SPEED-UP TO 98 %",
        "VERDICT",
    ]


def test_the_factor_plot_puts_each_arm_against_the_learning_rate_on_a_log_axis(finished):
    page, final = finished["page"], finished["final"]
    axis = page.evaluate(
        "() => document.querySelector('[data-testid=factor-plot]').layout.xaxis.type"
    )
    assert axis == "log"
    traces = [t for t in chart_traces(page, "factor-plot") if t["meta"]["kind"] == "arm"]
    assert [t["meta"]["arm"] for t in traces] == ["bn", "no_bn"]
    for trace in traces:
        arm = trace["meta"]["arm"]
        means = [c["arms"][arm]["test_accuracy"] for c in final["cells"]]
        assert trace["y"] == pytest.approx([m["mean"] for m in means])
        assert trace["error_y"]["array"] == pytest.approx([m["ci_high"] - m["mean"] for m in means])
    # Colour means cell, as on the curves; the arms differ by line and marker fill.
    acc = chart_traces(page, "exp-chart-acc")
    curves = [t["color"] for t in acc if t["meta"]["kind"] == "mean" and t["meta"]["arm"] == "bn"]
    markers = page.evaluate(
        """() => document.querySelector('[data-testid=factor-plot]').data
            .filter(t => t.meta.kind === 'arm')
            .map(t => ({colors: t.marker.color, symbol: t.marker.symbol, dash: t.line.dash}))"""
    )
    assert [m["colors"] for m in markers] == [curves, curves]
    assert [(m["symbol"], m["dash"]) for m in markers] == [
        ("circle", "solid"),
        ("circle-open", "dash"),
    ]


def test_two_varied_fields_add_a_heatmap_of_the_difference_per_cell(finished):
    page, final = finished["page"], finished["final"]
    expect(page.get_by_test_id("heatmap")).to_be_visible()
    (trace,) = page.evaluate(
        """() => document.querySelector('[data-testid=heatmap]').data
            .map(t => ({x: t.x, y: t.y, z: t.z, text: t.text}))"""
    )
    assert (trace["x"], trace["y"]) == (["0.05", "0.5"], ["0"])
    differences = [c["effect"]["difference"]["mean"] * 100 for c in final["cells"]]
    assert trace["z"] == [pytest.approx(differences)]
    for text, difference in zip(trace["text"][0], differences, strict=True):
        # Percentage points, not a percentage of anything.
        assert text.startswith(f"{difference:+.2f} pp".replace("-", "\N{MINUS SIGN}"))


def test_the_seed_toggle_draws_every_run_as_a_thin_line(finished):
    page = finished["page"]
    toggle = page.get_by_label("Show individual seeds")
    with page.expect_response(lambda r: "/export?format=json" in r.url) as info:
        toggle.check()
    # The seeds' curves poll the export without the points' diagnostics (~7.5 KB each).
    assert "diagnostics" not in info.value.url
    assert not any("diagnostics" in point for point in info.value.json()["curves"])
    page.wait_for_function(
        """n => (document.querySelector('[data-testid=exp-chart-acc]').data || [])
            .filter(t => t.meta.kind === 'seed').length === n""",
        arg=RUNS,
    )
    seeds = [t for t in chart_traces(page, "exp-chart-acc") if t["meta"]["kind"] == "seed"]
    assert all(t["x"] == [0, 20, 40, 60] for t in seeds)
    toggle.uncheck()
    page.wait_for_function(
        """() => !(document.querySelector('[data-testid=exp-chart-acc]').data || [])
            .some(t => t.meta.kind === 'seed')"""
    )


def test_the_deep_link_reopens_the_same_view_after_a_reload(finished):
    page, final = finished["page"], finished["final"]
    page.reload()
    wait_until_ready(page)
    assert page.url.endswith(f"#experiment={finished['id']}")
    expect(page.get_by_test_id("exp-status")).to_have_text("completed")
    expect(page.get_by_test_id("verdict-table").get_by_test_id("verdict-row")).to_have_count(2)
    page.wait_for_function(
        """() => (document.querySelector('[data-testid=exp-chart-acc]').data || [])
            .filter(t => t.meta.kind === 'band').length === 4"""
    )
    listed = page.get_by_test_id("experiments-list").get_by_test_id("experiment-item")
    expect(listed.filter(has=page.locator(f'a[href="#experiment={final["id"]}"]'))).to_have_count(1)
    # Exports: the experiment's JSON and CSV, as the API serves them.
    for testid, kind in [("exp-export-json", "json"), ("exp-export-csv", "csv")]:
        href = page.get_by_test_id(testid).get_attribute("href")
        exported = page.request.get(server_root(page) + href)
        assert exported.ok and kind in exported.headers["content-type"]
    assert len(page.request.get(server_root(page) + href).text().splitlines()) == RUNS + 1
    page.wait_for_timeout(500)  # the last chart's frame
    OUTPUT.mkdir(parents=True, exist_ok=True)
    save_screenshot(page, OUTPUT, "experiment.png", "experiment.png")


def test_a_missing_experiment_keeps_nothing_of_the_one_shown_before(finished):
    page = finished["page"]
    page.goto(server_root(page) + f"/#experiment={finished['id']}")
    expect(page.get_by_test_id("exp-hypothesis")).not_to_be_empty()
    expect(page.get_by_test_id("exp-export-json")).to_be_visible()
    page.goto(server_root(page) + "/#experiment=doesnotexist")
    expect(page.get_by_test_id("exp-gone")).to_be_visible()
    expect(page.get_by_test_id("exp-status")).to_have_text("not found")
    expect(page.get_by_test_id("exp-hypothesis")).to_be_empty()
    for testid in ("exp-export-json", "exp-export-csv", "exp-export-curves"):
        expect(page.get_by_test_id(testid)).to_be_hidden()  # they would answer 404


def server_root(page) -> str:
    return page.url.split("#")[0].rstrip("/")


def test_a_cell_opens_its_runs_in_the_runs_view(finished):
    page, final = finished["page"], finished["final"]
    page.goto(page.url.split("#")[0] + f"#experiment={final['id']}")
    rows = page.get_by_test_id("verdict-row")
    expect(rows).to_have_count(2)
    rows.nth(1).get_by_test_id("open-cell-runs").click()
    expect(page.get_by_test_id("runs-page")).to_be_visible()
    expected = {r["id"] for r in final["runs"] if r["config"]["learning_rate"] == 0.5}
    page.wait_for_function("n => window.bnlab.selected().length === n", arg=len(expected))
    assert set(page.evaluate("window.bnlab.selected()")) == expected
    # The runs named, alone in the table, at the top of the page; the address names them,
    # so a reload shows the same.
    # The answer under the curves pairs each seed's twins, as it pairs a comparison's,
    # and each pair has one colour of its own.
    expect(page.get_by_test_id("headline-lead")).to_have_count(2)  # 2 seeds
    expect(page.get_by_test_id("speedup")).to_have_count(2)
    config = {r["id"]: r["config"] for r in final["runs"]}
    colours = {
        t["meta"]["runId"]: t["color"]
        for t in chart_traces(page, "chart-acc")
        if (t["meta"] or {}).get("runId")
    }
    by_seed: dict[int, set[str]] = {}
    for run_id, colour in colours.items():
        by_seed.setdefault(config[run_id]["seed"], set()).add(colour)
    assert sorted(len(c) for c in by_seed.values()) == [1, 1] and len(set(colours.values())) == 2
    for _ in range(2):
        assert set(page.url.split("#runs=")[1].split(",")) == expected
        shown = page.locator("[data-testid=run-row]:visible")
        expect(shown).to_have_count(len(expected))
        assert {r.get_attribute("data-run-id") for r in shown.all()} == expected
        page.wait_for_function("() => window.scrollY === 0")
        page.reload()
        wait_until_ready(page)
        page.wait_for_function("n => window.bnlab.selected().length === n", arg=len(expected))
    # The user's own runs leave the experiment's behind one line; it shows them on a click.
    page.get_by_test_id("run-group-back").click()
    # Back to the user's own runs, the experiment's are no longer plotted either: charts
    # of runs the table hides (and cannot untick) read as broken.
    page.wait_for_function(
        "ids => !window.bnlab.selected().some(id => ids.includes(id))", arg=sorted(expected)
    )
    group = page.locator(f'[data-testid=run-group][data-experiment-id="{final["id"]}"]')
    expect(group).to_contain_text(f"{RUNS} runs")
    for run_id in expected:
        expect(page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')).to_be_hidden()
    group.click()
    page.wait_for_url(f"**/#runs=experiment:{final['id']}")
    expect(page.locator("[data-testid=run-row]:visible")).to_have_count(RUNS)
    # Each seed's twins side by side, BN first, as a comparison's are.
    by_id = {r["id"]: r["config"] for r in final["runs"]}
    order = [
        by_id[r.get_attribute("data-run-id")]
        for r in page.locator("[data-testid=run-row]:visible").all()
    ]
    for bn, no_bn in zip(order[::2], order[1::2], strict=True):
        assert (bn["batch_norm"], no_bn["batch_norm"]) == (True, False), order
        assert {**bn, "batch_norm": False} == no_bn


def test_a_bad_design_shows_the_fields_error_and_starts_nothing(open_page, page_errors, server):
    page_errors.allow(r"status of 422")  # Chromium logs the refused request itself
    before = server.http.get("/api/experiments").json()["items"]
    page = open_page(server.url + "/#experiments")
    page.wait_for_selector("[data-testid=experiments-page][data-state=ready]", state="attached")
    open_tiny_design(page, values="0.05, 0.05", steps="-5")
    vary_error = page.get_by_test_id("exp-error-vary")
    expect(vary_error).to_contain_text("learning_rate: 0.05 is listed twice")
    expect(page.get_by_test_id("exp-vary-values-0")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("exp-plan")).to_contain_text("Fix the fields")
    with page.expect_response(
        lambda r: r.url.endswith("/api/experiments") and r.request.method == "POST"
    ) as info:
        page.get_by_test_id("exp-start").click()
    assert info.value.status == 422
    expect(page.get_by_test_id("exp-error-base.steps")).to_contain_text("greater than")
    assert "#experiment=" not in page.url
    assert server.http.get("/api/experiments").json()["items"] == before


def test_a_claim_the_edited_design_no_longer_fits_says_so_beside_its_box(
    open_page, page_errors, server
):
    # The first hour's trial: cutting the learning-rate preset to "0.5, 50" drops the rate
    # its claim compares; the message sat under Start as "claim.contrasts.1.cell...".
    page_errors.allow(r"status of 422")
    page = open_page(server.url + "/#experiments")
    page.wait_for_selector("[data-testid=experiments-page][data-state=ready]", state="attached")
    page.get_by_test_id("exp-preset-learning-rate").click()
    page.get_by_test_id("exp-vary-values-0").fill("0.5, 50")
    claim_error = page.get_by_test_id("exp-error-claim")
    expect(claim_error).to_contain_text("the claim compares cells this design no longer has")
    expect(claim_error).to_contain_text('untick "Test the claim"')
    expect(page.get_by_test_id("exp-claim-on")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("exp-form-error")).to_be_hidden()
    page.get_by_test_id("exp-claim-on").uncheck()
    expect(page.get_by_test_id("exp-plan")).to_contain_text("(2 cells \N{MULTIPLICATION SIGN}")
    expect(claim_error).to_be_hidden()


def test_the_designers_empty_training_images_say_all_of_them(open_page, server):
    # The first hour's trial: the designer's empty "Training images" read "none".
    page = open_page(server.url + "/#experiments")
    page.wait_for_selector("[data-testid=experiments-page][data-state=ready]", state="attached")
    page.get_by_test_id("exp-preset-learning-rate").click()
    schema = server.http.get("/openapi.json").json()["components"]["schemas"]["RunCreate"]
    placeholder = schema["properties"]["train_subset"]["placeholder"]
    assert placeholder.startswith("all ")
    expect(page.get_by_test_id("exp-base-train_subset")).to_have_attribute(
        "placeholder", placeholder
    )


def test_the_designer_estimates_the_time_from_the_runs_finished_here(finished):
    page = finished["page"]
    page.goto(server_root(page) + "/#experiments")
    page.get_by_test_id("exp-preset-learning-rate").click()
    plan = page.get_by_test_id("exp-plan")
    # The preset as it is: 4 rates x 12 seeds x 2 arms, timed by this server's MLP runs
    # (the experiment above finished 8 of them).
    expect(plan).to_contain_text("96 runs (4 cells \N{MULTIPLICATION SIGN} 12 seeds")
    # What the seeds could detect, after Holm's correction over the cells and the claim's
    power = page.get_by_test_id("exp-power")
    expect(power).to_contain_text("Each of the 4 cells' tests can detect an effect of about")
    expect(power).to_contain_text("the claim's test can detect")
    page.get_by_test_id("exp-seeds").fill("3")
    expect(power).to_contain_text("can never give a verdict with 3 seeds")
    expect(power).to_contain_text("Warning: No cell can get a verdict")
    page.get_by_test_id("exp-seeds").fill("12")
    # Its values show whole in their box, not cut off at its edge.
    values = page.get_by_test_id("exp-vary-values-0")
    expect(values).to_have_value(re.compile(r"(, [\d.e-]+){3}"))
    assert values.evaluate("el => el.scrollWidth <= el.clientWidth")
    expect(plan).to_contain_text("about ")
    # (other test files share this server: CNN runs of theirs may be counted too)
    expect(plan).to_contain_text(re.compile(r"from the speed of (\d+ CNN runs?, )?\d+ MLP runs"))

    # Runs that end while the design is open count at once: the page asks again.
    before = int(re.search(r"(\d+) MLP runs", plan.inner_text()).group(1))
    started = page.request.post(
        server_root(page) + "/api/comparisons", data={**TINY, "steps": 20, "eval_every": 10}
    )
    assert started.status == 201, started.text()
    page.wait_for_function(
        """n => Number((/(\\d+) MLP runs/.exec(
            document.querySelector('[data-testid=exp-plan]').textContent) || [0, 0])[1]) >= n""",
        arg=before + 2,
        timeout=TIMEOUT_S * 1000,
    )


def inside_traces(page, chart: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The cell-means panel's traces of one chart, by (synthetic run, kind)."""
    traces = page.evaluate(
        """name => (document.querySelector(`[data-testid=exp-inside-${name}]`).data || [])
            .filter(t => t.meta && t.meta.runId)
            .map(t => ({run: t.meta.runId, kind: t.meta.kind, x: Array.from(t.x),
                        y: Array.from(t.y || []), z: t.z || null, dash: t.line && t.line.dash,
                        color: t.line && t.line.color}))""",
        chart,
    )
    return {(t["run"], t["kind"]): t for t in traces}


def test_inside_the_network_shows_each_arms_mean_over_its_seeds(finished):
    page, final = finished["page"], finished["final"]
    page.goto(server_root(page) + f"/#experiment={final['id']}")
    expect(page.get_by_test_id("verdict-row")).to_have_count(2)
    count_chart_draws(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    panel = page.get_by_test_id("exp-inside-panel")
    # Closed until asked for: opening it loads the server's cell means (every layer, the
    # first time), never the export with every run's diagnostics.
    with page.expect_response(lambda r: "/diagnostics" in r.url) as info:
        panel.locator("summary").click()
    assert info.value.url.endswith(f"/api/experiments/{final['id']}/diagnostics")
    served = info.value.json()
    # The test's own means come from the export with every point's diagnostics.
    exported = page.request.get(
        server_root(page) + f"/api/experiments/{final['id']}/export?diagnostics=true"
    ).json()
    expect(panel).to_have_attribute("aria-busy", "false")
    page.wait_for_function(
        """() => window.bnlab.experiment.painted()
            && [...document.querySelectorAll('[data-testid=exp-inside-charts] .chart')]
                .every(el => (el.data || []).some(t => t.meta && t.meta.runId))"""
    )
    expect(panel).to_have_attribute("data-state", "recorded")

    # The test's own seed means, from the export: (cell, arm) -> step -> the seeds' points.
    cells = [c["factors"] for c in final["cells"]]
    place = {r["run_id"]: (cells.index(r["factors"]), r["arm"]) for r in exported["runs"]}
    seeds: dict[tuple[int, str], dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for point in exported["curves"]:
        assert point["diagnostics"] is not None, "the design records diagnostics (basic)"
        seeds[place[point["run_id"]]][point["step"]].append(point["diagnostics"])
    assert len(seeds) == 4 and all(len(s[60]) == 2 for s in seeds.values())
    names = [x["name"] for x in exported["curves"][0]["diagnostics"]["layers"]]
    assert served["layers"] == names
    picker = page.get_by_test_id("exp-inside-layer")
    assert picker.evaluate("s => [...s.options].map(o => o.value)") == names
    # What the means are over: every run recorded diagnostics here.
    expect(page.get_by_test_id("exp-inside-status")).to_contain_text(f"{RUNS} of {RUNS} runs")

    def means(cell: int, arm: str, value) -> list[float]:
        by_step = seeds[(cell, arm)]
        return [fmean(value(d) for d in by_step[step]) for step in sorted(by_step)]

    def of(name: str, *path: str):
        def value(diagnostics: dict) -> float:
            found: Any = next(x for x in diagnostics["layers"] if x["name"] == name)
            for key in path:
                found = found[key]
            return found

        return value

    acc = chart_traces(page, "exp-chart-acc")
    for name in (names[-1], names[0]):
        # The picked layer's means alone are loaded; each chart redraws, one per frame.
        with page.expect_response(lambda r, name=name: f"/diagnostics?layer={name}" in r.url):
            picker.select_option(name)
        expect(panel).to_have_attribute("aria-busy", "false")  # its means are in
        page.wait_for_function("window.bnlab.experiment.painted()")
        bands, norms = inside_traces(page, "bands"), inside_traces(page, "norms")
        bn_gap = inside_traces(page, "bn")
        for cell in range(len(cells)):
            colour = trace(acc, cell, "bn", "mean")["color"]
            for arm in ("bn", "no_bn"):
                run = f"cell{cell}-{arm}"
                median = bands[(run, "pre_activation-p50")]
                assert median["x"] == [0, 20, 40, 60]
                assert median["dash"] == ("solid" if arm == "bn" else "dash")
                assert median["color"] == colour  # the cell's colour, as on its curves
                for key in ("p15", "p50", "p85"):
                    assert bands[(run, f"pre_activation-{key}")]["y"] == pytest.approx(
                        means(cell, arm, of(name, "pre_activation", key))
                    )
                assert norms[(run, "weight_norm")]["y"] == pytest.approx(
                    means(cell, arm, of(name, "weight_norm"))
                )
                for key in ("grad_norm", "effective_step"):
                    # Log axes: a 0 (no gradient yet at step 0) is a gap, not a cliff.
                    want = [m if m > 0 else None for m in means(cell, arm, of(name, key))]
                    got = norms[(run, key)]["y"]
                    assert [y is None for y in got] == [m is None for m in want]
                    assert [y for y in got if y is not None] == pytest.approx(
                        [m for m in want if m is not None]
                    )
            run = f"cell{cell}-bn"
            assert bands[(run, "pre_bn-p50")]["y"] == pytest.approx(
                means(cell, "bn", of(name, "pre_bn", "p50"))
            )
            assert bn_gap[(run, "bn_gap")]["y"] == pytest.approx(
                means(cell, "bn", of(name, "bn_gap"))
            )
            for key in ("val_acc_batch_stats", "val_acc_moving_stats"):
                assert bn_gap[(run, key)]["y"] == pytest.approx(
                    means(cell, "bn", lambda d, key=key: d[key])
                )
    # The heatmap: the first cell's histograms, as fractions averaged over its seeds (each
    # run fixes its bins from its initial weights; averaged over the seeds with the bins
    # most of them have: the first seed's on a tie).
    heat = inside_traces(page, "heatmap")[("cell0-bn", "pre_activation-heat")]
    first = seeds[(0, "bn")][0]  # at step 0, seed by seed
    edges = Counter(tuple(of(names[0])(d)["pre_activation"]["edges"]) for d in first)
    common = list(edges.most_common(1)[0][0])
    assert heat["y"] == pytest.approx(common)
    for row, step in zip(heat["z"], sorted(seeds[(0, "bn")]), strict=True):
        layers = [of(names[0])(d)["pre_activation"] for d in seeds[(0, "bn")][step]]
        shares = [
            [c / sum(x["counts"]) for c in x["counts"]] for x in layers if x["edges"] == common
        ]
        assert row == pytest.approx([fmean(column) for column in zip(*shares, strict=True)])
    # basic diagnostics: the full-only charts say so instead of drawing.
    ics = page.evaluate(
        """() => document.querySelector('[data-testid=exp-inside-ics]').layout.annotations
            .map(a => a.text).join(' ')"""
    )
    assert "not recorded" in ics
    # ... and, as no run records them, fold to one line instead of two empty charts.
    for name in ("ics", "smoothness"):
        expect(page.get_by_test_id(f"exp-inside-{name}")).to_be_hidden()
        folded = page.locator(f"figure:has([data-testid=exp-inside-{name}]) .inside-collapsed")
        expect(folded).to_have_text(re.compile("only runs with diagnostics = full"))
    draws = page.evaluate("window.__draws")
    assert draws and len(draws) == len(set(draws)), f"two chart draws in one frame: {draws}"
    # Loaded when opened and when a layer was picked; no timer loads it again, and the
    # export was never asked for.
    page.wait_for_timeout(2500)
    loads = [url for url in requests if "/diagnostics" in url]
    assert len(loads) == 3 and not [url for url in requests if "/export" in url], requests


def test_the_claim_is_the_headline_and_more_seeds_are_added_from_the_page(open_page, server):
    """A claim in words above the cells, with its p raw and after Holm; then one more
    seed from the button, and the verdict says it was added after looking."""
    design = {
        "label": "claimed",
        "base": {"arch": "mlp", "optimizer": "adam", "learning_rate": 0.01, "max_shift": 0}
        | {k: int(v) if v.isdigit() else float(v) for k, v in TINY_DESIGN.items()}
        | {"diagnostics": "off"},  # the claim is the subject, not what the runs measure
        "seeds": 1,
        "claim": {"statement": "BN helps the tiny MLP", "contrasts": [{"kind": "effect"}]},
    }
    created = server.post("/api/experiments", design)
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    page = open_page(server.url + f"/#experiment={experiment_id}")
    expect(page.get_by_test_id("exp-status")).to_have_text("completed", timeout=TIMEOUT_S * 1000)
    claim = page.get_by_test_id("exp-claim")
    expect(claim.get_by_test_id("claim-statement")).to_have_text(" BN helps the tiny MLP")
    # one seed can never pass the test: said so, in words
    expect(claim.get_by_test_id("claim-verdict")).to_have_text("Not enough seeds")
    expect(claim.get_by_test_id("claim-meaning")).to_contain_text("Add seeds to be able to tell")
    (result,) = server.http.get(f"/api/experiments/{experiment_id}").json()["claim"]["contrasts"]
    contrast = claim.get_by_test_id("claim-contrast")
    expect(contrast).to_contain_text(f"p = {result['p_value']:.3g} · after Holm")
    expect(contrast).to_contain_text(f"{result['estimate'] * 100:+.2f} points")
    # the headline stands above the cells
    above = page.evaluate(
        """() => document.querySelector('[data-testid=exp-claim]').compareDocumentPosition(
            document.querySelector('[data-testid=verdict-table]'))
            & Node.DOCUMENT_POSITION_FOLLOWING"""
    )
    assert above
    page.get_by_test_id("exp-more-seeds-n").fill("1")
    page.get_by_test_id("exp-add-seeds").click()
    expect(page.get_by_test_id("exp-more-seeds")).to_be_hidden()  # running again
    # At once, before the new seed's runs end: provisional, and added after looking.
    expect(claim.get_by_test_id("claim-verdict")).to_contain_text("(provisional)")
    expect(claim.get_by_test_id("claim-meaning")).to_contain_text("Provisional: runs are still")
    expect(claim.get_by_test_id("claim-meaning")).to_contain_text("Seeds were added after")
    extended = server.http.get(f"/api/experiments/{experiment_id}").json()
    assert extended["design"]["seeds"] == 2 and len(extended["runs"]) == 4
    # (what the new seed's runs then say is the service's, tested in test_experiments.py)
    # its runs are not needed further: stopped (409 only if both have already ended)
    assert server.http.post(f"/api/experiments/{experiment_id}/cancel").status_code in (202, 409)
