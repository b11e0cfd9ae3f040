"""Diagnostics (issue #17) through a real server: tiny MLP runs recorded at `basic` and
at `full`, streamed over the websocket as they train, stored, and exported as JSON and
CSV with the same values."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.server.samples import TINY
from tests.server.test_stream import follow, points_of

RUNS = {
    "basic": {**TINY, "diagnostics": "basic"},  # with BN
    "full": {**TINY, "batch_norm": False, "diagnostics": "full", "full_diagnostics_every": 2},
}


@pytest.fixture(scope="module")
def streamed(server) -> dict[str, tuple[dict, list[dict]]]:
    """Each run, finished, with the points its stream delivered (snapshot and eval events)."""
    runs = {}
    for level, config in RUNS.items():
        created = server.post("/api/runs", config)
        assert created.status_code == 201, created.text
        runs[level] = created.json()
    streamed = {}
    for level, run in runs.items():
        with server.ws(f"/ws/runs/{run['id']}") as ws:
            messages = follow(ws, timeout=300)  # compiling the measures takes a while
        assert messages[-1]["run"]["status"] == "completed", messages[-1]["run"]["error"]
        streamed[level] = (messages[-1]["run"], points_of(messages))
    return streamed


def test_the_stream_carries_each_levels_diagnostics_and_the_api_stores_them(server, streamed):
    for level, (run, points) in streamed.items():
        assert [p["step"] for p in points] == [0, 5, 10, 15, 20]
        stored = server.http.get(f"/api/runs/{run['id']}/metrics").json()["points"]
        assert stored == points  # what was streamed live is what is stored
        for point in points:
            diagnostics = point["diagnostics"]
            assert diagnostics["level"] == level
            assert [x["name"] for x in diagnostics["layers"]] == ["fc1", "fc2", "fc3"]
            for layer in diagnostics["layers"]:
                for dist in filter(None, (layer["pre_bn"], layer["pre_activation"])):
                    assert len(dist["counts"]) == len(dist["edges"]) - 1  # its own edges
                assert layer["grad_norm"] >= 0 and layer["weight_norm"] > 0

    _, basic = streamed["basic"]
    assert all(p["diagnostics"]["landscape"] is None for p in basic)
    assert all(x["pre_bn"] and x["bn_gap"] is not None for x in basic[-1]["diagnostics"]["layers"])
    assert all(x["ics_distance"] is None for p in basic for x in p["diagnostics"]["layers"])

    _, full = streamed["full"]  # without BN: nothing before BN, no gap
    assert all(
        x["pre_bn"] is None and x["bn_gap"] is None for x in full[-1]["diagnostics"]["layers"]
    )
    # Sampled every 2nd evaluation: the landscape at the 1st, 3rd and 5th.
    sampled = [p["step"] for p in full if p["diagnostics"]["landscape"]]
    assert sampled == [0, 10, 20]
    landscape = full[-1]["diagnostics"]["landscape"]
    assert len(landscape["losses"]) == len(landscape["step_multiples"])
    assert landscape["grad_predictiveness"] == pytest.approx(max(landscape["grad_changes"]))


def number(cell: str) -> float | None:
    return float(cell) if cell else None


def test_the_exports_carry_the_diagnostics(server, streamed):
    (basic_run, basic), (full_run, full) = streamed["basic"], streamed["full"]
    ids = f"{basic_run['id']},{full_run['id']}"

    body = server.http.get("/api/export", params={"runs": ids, "format": "json"}).text
    exported = json.loads(body, parse_constant=pytest.fail)  # strict JSON: no NaN

    assert [r["points"] for r in exported["runs"]] == [basic, full]

    text = server.http.get("/api/export", params={"runs": ids, "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(basic) + len(full)
    # The BN run's columns before BN, the full run's landscape: one table for both.
    by_run = {run_id: [r for r in rows if r["run_id"] == run_id] for run_id in ids.split(",")}
    for point, row in zip(basic, by_run[basic_run["id"]], strict=True):
        fc2 = point["diagnostics"]["layers"][1]
        assert row["diagnostics.level"] == "basic"
        assert float(row["diagnostics.layers.fc2.pre_bn.p15"]) == fc2["pre_bn"]["p15"]
        assert float(row["diagnostics.layers.fc2.effective_step"]) == fc2["effective_step"]
        assert row["diagnostics.landscape.loss_range"] == ""
        moving = point["diagnostics"]["val_acc_moving_stats"]
        assert float(row["diagnostics.val_acc_moving_stats"]) == moving
    for point, row in zip(full, by_run[full_run["id"]], strict=True):
        fc1 = point["diagnostics"]["layers"][0]
        landscape = point["diagnostics"]["landscape"]
        assert row["diagnostics.layers.fc1.pre_bn.p15"] == ""  # no BN
        # ICS and the landscape on sampled evaluations only: empty cells between them.
        assert number(row["diagnostics.layers.fc1.ics_cosine"]) == fc1["ics_cosine"]
        beta = number(row["diagnostics.landscape.beta_smoothness"])
        assert beta == (landscape and landscape["beta_smoothness"])
    assert any(number(r["diagnostics.landscape.beta_smoothness"]) for r in by_run[full_run["id"]])
    # Lists stay in the JSON: no column holds a histogram.
    assert not any(c.endswith(("counts", "edges", "losses")) for c in rows[0])

    # A single run's CSV has its own columns only: no BN, no pre_bn.
    single = server.http.get(f"/api/runs/{full_run['id']}/metrics.csv").text
    header = next(csv.reader(io.StringIO(single)))
    assert "diagnostics.layers.fc3.ics_distance" in header
    assert not any(".pre_bn." in c for c in header)


def test_compare_leaves_the_diagnostics_out_unless_asked(server, streamed):
    ids = ",".join(run["id"] for run, _ in streamed.values())
    lean = server.http.get(f"/api/compare?runs={ids}").json()
    full = server.http.get(f"/api/compare?runs={ids}&diagnostics=true").json()
    for lean_run, full_run, (_, points) in zip(
        lean["runs"], full["runs"], streamed.values(), strict=True
    ):
        assert all("diagnostics" not in p for p in lean_run["points"])
        assert full_run["points"] == points
        assert [{k: v for k, v in p.items() if k != "diagnostics"} for p in points] == lean_run[
            "points"
        ]
    assert lean["pairs"] == full["pairs"]
