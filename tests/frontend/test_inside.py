"""The "Inside the network" panel (frontend/js/runs/inside.js) on runs a real server trained
with diagnostics: the bands and the heatmap show the API's values for the picked
layer, the picker switches layers, and a run without diagnostics says "not recorded"."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from bnlab.server.testing import ServerProcess
from tests.frontend.conftest import wait_until_ready
from tests.frontend.dashboard import TINY

RECIPE = {**TINY, "arch": "mlp", "max_shift": 0}


@pytest.fixture(scope="module")
def finished(server: ServerProcess) -> dict[str, list[str]]:
    """A comparison with full diagnostics and a single run with them off, finished."""
    comparison = server.post("/api/comparisons", {**RECIPE, "diagnostics": "full"})
    assert comparison.status_code == 201, comparison.text
    off = server.post("/api/runs", {**RECIPE, "batch_norm": False, "diagnostics": "off"})
    assert off.status_code == 201, off.text
    ids = {"comparison": [r["id"] for r in comparison.json()["runs"]], "off": [off.json()["id"]]}
    for run_id in ids["comparison"] + ids["off"]:
        assert server.wait_status(run_id, "completed", "failed", timeout=300)["status"] == (
            "completed"
        )
    return ids


def show(page, run_ids: list[str]) -> None:
    """Reload the page with exactly these runs plotted (the selection it remembers)."""
    page.evaluate("ids => localStorage.setItem('bnlab.selected', JSON.stringify(ids))", run_ids)
    page.reload()
    wait_until_ready(page)


def traces(page, chart: str) -> list[dict]:
    return page.evaluate(
        """name => (document.querySelector(`[data-testid=inside-${name}]`).data || [])
            .filter(t => t.meta && t.meta.runId)
            .map(t => ({run: t.meta.runId, kind: t.meta.kind, type: t.type, x: t.x,
                        y: Array.from(t.y || []), z: t.z, name: t.name,
                        legend: t.showlegend}))""",
        chart,
    )


def layer(point: dict, name: str) -> dict:
    return next(x for x in point["diagnostics"]["layers"] if x["name"] == name)


def test_the_panel_draws_a_comparisons_layers_and_switches_between_them(
    page, server, finished, output_dir
):
    bn, no_bn = finished["comparison"]
    points = {i: server.http.get(f"/api/runs/{i}/metrics").json()["points"] for i in (bn, no_bn)}
    names = [x["name"] for x in points[bn][0]["diagnostics"]["layers"]]
    assert len(names) == 3  # the MLP's three hidden layers
    show(page, [bn, no_bn])

    panel = page.get_by_test_id("inside-panel")
    picker = page.get_by_test_id("inside-layer")
    page.wait_for_function(
        "document.querySelector('[data-testid=inside-panel]').dataset.state === 'recorded'"
    )
    assert picker.evaluate("s => [...s.options].map(o => o.value)") == names
    assert "Recorded" in page.get_by_test_id("inside-status").text_content()

    def expect_layer(name: str) -> None:
        steps = [p["step"] for p in points[bn]]

        # Redrawn for the layer: the BN run's median after BN is the API's.
        want = [layer(p, name)["pre_activation"]["p50"] for p in points[bn]]
        page.wait_for_function(
            """([run, want]) => (document.querySelector('[data-testid=inside-bands]').data || [])
                .some(t => t.meta && t.meta.runId === run && t.meta.kind === 'pre_activation-p50'
                      && JSON.stringify(Array.from(t.y)) === JSON.stringify(want))""",
            arg=[bn, want],
        )
        bands = {(t["run"], t["kind"]): t for t in traces(page, "bands")}
        # BN: the band before BN and after it; no BN: the input to the nonlinearity.
        assert bands[(bn, "pre_bn-p15")]["y"] == [
            layer(p, name)["pre_bn"]["p15"] for p in points[bn]
        ]
        assert bands[(bn, "pre_activation-p50")]["y"] == [
            layer(p, name)["pre_activation"]["p50"] for p in points[bn]
        ]
        assert bands[(no_bn, "pre_activation-p85")]["y"] == [
            layer(p, name)["pre_activation"]["p85"] for p in points[no_bn]
        ]
        assert (no_bn, "pre_bn-p50") not in bands and bands[(bn, "pre_bn-p50")]["x"] == steps

        # The heatmaps: one column per evaluation, each the histogram as fractions, binned
        # by that distribution's own edges.
        heat = {(t["run"], t["kind"]): t for t in traces(page, "heatmap")}
        assert set(heat) == {
            (no_bn, "pre_activation-heat"),
            (bn, "pre_bn-heat"),
            (bn, "pre_activation-heat"),
        }
        for (run_id, kind), trace in heat.items():
            which = kind.removesuffix("-heat")
            assert trace["type"] == "heatmap" and trace["x"] == steps
            assert trace["y"] == layer(points[run_id][0], name)[which]["edges"]
            for column, point in zip(trace["z"], points[run_id], strict=True):
                counts = layer(point, name)[which]["counts"]
                assert column == pytest.approx([c / sum(counts) for c in counts])

        norms = {(t["run"], t["kind"]): t for t in traces(page, "norms")}
        # A log axis: a gradient of exactly 0 is a gap, not a plunge to the bottom.
        assert norms[(no_bn, "grad_norm")]["y"] == [
            g if (g := layer(p, name)["grad_norm"]) else None for p in points[no_bn]
        ]
        assert norms[(bn, "weight_norm")]["y"] == [
            layer(p, name)["weight_norm"] for p in points[bn]
        ]

    expect_layer(names[0])
    # Batch against moving statistics on the same validation images, each in the legend.
    accuracy = {(t["run"], t["kind"]): t for t in traces(page, "bn")}
    for kind, words in (("val_acc_batch_stats", "batch"), ("val_acc_moving_stats", "moving")):
        line = accuracy[(bn, kind)]
        assert line["y"] == [p["diagnostics"][kind] for p in points[bn]]
        assert line["legend"] and f"{words} statistics" in line["name"]
    assert not any(run == no_bn for run, _ in accuracy)
    picker.select_option(names[2])
    expect_layer(names[2])
    panel.screenshot(path=output_dir / "inside-the-network.png")

    # Log axes (gradient, effective step) label every tick with its whole value, never a
    # bare digit ("5" for 0.5): read bottom to top, each axis's labels rise.
    for axis in ("y", "y3"):  # the gradient's and the effective step's
        labels = page.evaluate(
            """axis => [...document.querySelectorAll(
                `[data-testid=inside-norms] g.${axis}tick text`)]
                .map(t => t.textContent.replace('\u2212', '-'))""",
            axis,
        )
        values = [float(t) for t in labels]
        assert len(values) >= 2 and values == sorted(set(values)), labels
    # The legend sits below the x axis' title, not over it.
    legend, title = page.evaluate(
        """() => ['.legend', '.xtitle'].map(sel => document
            .querySelector(`[data-testid=inside-norms] ${sel}`).getBoundingClientRect().toJSON())"""
    )
    assert legend["top"] >= title["bottom"] - 1, (legend, title)

    # Full diagnostics: ICS for the picked layer, the landscape for the whole network.
    ics = {(t["run"], t["kind"]): t for t in traces(page, "ics")}
    assert ics[(no_bn, "ics_cosine")]["y"] == [
        layer(p, names[2])["ics_cosine"] for p in points[no_bn]
    ]
    smooth = {(t["run"], t["kind"]): t for t in traces(page, "smoothness")}
    assert smooth[(bn, "loss_range")]["y"] == [
        p["diagnostics"]["landscape"]["loss_range"] for p in points[bn]
    ]


def test_with_nothing_selected_the_panel_is_one_hint(page):
    show(page, [])
    expect(page.get_by_test_id("inside-status")).to_have_text(
        "Select runs in the table to look inside them."
    )
    expect(page.get_by_test_id("inside-charts")).to_be_hidden()


def test_a_run_without_diagnostics_says_not_recorded(page, finished):
    show(page, finished["off"])
    assert page.get_by_test_id("inside-panel").is_visible()
    page.wait_for_function(
        "document.querySelector('[data-testid=inside-panel]').dataset.state === 'not-recorded'"
    )
    assert "Not recorded" in page.get_by_test_id("inside-status").text_content()
    assert page.get_by_test_id("inside-layer").is_disabled()
    notes = page.evaluate(
        """() => (document.querySelector('[data-testid=inside-bands]').layout.annotations || [])
            .map(a => a.text)"""
    )
    assert any(n.startswith("not recorded") for n in notes), notes
    assert not any(t["y"] and any(v is not None for v in t["y"]) for t in traces(page, "bands"))


def test_a_log_axis_over_a_narrow_range_keeps_its_tick_labels_short(page):
    """The panel's tick rule (logTicks) as Plotly draws it: distinct labels, rising, at most
    8 characters (never 0.00040685) whatever the range."""
    cases = [
        [0.00040685, 0.00040712, 0.0004069],  # a measure that barely moves
        [0.0004, 0.00052],
        [0.91, 0.95],
        [12345.6, 12350.1],
        [1e-6, 3e-3],
    ]
    drawn = page.evaluate(
        """async (cases) => {
            const { logTicks } = await import('/js/plot/logaxis.js');
            const el = document.body.appendChild(document.createElement('div'));
            Object.assign(el.style, { width: '400px', height: '300px' });
            const drawn = [];
            for (const y of cases) {
                const ticks = logTicks(Math.min(...y), Math.max(...y));
                await Plotly.newPlot(el, [{ y }], { yaxis: { type: 'log', ...ticks } });
                drawn.push([...el.querySelectorAll('g.ytick text')].map(t => t.textContent));
            }
            el.remove();
            return drawn;
        }""",
        cases,
    )
    for labels in drawn:
        numbers = [float(label.replace("\u2212", "-").replace(",", "")) for label in labels]
        assert len(numbers) >= 2 and numbers == sorted(set(numbers)), labels
        assert all(len(label) <= 8 for label in labels), labels
