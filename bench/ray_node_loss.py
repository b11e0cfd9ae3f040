"""A lost Ray node: seconds until its run is `failed`, with Ray's default node
health checks and with the ones BN Lab recommends (NODE_HEALTH_CHECKS).

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.ray_node_loss

For each setting, a local cluster of three nodes on this machine: the head and two
that join it (`ray start --address`), one logical GPU each, so that a server with
`--gpus-per-run 1` trains one long run on each. Then
1. killed - every process of one joined node gets SIGKILL (raylet, actor, agents):
   its connections close, as when a host's Ray crashes or is OOM-killed;
2. frozen - after that, every process of the other gets SIGSTOP: a host that stops
   answering but closes nothing, as at a power cut or a network partition.
Measured: seconds from the signal to the run's `failed`, and its reason. Checked:
the server answers throughout and the head's run keeps training.
Not a pytest test: a cluster of three nodes and three TensorFlow actors takes about
a minute to come up on 2 cores, and Ray's defaults take a minute more to notice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from bench.report import machine, write_section
from bnlab.server.execution.ray_executor import NODE_HEALTH_CHECKS, NODE_LOSS_TARGET
from bnlab.server.testing import RayCluster, RayNode, ServerProcess

LONG = {"arch": "mlp", "steps": 100_000, "eval_every": 1000}  # trains until it is lost
GIVE_UP = 150.0  # seconds: Ray's defaults need about 65 for a frozen node


def _running(server: ServerProcess, run_id: str) -> None:
    server.wait_for(run_id, lambda r: r["status"] == "running" and r["step"] > 0, timeout=300)


def _lose(server: ServerProcess, node: RayNode, sig: int, runs: list[str]) -> dict:
    """Send `sig` to every process of `node`; wait for one of `runs` to fail."""
    for pid in node.pids():
        os.kill(pid, sig)
    sent = time.monotonic()
    while time.monotonic() - sent < GIVE_UP:
        for run_id in runs:
            run = server.run(run_id)  # raises if the server stopped answering
            if run["status"] != "running":
                runs.remove(run_id)
                return {
                    "seconds": time.monotonic() - sent,
                    "status": run["status"],
                    "error": run["error"],
                }
        time.sleep(0.1)
    return {"seconds": float("inf"), "status": "running", "error": None}


def measure(data_dir: Path, system_config: dict | None) -> dict:
    cluster = RayCluster(cpus=1, gpus=1, system_config=system_config).start()
    try:
        killed_node, frozen_node = (cluster.add_node(cpus=1, gpus=1) for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            flags = ["--executor", "ray", "--ray-address", cluster.address, "--gpus-per-run", "1"]
            with ServerProcess(Path(tmp) / "db.sqlite", data_dir, 3, flags) as server:
                while server.http.get("/api/health").json()["workers"]["total"] < 3:
                    time.sleep(0.2)  # the driver has seen all three nodes
                runs = [server.post("/api/runs", LONG).json()["id"] for _ in range(3)]
                for run_id in runs:
                    _running(server, run_id)
                print("three runs training, one per node", flush=True)
                killed = _lose(server, killed_node, signal.SIGKILL, runs)
                print("killed", killed, flush=True)
                frozen = _lose(server, frozen_node, signal.SIGSTOP, runs)
                print("frozen", frozen, flush=True)
                (head_run,) = runs
                before = server.run(head_run)["step"]
                time.sleep(3)
                after = server.run(head_run)
                goes_on = after["status"] == "running" and after["step"] > before
                nodes = len(server.http.get("/api/health").json()["cluster"]["nodes"])
    finally:
        cluster.stop()  # SIGKILL reaches stopped processes too
        for node in (cluster, *cluster.nodes):
            shutil.rmtree(node.temp_dir, ignore_errors=True)
    return {"killed": killed, "frozen": frozen, "head_goes_on": goes_on, "nodes_after": nodes}


def _row(name: str, case: dict) -> str:
    seconds = "never (gave up)" if case["seconds"] == float("inf") else f"{case['seconds']:.1f} s"
    ok = "yes" if case["seconds"] <= NODE_LOSS_TARGET and case["status"] == "failed" else "no"
    return f"| {name} | **{seconds}** ({ok}) | {case['status']}: {case['error']} |"


def main() -> None:
    data_dir = Path(os.environ.get("BNLAB_DATA_DIR", "../shared/data/mnist")).resolve()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the cluster and the server's driver
    settings = {"Ray's defaults": None, "NODE_HEALTH_CHECKS": NODE_HEALTH_CHECKS}
    results = {}
    for name, config in settings.items():
        print(name, config, flush=True)
        results[name] = measure(data_dir, config)
    rows = []
    for name, result in results.items():
        rows.append(_row(f"{name}: node killed", result["killed"]))
        rows.append(_row(f"{name}: node frozen", result["frozen"]))
    checks = [
        f"{name}: the head's run went on: {'yes' if r['head_goes_on'] else 'NO'}; "
        f"live nodes in /api/health afterwards: {r['nodes_after']} of 3"
        for name, r in results.items()
    ]
    body = "\n".join(
        [
            "### Ray executor: a lost node",
            "",
            f"`python -m bench.ray_node_loss` on {machine()}; a local Ray 2.60 cluster of "
            "three nodes on this machine (head + 2 joined, 1 CPU and 1 logical GPU each), "
            "one run per node (`--gpus-per-run 1`). *Killed*: SIGKILL to every process of a "
            "node (its connections close). *Frozen*: SIGSTOP to every process of a node (it "
            "stops answering and closes nothing: a power cut, a network partition). "
            f"`NODE_HEALTH_CHECKS` = `{json.dumps(NODE_HEALTH_CHECKS)}`, the head's "
            "`--system-config` (BN Lab's recommendation).",
            "",
            f"| setting: loss | signal → run `failed` (≤ {NODE_LOSS_TARGET:.0f} s?) | "
            "status: reason |",
            "| --- | --- | --- |",
            *rows,
            "",
            *(f"- {check}" for check in checks),
            "",
            f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        ]
    )
    print(body)
    write_section("ray-node-loss", body)


if __name__ == "__main__":
    main()
