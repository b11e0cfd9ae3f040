"""The service's own costs, each measured against a peer in the same run.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.service

1. overhead  - one run through the server (POST → completed) vs the same
               configuration through `bnlab train` in a fresh process.
2. latency   - eval event sent by the worker → received by a websocket client.
3. fan-out   - trainer steps/s with 100 websocket clients vs with none.
4. scale     - GET /api/runs and /api/compare of two runs over 1,000 stored runs.
Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

from bench.report import machine, write_section
from bnlab.model.config import RunConfig
from bnlab.model.events import EvalEvent, ProbePercentiles
from bnlab.server.storage.store import Store
from bnlab.server.testing import ServerProcess

CNN = {"steps": 600, "eval_every": 100}  # about a minute on 2 cores


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_done(server: ServerProcess, run_id: str) -> dict:
    """Block until the run ends, told by its websocket (polling would cost CPU
    the trainer needs on a 2-core machine)."""
    with server.ws(f"/ws/runs/{run_id}") as ws:
        while True:
            run = json.loads(ws.recv(timeout=600)).get("run")
            if run and run["status"] not in ("queued", "running"):
                break
    assert run["status"] == "completed", run
    return run


def _via_server(server: ServerProcess, config: RunConfig) -> float:
    started = time.perf_counter()
    run = server.post("/api/runs", config.model_dump()).json()
    wait_done(server, run["id"])
    return time.perf_counter() - started


def _direct(config: RunConfig, data_dir: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bnlab",
            "train",
            "--steps",
            str(config.steps),
            "--eval-every",
            str(config.eval_every),
            "--data-dir",
            data_dir,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def overhead(server: ServerProcess, data_dir: str) -> dict:
    """ABBA order, so warm caches and drift favour neither side."""
    config = RunConfig(**CNN)
    served, direct = [], []
    for first_server in (False, True, True, False):
        pair = [(_direct, (config, data_dir), direct), (_via_server, (server, config), served)]
        for measure, args, into in pair[::-1] if first_server else pair:
            into.append(measure(*args))
    s, d = statistics.median(served), statistics.median(direct)
    return {"server_s": s, "direct_s": d, "ratio": s / d, "n": len(served)}


async def _follow(url: str, latencies: list[float] | None, done: asyncio.Event) -> None:
    async with websockets.connect(url, max_queue=None) as ws:
        while not done.is_set():
            text = await ws.recv()
            if latencies is None:
                continue  # a fan-out client: receive, nothing more (they share our 2 cores)
            received = time.time()
            message = json.loads(text)
            if message["type"] == "eval" and message.get("sent_at"):
                latencies.append(received - message["sent_at"])


async def _run_with_clients(server: ServerProcess, clients: int, config: dict):
    run = server.post("/api/runs", config).json()
    url = f"{server.ws_url}/ws/runs/{run['id']}"
    latencies: list[float] = []
    done = asyncio.Event()
    tasks = [
        asyncio.create_task(_follow(url, latencies if i == 0 else None, done))
        for i in range(clients)
    ]
    await asyncio.to_thread(wait_done, server, run["id"])
    done.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    points = server.http.get(f"/api/runs/{run['id']}/metrics").json()["points"]
    rates = [p["examples_per_sec"] for p in points if p["examples_per_sec"]]
    return statistics.mean(rates) / RunConfig().batch_size, latencies


def latency_and_fanout(server: ServerProcess) -> dict:
    config = {**CNN, "steps": 300, "eval_every": 20}
    quiet, crowded = [], []
    for clients in (0, 100, 100, 0):  # ABBA
        rate, _ = asyncio.run(_run_with_clients(server, clients, config))
        (crowded if clients else quiet).append(rate)
    _, latencies = asyncio.run(_run_with_clients(server, 1, {**config, "eval_every": 5}))
    q, c = statistics.median(quiet), statistics.median(crowded)
    return {
        "quiet_steps_s": q,
        "crowded_steps_s": c,
        "fanout_ratio": c / q,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p95_ms": 1000 * percentile(latencies, 95),
        "latency_n": len(latencies),
    }


def fill(db: Path, runs: int = 1000, points: int = 26) -> list[str]:
    store = Store(db)
    config = RunConfig()
    ids = []
    for i in range(runs):
        run_id = uuid.uuid4().hex[:12]
        store.insert_run(run_id, f"stored run {i}", config.model_copy(update={"seed": i}))
        for k in range(points):
            acc = 1 - 0.9 / (k + 1)
            store.add_point(
                run_id,
                k + 1,
                EvalEvent(
                    step=200 * k,
                    val_loss=1 / (k + 1),
                    val_acc=acc,
                    train_loss=1 / (k + 1),
                    examples_per_sec=1300.0,
                    elapsed=10.0 * k,
                    probe=ProbePercentiles(p15=-1.0, p50=0.0, p85=1.0),
                ),
            )
        ids.append(run_id)
    store.db.execute("UPDATE runs SET status = 'completed'")
    store.db.commit()
    store.close()
    return ids


def scale(data_dir: Path, tmp: Path) -> dict:
    db = tmp / "scale.db"
    ids = fill(db)
    server = ServerProcess(db, data_dir).start()
    try:
        timings: dict[str, list[float]] = {"runs": [], "compare": []}
        with httpx.Client(base_url=server.url) as http:
            for _ in range(200):
                for name, path in (
                    ("runs", "/api/runs"),
                    ("compare", f"/api/compare?runs={ids[3]},{ids[500]}"),
                ):
                    started = time.perf_counter()
                    http.get(path).raise_for_status()
                    timings[name].append(time.perf_counter() - started)
    finally:
        server.stop()
    return {f"{name}_p95_ms": 1000 * percentile(t, 95) for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    data_dir = Path(os.environ.get("BNLAB_DATA_DIR", "../shared/data/mnist")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = ServerProcess(tmp / "bench.db", data_dir, workers=1).start()
        try:
            o = overhead(server, str(data_dir))
            print("overhead", o, flush=True)
            f = latency_and_fanout(server)
            print("latency/fan-out", f, flush=True)
        finally:
            server.stop()
        s = scale(data_dir, tmp)
        print("scale", s, flush=True)
    body = "\n".join(
        [
            "### Service: overhead, latency, fan-out, scale",
            "",
            f"`python -m bench.service` on {machine()}.",
            "",
            "| measure | result | peer / target |",
            "| --- | --- | --- |",
            f"| overhead: {CNN['steps']}-step CNN run via server vs `bnlab train`, median of "
            f"{o['n']} each (ABBA) | "
            f"{o['server_s']:.1f} s vs {o['direct_s']:.1f} s = **{o['ratio']:.3f}x** | ≤ 1.03x |",
            f"| latency: worker eval → websocket client ({f['latency_n']} events) | "
            f"p50 {f['latency_p50_ms']:.1f} ms, **p95 {f['latency_p95_ms']:.1f} ms** | "
            "p95 < 50 ms |",
            f"| fan-out: trainer steps/s with 100 clients vs none, median of 2 each (ABBA) | "
            f"{f['crowded_steps_s']:.2f} vs "
            f"{f['quiet_steps_s']:.2f} = **{f['fanout_ratio']:.3f}x** | ≥ 0.98x |",
            f"| scale: `GET /api/runs` over 1,000 stored runs | **p95 {s['runs_p95_ms']:.1f} ms** |"
            " < 50 ms |",
            "| scale: `GET /api/compare` of two stored runs | "
            f"**p95 {s['compare_p95_ms']:.1f} ms** |"
            " < 50 ms |",
        ]
    )
    print(body)
    write_section("service", body)


if __name__ == "__main__":
    main()
