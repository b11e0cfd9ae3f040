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
        return ((el.layout && el.layout.annotations) || []).map(a => ({text: a.text, x: a.x}));
    };
    return {
        status: row ? row.dataset.status : null,
        eta: row ? row.querySelector('[data-testid=run-eta]').textContent : null,
        points: window.bnlab.pointsFor(id).length,
        acc: notes('chart-acc'),
        probe: notes('chart-probe'),
    };
}"""


def _texts(notes: list[dict]) -> list[str]:
    return [n["text"] for n in notes]


def _probe_note(sample: dict, centre: float) -> list[str]:
    """The notes in one probe panel (its headline is above it, at y > 1, not among these)."""
    return [n["text"] for n in sample["probe"] if n["x"] == centre and "Fig." not in n["text"]]


WITHOUT_BN, WITH_BN = 0.235, 0.765  # the probe panels' centres


def test_a_run_says_starting_then_testing_and_never_eta_0s(page, server):
    (run,) = start(page, single=True)
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
    assert all(any(t.startswith("starting…") for t in _texts(s["acc"])) for s in early)
    assert all(_probe_note(s, WITH_BN) == _texts(s["acc"]) for s in early)
    # Once points arrive the charts show them, without a note over them.
    late = [s for s in samples if s["points"] > 0]
    assert late and all(s["acc"] == [] for s in late), late[-1]
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
    expect(probe).to_contain_text("no values: the run predates this measurement")
    expect(probe).to_contain_text("no finite values: the run diverged")
    sample = page.evaluate(SAMPLE, bn["id"])
    assert _probe_note(sample, WITH_BN) == ["no values: the run predates this measurement"]
    assert _probe_note(sample, WITHOUT_BN) == ["no finite values: the run diverged"]
    # The loss chart has the BN run's losses to show: no note there.
    assert page.evaluate(SAMPLE, bn["id"])["acc"] == []
