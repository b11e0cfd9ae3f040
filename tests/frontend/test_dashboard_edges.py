"""The dashboard at the edges of a run's life and of its layout: what it says before the
first point and during the final test, what an empty probe panel says, how the runs table
scrolls, what a new comparison selects, and long labels. Real browser, real server."""

from __future__ import annotations

import json
import re
import time

from playwright.sync_api import expect

from tests.frontend.dashboard import TINY, row, start

RUN_TIMEOUT = 240  # s; a tiny run takes ~10-20 s alone, minutes on a busy machine
TERMINAL = {"completed", "failed", "cancelled", "diverged", "interrupted"}

# What the page shows of one run, sampled together so the samples are consistent.
SAMPLE = """id => {
    const row = document.querySelector(`[data-testid=run-row][data-run-id="${id}"]`);
    const notes = (testid) => {
        const el = document.querySelector(`[data-testid=${testid}]`);
        const list = (el.layout && el.layout.annotations) || [];
        return list.map(a => ({text: a.text.replace(/<br>/g, ' '), x: a.x}));
    };
    return {
        status: row ? row.dataset.status : null,
        eta: row ? row.querySelector('[data-testid=run-eta]').textContent : null,
        points: window.bnlab.pointsFor(id).length,
        acc: notes('chart-acc'),
        accAxes: document.querySelector('[data-testid=chart-acc]').layout.yaxis.visible !== false,
        probe: notes('chart-probe'),
        wall: (document.querySelector(`[data-testid=cmp-wall_time][data-run-id="${id}"]`)
            || {}).textContent,
    };
}"""


def _texts(notes: list[dict]) -> list[str]:
    return [n["text"] for n in notes]


def _probe_note(sample: dict, centre: float) -> list[str]:
    """The notes in one probe panel (its headline is above it, at y > 1, not among these)."""
    return [n["text"] for n in sample["probe"] if n["x"] == centre and "Fig." not in n["text"]]


WITHOUT_BN, WITH_BN = 0.235, 0.765  # the probe panels' centres


def test_a_run_says_starting_then_testing_and_never_eta_0s(page, server):
    # The CNN: its final test takes long enough to be seen ("testing…"). Without its
    # diagnostics (TINY's), whose tracing cost seconds and shows nothing here.
    (run,) = start(page, single=True, steps=10, eval_every=5, arch="cnn")
    samples = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        sample = page.evaluate(SAMPLE, run["id"])
        samples.append(sample)
        if sample["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, f"the run did not finish: {samples[-1]}"
        page.wait_for_timeout(100)
    assert samples[-1]["status"] == "completed"

    # Before its first evaluation the row and the charts say it is starting, not nothing.
    early = [s for s in samples if s["status"] == "running" and s["points"] == 0]
    assert early, "never saw the run running before its first point"
    assert all(s["eta"] == "starting…" for s in early), {s["eta"] for s in early}
    # (The charts redraw in promise callbacks: give them the first sample to catch up.)
    charted = early[1:] or early
    assert all(any(t.startswith("starting…") for t in _texts(s["acc"])) for s in charted)
    assert all(_probe_note(s, WITH_BN) == _texts(s["acc"]) for s in charted)
    assert not any(s["accAxes"] for s in charted)  # axes whose ranges would mean nothing
    assert any(s["wall"] == "starting…" for s in early)  # the compare panel too
    # Once points arrive the charts show them, with their axes and without a note.
    late = [s for s in samples if s["points"] > 0][1:]
    assert late and all(s["acc"] == [] and s["accAxes"] for s in late), late[-1]
    assert all(_probe_note(s, WITH_BN) == [] for s in late)
    # Only a BN run is plotted: the other probe panel says so instead of staying blank.
    assert all(_probe_note(s, WITHOUT_BN) == ["no run without BN selected"] for s in samples)

    # After the last step and before the test metrics: "testing…", never "ETA 0s".
    etas = [s["eta"] for s in samples if s["status"] == "running"]
    assert "testing…" in etas, etas
    assert "0s" not in etas, etas
    expect(row(page, run["id"]).get_by_test_id("run-eta")).to_have_text("—")


class Relay:
    """Relays the run streams, but shows the page the BN run's probe values as missing (as
    a run from before the probe would send them) and the no-BN run's probe values and loss
    as non-finite (as a diverged run sends them: null)."""

    def __init__(self) -> None:
        self.bn: dict[str, bool] = {}  # run id -> trained with BN, from its snapshot

    def __call__(self, ws) -> None:
        run_id = ws.url.split("?")[0].rsplit("/", 1)[-1]
        server_ws = ws.connect_to_server()
        server_ws.on_message(lambda message: ws.send(self.edit(run_id, message)))
        ws.on_message(server_ws.send)

    def edit(self, run_id: str, message: str) -> str:
        msg = json.loads(message)
        if msg.get("run"):
            self.bn[run_id] = msg["run"]["config"]["batch_norm"]
        for point in msg.get("points", []) + ([msg["point"]] if msg.get("point") else []):
            point["probe"] = {"p15": None, "p50": None, "p85": None}
            if not self.bn[run_id]:
                point["val_loss"] = None
        return json.dumps(msg)


def test_an_empty_probe_panel_says_why(page, server):
    probe = page.get_by_test_id("chart-probe")
    # The page opens on the newest runs of earlier tests; with none plotted it says how to.
    for box in page.locator("[data-testid=run-select]:checked").all():
        box.uncheck()
    expect(probe).to_contain_text("Select runs in the table")
    page.route_web_socket(re.compile(r"/ws/runs/[^/?]+"), Relay())
    bn, no_bn = start(page)
    page.wait_for_function(
        "ids => ids.every(id => window.bnlab.pointsFor(id).length >= 1)",
        arg=[bn["id"], no_bn["id"]],
        timeout=RUN_TIMEOUT * 1000,
    )
    expect(probe).to_contain_text("the run predates this measurement")
    expect(probe).to_contain_text("the run diverged")
    sample = page.evaluate(SAMPLE, bn["id"])
    assert _probe_note(sample, WITH_BN) == ["no values: the run predates this measurement"]
    assert _probe_note(sample, WITHOUT_BN) == ["no finite values: the run diverged"]
    # The loss chart has the BN run's losses to show: no note there.
    assert page.evaluate(SAMPLE, bn["id"])["acc"] == []


def _post(page, server, path: str, body: dict) -> dict:
    response = page.request.post(server.url + path, data=body)
    assert response.status == 201, response.text()
    return response.json()


# The table's scroll area and the rows that show in it, in CSS pixels.
TABLE_GEOMETRY = """() => {
    const wrap = document.querySelector('[data-testid=runs-panel] .table-wrap');
    const box = wrap.getBoundingClientRect();
    const top = box.top + wrap.clientTop;
    const head = wrap.querySelector('thead').getBoundingClientRect().height;
    // The rows shown: an experiment's runs (from another file's tests on the shared
    // server) wait hidden behind their group line.
    const rows = [...wrap.querySelectorAll('tbody tr:not([hidden])')]
        .map(r => r.getBoundingClientRect());
    return {
        view: [top + head, top + wrap.clientHeight],  // below the sticky header
        head, scrollTop: wrap.scrollTop, scrollable: wrap.scrollHeight > wrap.clientHeight,
        rows: rows.map(r => [r.top, r.bottom]),
    };
}"""


def _cut_rows(geometry: dict) -> list[list[float]]:
    """Rows partly inside the view: cut by its top or bottom edge."""
    top, bottom = geometry["view"]
    return [
        [a, b]
        for a, b in geometry["rows"]
        if b > top + 1 and a < bottom - 1 and (a < top - 1 or b > bottom + 1)
    ]


def _settled(page) -> dict:
    """The table's geometry once its scroll position has held still for 300 ms."""
    deadline = time.monotonic() + 10
    last = None
    while True:
        page.wait_for_timeout(300)
        geometry = page.evaluate(TABLE_GEOMETRY)
        if last is not None and geometry["scrollTop"] == last["scrollTop"]:
            return geometry
        assert time.monotonic() < deadline, "the table kept scrolling"
        last = geometry


def test_the_runs_table_scrolls_by_whole_rows(page, server):
    # More runs than the table shows at once (cancelled at once: they need no worker).
    for _ in range(4):
        for run in _post(page, server, "/api/comparisons", {**TINY, "steps": 1000})["runs"]:
            server.post(f"/api/runs/{run['id']}/cancel")
    total = server.http.get("/api/runs", params={"limit": 1}).json()["total"]
    expect(page.get_by_test_id("run-row")).to_have_count(min(total, 200))
    wrap = page.locator("[data-testid=runs-panel] .table-wrap")
    page.wait_for_function(
        "() => { const w = document.querySelector('[data-testid=runs-panel] .table-wrap');"
        " return w.scrollHeight > w.clientHeight; }"
    )

    geometry = page.evaluate(TABLE_GEOMETRY)
    heights = [b - a for a, b in geometry["rows"]]
    # Every row is as high as the others (failed, cancelled or running alike) ...
    assert max(heights) - min(heights) < 0.5, heights
    # ... and the view below the header holds a whole number of them.
    rows_in_view = (geometry["view"][1] - geometry["view"][0]) / heights[0]
    assert rows_in_view >= 3 and abs(rows_in_view - round(rows_in_view)) < 0.02, rows_in_view
    assert _cut_rows(geometry) == []

    # Scrolling with the wheel lands on whole rows too.
    wrap.hover()
    for delta in (70, 45, 200, -90):
        page.mouse.wheel(0, delta)
        geometry = _settled(page)  # after the smooth scroll and the snap that ends it
        assert _cut_rows(geometry) == [], geometry
    assert geometry["scrollTop"] > 0  # it did scroll


def test_a_new_comparison_is_selected_alone(page, server):
    first = [r["id"] for r in start(page, steps=2000, eval_every=1000)]
    page.wait_for_function("ids => window.bnlab.selected().join() === ids.join()", arg=first)
    second = [r["id"] for r in start(page, steps=2000, eval_every=1000)]
    # The new comparison replaces what was plotted and compared.
    page.wait_for_function(
        "ids => [...window.bnlab.selected()].sort().join() === [...ids].sort().join()",
        arg=second,
    )
    for run_id in first:
        expect(row(page, run_id).get_by_test_id("run-select")).not_to_be_checked()
    for run_id in second:
        expect(row(page, run_id).get_by_test_id("run-select")).to_be_checked()
    panel = page.get_by_test_id("compare-panel")
    expect(panel.locator("thead th[data-run-id]")).to_have_count(2)
    expect(page.get_by_test_id("selection-count")).to_have_text("2 selected")
    # Ticking an older run adds it to the selection.
    row(page, first[0]).get_by_test_id("run-select").check()
    expect(page.get_by_test_id("selection-count")).to_have_text("3 selected")


def _page_width(page) -> dict:
    """The page's width and the window's, and (for the message) what sticks out."""
    return page.evaluate(
        """() => ({
            scroll: document.documentElement.scrollWidth,
            window: window.innerWidth,
            outside: [...document.querySelectorAll('body *')]
                .filter(el => el.getBoundingClientRect().right > window.innerWidth + 0.5)
                .slice(0, 8)
                .map(el => `${el.tagName.toLowerCase()}.${el.className.baseVal ?? el.className}`),
        })"""
    )


def test_a_long_label_does_not_widen_the_page(page, server):
    label = "L" * 100  # the longest label the API takes, with nowhere to break it
    runs = start(page, label=label, steps=2000, eval_every=1000)
    expect(row(page, runs[0]["id"]).get_by_test_id("run-label")).to_have_text(f"{label} (BN)")
    # Everywhere the label shows: the table, the form's message, the compare panel and its
    # speed-up line, the charts' legends.
    expect(page.get_by_test_id("form-status")).to_contain_text(label)
    expect(page.get_by_test_id("speedup")).to_contain_text(label)
    # Plotly clips a long legend entry (it does not wrap it): the page names a run by BN or
    # no-BN first, then as much of its label as fits, cut with "…" (runs/labels.js).
    names = page.evaluate(
        """() => document.querySelector('[data-testid=chart-acc]').data
            .filter(t => t.showlegend !== false).map(t => t.name)"""
    )
    assert len(names) == 2 and all(len(n) <= 40 and n.endswith("L…") for n in names), names
    assert [n.split(" · ")[0] for n in names] == ["BN", "no-BN"], names
    for width in (1440, 1280, 800):
        page.set_viewport_size({"width": width, "height": 800})
        page.wait_for_timeout(300)  # Plotly's resize
        sizes = _page_width(page)
        assert sizes["scroll"] <= sizes["window"], (width, sizes)
        # The runs table fits too (down to 800 px: one column, no speed column), so every
        # row's buttons show without scrolling it sideways.
        table = page.evaluate(
            """() => { const w = document.querySelector('[data-testid=runs-panel] .table-wrap');
                       return [w.scrollWidth, w.clientWidth]; }"""
        )
        assert table[0] <= table[1], (width, table)
