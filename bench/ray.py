"""The Ray executor's costs, each against the process executor in the same run.

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.ray

A local Ray cluster (`ray start --head`, 2 CPUs, 1 logical GPU, token auth off)
and two servers share the machine: one trains through Ray, one in worker
processes, one run at a time each, alternating (ABBA) so drift favours neither.

1. wall time - POST → completed of the same CNN run, Ray vs process executor.
2. latency   - eval event sent inside the Ray actor → received by a websocket client.
Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.report import machine, write_section
from bench.service import _run_with_clients, _via_server, percentile
from bnlab.model.config import RunConfig
from bnlab.server.testing import RayCluster, ServerProcess

RUN = {"steps": 300, "eval_every": 100}  # the default CNN: long enough that start-up is not all


def wall_time(ray_server: ServerProcess, local: ServerProcess, repeats: int) -> dict:
    config = RunConfig(**RUN)
    through_ray, through_processes = [], []
    for i in range(repeats):
        order = [(ray_server, through_ray), (local, through_processes)]
        for server, into in order if i % 2 == 0 else order[::-1]:  # ABBA
            into.append(_via_server(server, config))
            name = "ray" if server is ray_server else "process"
            print(name, f"{into[-1]:.1f} s", flush=True)
    r, p = statistics.median(through_ray), statistics.median(through_processes)
    return {"ray_s": r, "process_s": p, "ratio": r / p, "n": repeats}


def latency(ray_server: ServerProcess) -> dict:
    config = {"arch": "mlp", "steps": 600, "eval_every": 5, "train_subset": 5000}
    _, latencies = asyncio.run(_run_with_clients(ray_server, 1, config))
    return {
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "n": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="runs per executor (even: ABBA)")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BNLAB_DATA_DIR", "../shared/data/mnist")).resolve()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the cluster and both servers' drivers
    cluster = RayCluster(cpus=2, gpus=1).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ray_flags = ["--executor", "ray", "--ray-address", cluster.address]
            with (
                ServerProcess(Path(tmp) / "ray.db", data_dir, 1, ray_flags) as ray_server,
                ServerProcess(Path(tmp) / "local.db", data_dir, 1) as local,
            ):
                w = wall_time(ray_server, local, args.repeats)
                print("wall time", w, flush=True)
                lat = latency(ray_server)
                print("latency", lat, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    body = "\n".join(
        [
            "### Ray executor: wall time and latency",
            "",
            f"`python -m bench.ray` on {machine()}; a local Ray 2.60 cluster (2 CPUs, "
            "1 logical GPU) on the same machine as both servers.",
            "",
            "| measure | result | peer / target |",
            "| --- | --- | --- |",
            f"| wall time: {RUN['steps']}-step CNN run, POST → completed, through Ray vs "
            f"through a worker process, median of {w['n']} each (ABBA) | "
            f"{w['ray_s']:.1f} s vs {w['process_s']:.1f} s = **{w['ratio']:.3f}x** | ≤ 1.05x |",
            f"| latency: eval event in the Ray actor → websocket client ({lat['n']} events) | "
            f"p50 {lat['p50_ms']:.1f} ms, **p95 {lat['p95_ms']:.1f} ms** | p95 < 100 ms |",
            "",
            f"Load average at the end: {load:.1f} on {os.cpu_count()} cores (other work shares "
            "the machine; with so few repeats the ratio carries that noise).",
        ]
    )
    print(body)
    write_section("ray", body)


if __name__ == "__main__":
    main()
