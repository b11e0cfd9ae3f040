"""The live stream: snapshot, ordered events, late joiners and reconnects."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.exceptions import ConnectionClosed

from bnlab.server.live.hub import Hub
from bnlab.server.live.messages import CloseCode
from bnlab.server.testing import receive
from tests.server.samples import TINY


def follow(
    ws, until_status=("completed", "failed", "cancelled", "diverged"), timeout: float = 60
) -> list[dict]:
    """Every message up to and including the run's terminal status (`timeout`: seconds
    to wait for each)."""
    messages = []
    while True:
        message = receive(ws, timeout)
        messages.append(message)
        run = message.get("run")
        if message["type"] in ("status", "snapshot") and run and run["status"] in until_status:
            return messages


def points_of(messages: list[dict]) -> list[dict]:
    points = []
    for m in messages:
        if m["type"] == "snapshot":
            points += m["points"]
        elif m["type"] == "eval":
            points.append(m["point"])
    return points


def stored_points(server, run_id):
    return server.http.get(f"/api/runs/{run_id}/metrics").json()["points"]


def test_snapshot_then_every_event_in_order_until_completed(server):
    run = server.post("/api/runs", TINY).json()
    with server.ws(f"/ws/runs/{run['id']}") as ws:
        messages = follow(ws)
    assert messages[0]["type"] == "snapshot" and messages[0]["run"]["id"] == run["id"]
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs[1:])) == len(seqs) - 1
    kinds = {m["type"] for m in messages}
    assert {"eval", "test", "status"} <= kinds
    assert [p["step"] for p in points_of(messages)] == [0, 5, 10, 15, 20]
    assert points_of(messages) == stored_points(server, run["id"])
    test = next(m for m in messages if m["type"] == "test")
    assert test["run"]["test_metrics"]["test_accuracy"] > 0.5
    assert messages[-1]["run"]["status"] == "completed"


def test_a_late_joiner_gets_the_past_in_the_snapshot_and_the_rest_live(server):
    run = server.post("/api/runs", {**TINY, "steps": 60, "eval_every": 5}).json()
    server.wait_for(run["id"], lambda r: r["step"] >= 15)
    with server.ws(f"/ws/runs/{run['id']}") as ws:
        messages = follow(ws)
    assert len(messages[0]["points"]) >= 3  # joined late: the past came in the snapshot
    assert [p["step"] for p in points_of(messages)] == list(range(0, 61, 5))


def test_a_reconnecting_client_gets_no_gaps_and_no_duplicates(server):
    run = server.post("/api/runs", {**TINY, "steps": 60, "eval_every": 5}).json()
    with server.ws(f"/ws/runs/{run['id']}") as ws:
        first = [receive(ws)]
        while len(points_of(first)) < 3:
            first.append(receive(ws))
    last_seq = first[-1]["seq"]
    server.wait_for(run["id"], lambda r: r["step"] >= 30)  # points keep coming meanwhile
    with server.ws(f"/ws/runs/{run['id']}?after_seq={last_seq}") as ws:
        second = follow(ws)
    assert all(p["seq"] > last_seq for p in second[0]["points"])
    points = points_of(first) + points_of(second)
    assert [p["step"] for p in points] == list(range(0, 61, 5))
    assert points == stored_points(server, run["id"])


def test_unknown_run_closes_with_4404(server):
    with server.ws("/ws/runs/nope") as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == CloseCode.NOT_FOUND and "nope" in closed.value.rcvd.reason


def test_malformed_after_seq_closes_with_4400(server):
    run = server.post("/api/runs", {**TINY, "steps": 5, "eval_every": 5}).json()
    with (
        server.ws(f"/ws/runs/{run['id']}?after_seq=abc") as ws,
        pytest.raises(ConnectionClosed) as c,
    ):
        ws.recv(timeout=10)
    assert c.value.rcvd.code == CloseCode.BAD_REQUEST


def test_runs_stream_follows_every_status_change(server):
    with server.ws("/ws/runs") as ws:
        snapshot = receive(ws)
        assert snapshot["type"] == "runs"
        run = server.post("/api/runs", {**TINY, "steps": 10}).json()
        statuses = []
        while "completed" not in statuses:
            message = receive(ws)
            if message["type"] != "run" or message["run"]["id"] != run["id"]:
                continue
            if not statuses or statuses[-1] != message["run"]["status"]:
                statuses.append(message["run"]["status"])
        assert statuses[0] == "queued" and statuses[-2:] == ["running", "completed"]
        server.http.delete(f"/api/runs/{run['id']}")
        while (message := receive(ws))["type"] != "deleted":
            pass
        assert message["id"] == run["id"]


def test_a_stuck_subscriber_is_dropped_without_slowing_the_others():
    async def scenario():
        hub = Hub(queue_size=4)
        stuck, live = hub.subscribe("run:x"), hub.subscribe("run:x")
        received = []
        for seq in range(1, 11):
            hub.publish("run:x", json.dumps({"seq": seq}), seq)
            item = await live.next()
            received.append(item[0])
        assert received == list(range(1, 11))  # the reader got everything, promptly
        assert stuck.overflowed and stuck.queue.qsize() <= 4  # bounded, then dropped
        drained = [stuck.queue.get_nowait() for _ in range(stuck.queue.qsize())]
        assert drained[-1] is None  # told to close (the client reconnects with after_seq)

    # A thread of its own: the browser tests' Playwright keeps a loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()
