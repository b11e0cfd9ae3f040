"""The dashboard in a real browser against a real server training tiny networks."""

from __future__ import annotations

import json
import time

from playwright.sync_api import expect

from tests.frontend.dashboard import CNN, TINY, acc_trace_lengths, row, save_screenshot, start

RUN_TIMEOUT = 240_000  # ms; a tiny run takes ~10-20 s alone, minutes on a busy machine
TERMINAL = {"completed", "failed", "cancelled", "diverged", "interrupted"}


def _points_by_seq(server, run_id: str) -> list[tuple[int, int]]:
    points = server.http.get(f"/api/runs/{run_id}/metrics").json()["points"]
    return [(p["seq"], p["step"]) for p in points]


def _page_points(page, run_id: str) -> list[tuple[int, int]]:
    return [
        (p["seq"], p["step"]) for p in page.evaluate("id => window.bnlab.pointsFor(id)", run_id)
    ]


def _count_plotly_calls(page) -> None:
    """From now on, count full redraws and appends of the charts."""
    page.evaluate(
        """() => {
            window.__calls = {react: 0, newPlot: 0, extendTraces: 0};
            for (const name of Object.keys(window.__calls)) {
                const original = Plotly[name];
                Plotly[name] = function (...args) {
                    window.__calls[name] += 1;
                    return original.apply(this, args);
                };
            }
        }"""
    )


def test_comparison_runs_live_and_fills_compare_panel(page, server, output_dir):
    runs = start(page, **CNN)  # the README's screenshot; the Inside panel fills live
    ids = [r["id"] for r in runs]
    bn, no_bn = runs
    assert bn["config"]["batch_norm"] is True and no_bn["config"]["batch_norm"] is False

    # Both rows appear, already selected for plotting.
    for run_id in ids:
        expect(row(page, run_id)).to_be_visible()
        expect(row(page, run_id).get_by_test_id("run-select")).to_be_checked()

    # Both traces are on the charts before any point arrives; from here on, points are
    # appended with extendTraces and nothing redraws the charts.
    page.wait_for_function(
        """ids => ids.every(id => (document.querySelector('[data-testid=chart-acc]').data || [])
                .some(t => t.meta && t.meta.runId === id))""",
        arg=ids,
    )
    _count_plotly_calls(page)

    # Watch progress and the accuracy traces until both runs finish.
    seen_lengths = {run_id: set() for run_id in ids}
    seen_steps = {run_id: set() for run_id in ids}
    seen_status = {run_id: set() for run_id in ids}
    deadline = time.monotonic() + RUN_TIMEOUT / 1000
    while True:
        for run_id, length in zip(ids, acc_trace_lengths(page, ids), strict=True):
            seen_lengths[run_id].add(length)
        for run_id in ids:
            r = row(page, run_id)
            seen_status[run_id].add(r.get_attribute("data-status"))
            seen_steps[run_id].add(r.get_by_test_id("run-progress").get_attribute("aria-valuenow"))
        # The probe's two panels (no-BN | BN) keep one step axis while either run is ahead.
        x, x2 = page.evaluate(
            """() => { const l = document.querySelector('[data-testid=chart-probe]')._fullLayout;
                return [l.xaxis.range, l.xaxis2.range]; }"""
        )
        assert x == x2, (x, x2)
        if all(
            row(page, run_id).get_attribute("data-status") in TERMINAL for run_id in ids
        ) and all(max(seen_lengths[i]) == 5 for i in ids):
            break
        assert time.monotonic() < deadline, f"runs did not finish: {seen_status}"
        page.wait_for_timeout(100)

    for run_id in ids:
        expect(row(page, run_id)).to_have_attribute("data-status", "completed")
        assert "running" in seen_status[run_id]
        # Progress moved: from the start to the last step.
        assert "0" in seen_steps[run_id] and str(TINY["steps"]) in seen_steps[run_id]
        expect(row(page, run_id).get_by_test_id("run-steps")).to_have_text("40 / 40")
        expect(row(page, run_id).get_by_test_id("run-test-acc")).to_contain_text("%")
        # Points arrived one by one: steps 0, 10, 20, 30, 40 make 5; we saw the trace grow.
        grown = sorted(n for n in seen_lengths[run_id] if n > 0)
        assert grown[-1] == 5 and len(grown) >= 3, f"trace lengths seen: {grown}"

    calls = page.evaluate("window.__calls")
    assert calls["react"] == 0 and calls["newPlot"] == 0, calls
    assert calls["extendTraces"] >= 5, calls

    # BN solid, no-BN dashed, one colour for the comparison, the run's label in the legend.
    traces = page.evaluate(
        """() => document.querySelector('[data-testid=chart-acc]').data
            .map(t => ({id: t.meta.runId, name: t.name, dash: t.line.dash, color: t.line.color}))"""
    )
    by_id = {t["id"]: t for t in traces}
    assert by_id[bn["id"]]["dash"] == "solid" and by_id[no_bn["id"]]["dash"] == "dash"
    assert by_id[bn["id"]]["color"] == by_id[no_bn["id"]]["color"]
    assert by_id[bn["id"]]["name"] == bn["label"]

    # The probe chart has both runs, BN and no-BN side by side.
    probe_axes = page.evaluate(
        """() => document.querySelector('[data-testid=chart-probe]').data
            .filter(t => t.meta.kind === 'p50')
            .map(t => [t.meta.runId, t.xaxis || 'x', t.y.length])"""
    )
    assert sorted(probe_axes) == sorted([[bn["id"], "x2", 5], [no_bn["id"], "x", 5]])

    # Inside the network filled live as well, by appends alone (no redraw counted above):
    # every evaluation's histogram is a column of the heatmaps, over the run's bin edges.
    page.wait_for_function(
        """() => {
            const maps = (document.querySelector('[data-testid=inside-heatmap]').data || [])
                .filter(t => t.type === 'heatmap');
            return maps.length === 3 && maps.every(t => t.z.length === 5
                && t.y.length > 2 && t.z.every(column => column.length === t.y.length - 1));
        }"""
    )
    assert page.evaluate("window.__calls.react") == 0

    # The compare panel fills with the test metrics, side by side.
    panel = page.get_by_test_id("compare-panel")
    expect(panel).to_have_attribute("data-state", "complete", timeout=20_000)
    for run_id in ids:
        for metric in ("test_accuracy", "test_loss", "log_loss", "best_val_acc", "wall_time"):
            cell = panel.locator(f'[data-testid="cmp-{metric}"][data-run-id="{run_id}"]')
            expect(cell).not_to_have_text("—")
        expect(
            panel.locator(f'[data-testid="cmp-test_accuracy"][data-run-id="{run_id}"]')
        ).to_contain_text("%")
    expect(panel.get_by_test_id("speedup")).to_have_count(1)
    # Export links name both runs; they download what the API serves.
    for fmt in ("csv", "json"):
        href = panel.get_by_test_id(f"export-{fmt}").get_attribute("href")
        assert f"format={fmt}" in href and all(i in href for i in ids)
        response = page.request.get(server.url + href)
        assert response.ok
    exported = json.loads(
        page.request.get(
            server.url + panel.get_by_test_id("export-json").get_attribute("href")
        ).text()
    )
    assert {r["run"]["id"] for r in exported["runs"]} == set(ids)

    # Inside the network, the histograms' ranges follow the data: every evaluation's
    # middle 98 % (with a bin to spare), not the bins' whole span set at initialisation.
    def heat_ranges() -> list[dict]:
        return page.evaluate(
            """() => { const el = document.querySelector('[data-testid=inside-heatmap]');
                return el.data.filter(t => t.type === 'heatmap').map(t => {
                    const axis = el.layout[(t.yaxis || 'y').replace('y', 'yaxis')];
                    return {range: axis.range, edges: Array.from(t.y), z: t.z}; }); }"""
        )

    for heat in heat_ranges():
        low, high = heat["range"]
        edges, bin_ = heat["edges"], heat["edges"][1] - heat["edges"][0]
        assert edges[0] - bin_ <= low < high <= edges[-1] + bin_, heat["range"]
        for column in heat["z"]:  # each evaluation's mass is (almost) all in the range
            inside = sum(
                f
                for f, a, b in zip(column, edges, edges[1:], strict=False)
                if a >= low and b <= high
            )
            assert inside >= 0.98, (heat["range"], column)
    # The CNN's dense layer has no BN: its panels say so instead of "before/after BN".
    page.get_by_test_id("inside-layer").select_option("fc1")
    page.wait_for_function(
        """() => (document.querySelector('[data-testid=inside-bands]').layout.annotations || [])
            .some(a => a.text === "With BN: nonlinearity's input (no BN here)")"""
    )
    # Every panel title is drawn whole: none runs past the figure's right edge.
    cut = page.evaluate(
        """() => { const gd = document.querySelector('[data-testid=inside-bands]');
            const edge = gd.getBoundingClientRect().right;
            return [...gd.querySelectorAll('.annotation-text')]
                .filter(t => t.getBoundingClientRect().right > edge + 1)
                .map(t => t.textContent); }"""
    )
    assert cut == [], cut
    titles = page.evaluate(
        """() => document.querySelector('[data-testid=inside-bands]').layout.annotations
            .map(a => a.text)"""
    )
    assert "With BN: no BN on this layer" in titles and "With BN: before BN" not in titles

    save_screenshot(page, output_dir, "comparison.png")


def test_cancel_a_running_run(page, server):
    # The tiny MLP made to train until cancelled (the CNN with its diagnostics cost
    # seconds of tracing for nothing this test looks at).
    (run,) = start(page, single=True, steps=100_000, eval_every=1000)
    r = row(page, run["id"])
    expect(r).to_have_attribute("data-status", "running", timeout=RUN_TIMEOUT)
    expect(r.get_by_test_id("run-delete")).to_be_hidden()
    r.get_by_test_id("run-cancel").click()
    expect(r).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(r.get_by_test_id("run-status")).to_have_text("cancelled")
    expect(r.get_by_test_id("run-cancel")).to_be_hidden()
    assert server.run(run["id"])["status"] == "cancelled"
    # A finished run can be deleted; its row goes away (through WS /ws/runs).
    r.get_by_test_id("run-delete").click()
    expect(r).to_have_count(0, timeout=10_000)


def test_dropped_socket_resumes_without_missing_or_doubled_points(page, server):
    # points at steps 0, 10, 20, 30, 40; the CNN's steps leave time to miss some offline
    (run,) = start(page, single=True, **CNN)
    run_id = run["id"]
    page.wait_for_function(
        "id => window.bnlab.pointsFor(id).length >= 2", arg=run_id, timeout=RUN_TIMEOUT
    )
    page.evaluate("window.bnlab.socket.drop(60000)")  # offline until "Reconnect now"
    at_drop = len(_points_by_seq(server, run_id))
    banner = page.get_by_test_id("conn-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("reconnecting")

    # Training goes on while the page is offline; it misses those points.
    deadline = time.monotonic() + RUN_TIMEOUT / 1000
    while len(_points_by_seq(server, run_id)) <= at_drop:
        assert time.monotonic() < deadline, "no new point while offline"
        time.sleep(0.2)
    assert len(_page_points(page, run_id)) <= at_drop
    expect(banner).to_be_visible()

    page.get_by_test_id("conn-retry").click()
    expect(banner).to_be_hidden(timeout=10_000)
    expect(row(page, run_id)).to_have_attribute("data-status", "completed", timeout=RUN_TIMEOUT)
    page.wait_for_function(
        "id => window.bnlab.pointsFor(id).length === 5", arg=run_id, timeout=10_000
    )
    served = _points_by_seq(server, run_id)
    held = _page_points(page, run_id)
    assert [step for _, step in served] == [0, 10, 20, 30, 40]
    assert held == served  # same seqs, same steps, same order: none missing, none doubled
    # And the charts hold exactly those points, each once.
    assert acc_trace_lengths(page, [run_id]) == [5]


def test_invalid_values_are_shown_next_to_their_field(page, server, page_errors):
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_test_id("field-steps").fill("0")
    page.get_by_test_id("field-learning_rate").fill("-1")
    page.get_by_test_id("submit").click()
    steps_error = page.get_by_test_id("error-steps")
    expect(steps_error).to_be_visible()
    expect(steps_error).to_contain_text("at least 1")
    expect(page.get_by_test_id("field-steps")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-learning_rate")).to_contain_text("greater than 0")
    expect(page.get_by_test_id("field-learning_rate")).to_be_focused()  # the first bad field
    assert posts == []  # nothing was sent

    # Fixing a field clears its message as you type.
    page.get_by_test_id("field-learning_rate").fill("0.01")
    expect(page.get_by_test_id("error-learning_rate")).to_be_hidden()

    # The server's own 422 message lands next to the field it names: send steps=0 anyway.
    page_errors.allow(r"status of 422")  # Chromium logs the failed request itself
    page.get_by_test_id("field-steps").fill("40")

    def tamper(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "steps": 0}))

    page.route("**/api/comparisons", tamper)
    with page.expect_response("**/api/comparisons") as info:
        page.get_by_test_id("field-steps").press("Enter")  # Enter submits the form
    assert info.value.status == 422
    errors = info.value.json()["errors"]
    server_msg = next(e["msg"] for e in errors if e["field"] == "steps")
    expect(steps_error).to_be_visible()
    expect(steps_error).to_contain_text(server_msg.removeprefix("Value error, "))


def test_form_defaults_and_presets(page):
    def values():
        return page.evaluate(
            """() => Object.fromEntries(['arch', 'optimizer', 'learning_rate', 'batch_size',
                'steps', 'eval_every', 'dropout', 'max_shift'].map(n => [n,
                document.querySelector(`[data-testid=field-${n}]`).value]))"""
        )

    seed = {
        "arch": "cnn",
        "optimizer": "adagrad",
        "learning_rate": "0.01",
        "batch_size": "64",
        "steps": "5000",
        "eval_every": "200",
        "dropout": "0.5",
        "max_shift": "1",
    }
    assert values() == seed
    expect(page.get_by_test_id("submit")).to_have_text("Start comparison")
    page.get_by_test_id("preset-paper-mlp").click()
    mlp = values()
    assert (mlp["arch"], mlp["optimizer"], mlp["batch_size"]) == ("mlp", "sgd", "60")
    assert mlp["max_shift"] == "0"  # the paper trained on the images as they are
    page.get_by_test_id("preset-high-lr").click()
    assert float(values()["learning_rate"]) > 0.01
    page.get_by_test_id("preset-seed").click()
    assert values() == seed
    expect(page.get_by_test_id("preset-seed")).to_have_attribute("aria-pressed", "true")
    # The page is labelled for keyboard and screen-reader users.
    expect(page.get_by_label("Learning rate")).to_have_value("0.01")
    page.get_by_test_id("mode-single").check()
    expect(page.get_by_test_id("submit")).to_have_text("Start run")


def test_diverged_run_is_marked_with_its_reason(page, server):
    (run,) = start(
        page, single=True, arch="cnn", optimizer="sgd", learning_rate=1000, steps=40, eval_every=1
    )
    r = row(page, run["id"])
    expect(r).to_have_attribute("data-status", "diverged", timeout=RUN_TIMEOUT)
    error = server.run(run["id"])["error"]
    assert error
    expect(r.get_by_test_id("run-error")).to_contain_text(error)
    expect(r.get_by_test_id("run-status")).to_have_text("diverged")
    # The charts still draw, and the legend says what happened.
    names = page.evaluate(
        """() => document.querySelector('[data-testid=chart-loss]').data.map(t => t.name)"""
    )
    assert any("(diverged)" in n for n in names)


def test_access_token_for_a_server_that_has_one(open_page, token_server, page_errors):
    # Before the token is given, the server refuses the websockets (Chromium logs each
    # refused handshake) and changes (401).
    page_errors.allow(r"WebSocket connection to .* failed")
    page_errors.allow(r"status of (401|422)")
    page = open_page(token_server.url + "/")
    banner = page.get_by_test_id("conn-banner")
    expect(banner).to_contain_text("Live connection refused", timeout=20_000)
    # Its reads need the token too, which GET /api/health tells the page: it asks at once
    # (tests/frontend/test_private_reads.py). Closed, the prompt is a click away on the banner.
    expect(page.get_by_test_id("token-form")).to_be_visible()
    page.get_by_test_id("token-cancel").click()
    page.get_by_test_id("conn-token").click()
    page.get_by_test_id("token-input").fill(token_server.token)
    page.get_by_test_id("token-input").press("Enter")
    expect(banner).to_be_hidden(timeout=10_000)
    expect(page.get_by_test_id("activity")).to_contain_text("0 running")

    # Changes carry the token: the server gets past it to validate the body (422, not 401).
    def tamper(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "steps": 0}))

    page.route("**/api/comparisons", tamper)
    with page.expect_response("**/api/comparisons") as info:
        page.get_by_test_id("submit").click()
    assert info.value.status == 422
    expect(page.get_by_test_id("error-steps")).to_be_visible()

    # A link may carry the token in its fragment; the page keeps it and drops it from the URL.
    page_errors.errors.clear()
    linked = open_page(f"{token_server.url}/#token={token_server.token}")
    expect(linked.get_by_test_id("activity")).to_contain_text("0 running")
    assert "token" not in linked.url
    linked.wait_for_timeout(1500)
    expect(linked.get_by_test_id("conn-banner")).to_be_hidden()
    assert not page_errors.errors  # connected on the first try


def test_the_compare_panel_takes_its_cap_from_the_api(page):
    """The compare panel names at most GET /api/limits' compare_max_runs runs (here made 1):
    of a comparison's two runs, the first alone, with the cap's hint naming the number."""
    page.route("**/api/limits", lambda route: route.fulfill(json={"compare_max_runs": 1}))
    page.reload()
    page.wait_for_function(
        "window.bnlab !== undefined"
        " && document.querySelector('[data-testid=run-form]').dataset.state === 'ready'"
    )
    runs = start(page, **TINY)
    capped = page.get_by_test_id("compare-capped")
    expect(capped).to_be_visible()
    expect(capped).to_contain_text("first 1 selected runs")
    columns = page.locator("[data-testid=compare-table] thead th[data-run-id]")
    expect(columns).to_have_count(1)
    expect(columns.first).to_have_attribute("data-run-id", runs[0]["id"])
    assert page.get_by_test_id("export-csv").get_attribute("href").count(",") == 0
