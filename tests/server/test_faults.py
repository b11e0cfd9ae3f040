"""Workers die, servers die: runs end honestly and nothing finished is lost."""

import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EVAL_SUBSET
from tests.server.samples import LONG, TINY


@pytest.fixture
def idle_server(server):
    """The module's server (two workers, conftest), for the tests that leave it as
    they found it: each ends with its runs cancelled and its workers gone, so the
    next one's workers are its own. A server start and its fork server's TensorFlow
    import (some 7 s of CPU) fewer per test."""
    yield server
    server.cancel_active()
    deadline = time.monotonic() + 60
    while server.worker_pids():
        assert time.monotonic() < deadline, "a worker outlived its run"
        time.sleep(0.1)


def test_a_killed_worker_fails_its_run_the_others_go_on_and_the_next_starts(idle_server):
    server = idle_server
    doomed = server.post("/api/runs", LONG).json()
    server.wait_for(doomed["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    (worker,) = server.worker_pids()  # the doomed run's, the only one so far
    neighbour = server.post("/api/runs", {**TINY, "steps": 200, "eval_every": 50}).json()
    waiting = server.post("/api/runs", TINY).json()
    server.wait_for(neighbour["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    assert server.run(waiting["id"])["status"] == "queued"
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    failed = server.wait_status(doomed["id"], "failed", timeout=10)
    assert time.monotonic() - killed_at < 5
    assert "SIGKILL" in failed["error"]
    assert server.http.get("/api/health").status_code == 200
    for run in (neighbour, waiting):  # the other run goes on; the queued one starts
        assert server.wait_status(run["id"], "completed", "failed")["status"] == "completed"


def test_runs_start_in_fifo_order(start_server):
    server = start_server(workers=1)
    ids = [server.post("/api/runs", {**TINY, "steps": 5}).json()["id"] for _ in range(3)]
    runs = [server.wait_status(i, "completed", "failed") for i in ids]
    started = [r["started_at"] for r in runs]
    assert started == sorted(started)
    assert all(r["status"] == "completed" for r in runs)


def test_a_killed_server_restarts_with_finished_runs_intact(start_server, tmp_path):
    db = tmp_path / "kept.db"
    server = start_server(db=db)
    done = server.post("/api/runs", TINY).json()
    server.wait_status(done["id"], "completed")
    assert_never_loaded_tensorflow(server)  # a run trained, in its worker only
    before = (server.run(done["id"]), server.http.get(f"/api/runs/{done['id']}/metrics").json())
    flying = server.post("/api/runs", LONG).json()
    server.wait_for(flying["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    with server.ws(f"/ws/runs/{flying['id']}") as ws:  # the numbers a client has seen
        seen = [json.loads(ws.recv(timeout=30))["seq"] for _ in range(3)]
    server.stop(signal.SIGKILL)

    again = start_server(db=db)
    after = (again.run(done["id"]), again.http.get(f"/api/runs/{done['id']}/metrics").json())
    assert after == before  # completed run, its points and its test metrics: all there
    interrupted = again.run(flying["id"])
    assert interrupted["status"] == "interrupted" and "running" in interrupted["error"]
    assert interrupted["last_seq"] > max(seen)  # sequence numbers never repeat
    assert again.http.get(f"/api/runs/{flying['id']}/metrics").json()["points"]  # curve kept


def assert_never_loaded_tensorflow(server) -> None:
    """The server process itself has not loaded TensorFlow (its workers do) and stays small."""
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "tensorflow" not in maps
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    assert rss_kb < 200 * 1024


def test_an_interrupted_run_resumes_to_the_same_result_as_an_uninterrupted_one(
    start_server, tmp_path
):
    db = tmp_path / "resume.db"
    config = {**TINY, "steps": 60, "eval_every": 10, "seed": 21}
    server = start_server(db=db)
    victim = server.post("/api/runs", config).json()
    server.wait_for(victim["id"], lambda r: r["step"] >= 25)
    server.stop(signal.SIGKILL)  # server and workers gone mid-run

    again = start_server(db=db)
    interrupted = again.run(victim["id"])
    assert interrupted["status"] == "interrupted"
    reference = again.post("/api/runs", config).json()  # the same run, never interrupted
    resumed = again.http.post(f"/api/runs/{victim['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] in ("queued", "running")
    done = {r: again.wait_status(r, "completed", "failed") for r in (reference["id"], victim["id"])}
    assert all(run["status"] == "completed" for run in done.values())
    points = {r: again.http.get(f"/api/runs/{r}/metrics").json()["points"] for r in done}
    assert [p["step"] for p in points[victim["id"]]] == list(range(0, 61, 10))  # no gap, no dup
    seqs = [p["seq"] for p in points[victim["id"]]]
    assert seqs == sorted(set(seqs))
    # resumed, not restarted: the points up to the checkpoint are the ones from before
    kept = [p["step"] for p in points[victim["id"]] if p["seq"] <= interrupted["last_seq"]]
    assert kept[:3] == [0, 10, 20]
    for got, want in zip(points[victim["id"]], points[reference["id"]], strict=True):
        assert abs(got["val_loss"] - want["val_loss"]) < 1e-4, (got, want)
    ours, theirs = (done[r]["test_metrics"] for r in (victim["id"], reference["id"]))
    assert abs(ours["test_loss"] - theirs["test_loss"]) < 1e-4
    # float rounding may flip a prediction or two, no more
    assert abs(ours["test_accuracy"] - theirs["test_accuracy"]) <= 2 / EVAL_SUBSET
    refused = again.http.post(f"/api/runs/{victim['id']}/resume")
    assert refused.status_code == 409 and "completed" in refused.json()["detail"]


def test_a_locked_database_is_reported_and_nothing_is_lost(idle_server):
    server = idle_server
    db = server.db
    done = server.post("/api/runs", {**TINY, "steps": 5}).json()
    server.wait_status(done["id"], "completed")
    holder = sqlite3.connect(db, timeout=1)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        refused = server.post("/api/runs", TINY)
        assert refused.status_code == 503
        assert "locked" in refused.json()["detail"] and str(db) in refused.json()["detail"]
        assert server.run(done["id"])["status"] == "completed"  # reads still work
    finally:
        holder.rollback()
        holder.close()
    assert server.post("/api/runs", {**TINY, "steps": 5}).status_code == 201
    assert server.run(done["id"])["test_metrics"] is not None


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_reported_and_nothing_is_lost(start_server, small_disk):
    server = start_server(db=small_disk / "bnlab.db")
    done = server.post("/api/runs", {**TINY, "steps": 5}).json()
    server.wait_status(done["id"], "completed")
    before = server.http.get(f"/api/runs/{done['id']}/metrics").json()
    filler = small_disk / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):  # take every byte left
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    refused = server.post("/api/runs", {**TINY, "label": "x" * 100})
    assert refused.status_code == 503, refused.text
    assert "full" in refused.json()["detail"]
    assert server.http.get(f"/api/runs/{done['id']}/metrics").json() == before
    filler.unlink()
    again = server.post("/api/runs", {**TINY, "steps": 5})
    assert again.status_code == 201
    assert server.wait_status(again.json()["id"], "completed")["status"] == "completed"


def test_clients_that_never_read_cost_nothing_to_the_others(idle_server):
    server = idle_server
    run = server.post("/api/runs", {**TINY, "steps": 300, "eval_every": 1}).json()
    stuck = [stuck_client(server, f"/ws/runs/{run['id']}") for _ in range(10)]
    stuck += [stuck_client(server, "/ws/runs") for _ in range(10)]
    try:
        with server.ws(f"/ws/runs/{run['id']}") as ws:
            points = []
            while True:
                message = json.loads(ws.recv(timeout=120))
                points += message.get("points", [])
                if message["type"] == "eval":
                    points.append(message["point"])
                if message.get("run", {}).get("status") == "completed":
                    break
        assert [p["step"] for p in points] == list(range(301))  # every point, in order
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
        assert rss < 200 * 1024
        assert server.http.get("/api/health").status_code == 200
    finally:
        for sock in stuck:
            sock.close()


def stuck_client(server, path: str) -> socket.socket:
    """A websocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_a_run_stored_by_an_older_version_keeps_its_meaning(start_server, tmp_path):
    db = tmp_path / "old.db"
    server = start_server(db=db)
    today = {key: value for key, value in TINY.items() if key != "max_shift"}
    run = server.post("/api/runs", {**today, "steps": 5}).json()
    server.wait_status(run["id"], "completed")
    assert server.run(run["id"])["config"]["max_shift"] == 1  # today's default
    server.stop()
    # What a version from before `max_shift` existed wrote: no such key.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        (text,) = conn.execute("SELECT config FROM runs WHERE id = ?", (run["id"],)).fetchone()
        config = json.loads(text)
        del config["max_shift"]
        conn.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), run["id"]))

    again = start_server(db=db)
    stored = again.run(run["id"])
    assert stored["status"] == "completed"
    assert stored["config"]["max_shift"] == 0  # it trained on unshifted images
    assert stored["config"]["steps"] == 5
