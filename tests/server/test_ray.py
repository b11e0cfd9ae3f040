"""The Ray executor on a real local Ray cluster: `ray start --head` with 2 CPUs and
one *logical* GPU (Ray schedules logical GPUs on a machine without any, which is
what lets packing be tested here), shared by this module's tests and stopped at the
end. With Ray's token authentication, as a careful user runs it: the cluster and
every server under test share a token through Ray's own settings (RAY_AUTH_MODE,
RAY_AUTH_TOKEN_PATH), and the server's address is explicit, where Ray finds no
token by itself. The benchmarks run theirs without (RAY_AUTH_MODE=disabled)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from bnlab.model.data import FILES
from bnlab.server.status import Outcome
from bnlab.server.testing import RayCluster, ServerProcess
from tests.server import test_experiments_api
from tests.server.samples import LONG, TINY
from tests.server.test_experiments_api import assert_close, wait_experiment

pytest.importorskip("ray")


# An experiment of one cell x two seeds x two arms: a BN and a no-BN stack of two
# runs each on two slots (half the logical GPU each), as on two worker processes.
STACKED = {
    "label": "stacked on ray",
    "base": {**test_experiments_api.DESIGN["base"], "steps": 20, "eval_every": 10},
    "vary": {"learning_rate": [0.01]},
    "seeds": 2,
}
STACKED_RUNS = 4


def place(run: dict) -> tuple:
    return (run["config"]["seed"], run["config"]["batch_norm"])


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN_PATH", str(token))  # never the user's ~/.ray/auth_token
        mp.delenv("RAY_AUTH_TOKEN", raising=False)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield


@pytest.fixture(scope="module")
def cluster(ray_env):
    cluster = RayCluster().start()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_server(start_server, cluster):
    def start(workers: int = 4, extra: list[str] = (), data: Path | None = None):
        flags = ["--executor", "ray", "--ray-address", cluster.address, *extra]
        server = start_server(workers=workers, extra=flags, data=data)
        # connected, and the cluster's capacity known
        deadline = time.monotonic() + 60
        while not server.http.get("/api/health").json()["cluster"]["connected"]:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        return server

    yield start


def test_health_reports_the_executor_and_the_clusters_nodes_and_resources(ray_server):
    server = ray_server(extra=["--gpus-per-run", "0.5"])
    health = server.http.get("/api/health").json()
    assert health["executor"] == "ray"
    cluster = health["cluster"]
    assert len(cluster["nodes"]) == 1
    assert cluster["nodes"][0]["cpus"] == 2 and cluster["nodes"][0]["gpus"] == 1
    assert cluster["gpus"] == {"total": 1, "free": 1}
    assert cluster["cpus"]["total"] == 2
    assert health["workers"]["total"] == 2  # one GPU / 0.5 per run
    # Ray lives in the driver child: losing the cluster cannot take the server down.
    assert "_raylet" not in Path(f"/proc/{server.process.pid}/maps").read_text()
    # This cluster keeps Ray's node health checks: the log says how to tighten them.
    assert "node health checks take up to 65 s" in server.log.read_text()


def results(server: ServerProcess, runs: list[dict]) -> tuple[list, list]:
    """The runs' test metrics and curves, in the order given."""
    points = [server.http.get(f"/api/runs/{r['id']}/metrics").json()["points"] for r in runs]
    curves = [
        [(p["step"], p["val_loss"], p["val_acc"], p["train_loss"]) for p in run_points]
        for run_points in points
    ]
    return [r["test_metrics"] for r in runs], curves


def test_a_comparison_and_a_stacked_experiment_through_ray_store_what_processes_store(
    ray_server, start_server, tmp_path
):
    config = {**TINY, "seed": 7}
    twins, stacks = [], []
    # Both twins at once on either side: half the logical GPU each, two workers; then
    # the experiment's two stacks, one a slot.
    servers = (ray_server(extra=["--gpus-per-run", "0.5"]), start_server(db=tmp_path / "l.db"))
    for server in servers:
        comparison = server.post("/api/comparisons", config).json()
        experiment_id = server.post("/api/experiments", STACKED).json()["id"]
        ids = [run["id"] for run in comparison["runs"]]
        runs = [server.wait_status(i, "completed", "failed", "cancelled") for i in ids]
        assert [r["status"] for r in runs] == ["completed", "completed"], runs
        twins.append(results(server, runs))
        experiment = wait_experiment(server, experiment_id, "completed", "failed", timeout=240)
        runs = sorted(experiment["runs"], key=place)
        assert [r["status"] for r in runs] == ["completed"] * STACKED_RUNS, runs
        # Trained as stacks, BN and no-BN apart (the start event names the path).
        assert {(r["path"], r["stack_size"]) for r in runs} == {("stacked", 2)}
        stacks.append(results(server, runs))
        server.stop()
    # The same runs, step for step; equal up to float rounding: an actor's TensorFlow
    # pools are Ray's share of the CPU, a worker process's its slot's, and the sums
    # of a reduction may round differently (seen: 1e-7 relative in the test loss).
    assert_close(*twins)
    assert len(twins[0][1][0]) == 5  # steps 0, 5, 10, 15, 20
    # A stack's actor trains it as a stack worker process does, model for model.
    assert_close(*stacks)
    assert len(stacks[0][1][0]) == 3  # steps 0, 10, 20


def test_two_runs_share_the_gpu_a_third_waits_then_cancel_frees_its_share(ray_server, cluster):
    server = ray_server(extra=["--gpus-per-run", "0.5"])
    first, second, third = (server.post("/api/runs", LONG).json() for _ in range(3))
    for run in (first, second):
        server.wait_for(run["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    assert server.run(third["id"])["status"] == "queued"
    assert server.http.get("/api/health").json()["cluster"]["gpus"]["free"] == 0

    cancelled_at = time.monotonic()
    server.post(f"/api/runs/{first['id']}/cancel")
    assert server.wait_status(first["id"], "cancelled", timeout=15)["error"] is None
    assert time.monotonic() - cancelled_at < 5  # cooperative: no grace period needed
    server.wait_for(third["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    server.cancel_active()
    for run in (second, third):
        server.wait_status(run["id"], "cancelled", timeout=15)


def test_a_killed_actor_fails_its_run_within_10_s_the_other_goes_on(ray_server, cluster):
    server = ray_server(extra=["--gpus-per-run", "0.5"])
    doomed = server.post("/api/runs", LONG).json()
    server.wait_for(doomed["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    (actor,) = cluster.actor_pids()
    neighbour = server.post("/api/runs", {**TINY, "steps": 150, "eval_every": 50}).json()
    server.wait_for(neighbour["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    os.kill(actor, signal.SIGKILL)
    killed_at = time.monotonic()
    failed = server.wait_status(doomed["id"], "failed", timeout=10)
    assert time.monotonic() - killed_at < 10
    assert "Ray actor" in failed["error"]
    assert server.wait_status(neighbour["id"], "completed", "failed")["status"] == "completed"


def test_a_killed_stack_actor_fails_only_its_own_runs_and_a_stacked_run_cancels_alone(
    ray_server, cluster
):
    server = ray_server(extra=["--gpus-per-run", "0.5"])
    long = {**STACKED, "base": {**STACKED["base"], "steps": 100_000, "eval_every": 1000}}
    experiment_id = server.post("/api/experiments", long).json()["id"]
    ids = [run["id"] for run in server.get(f"/api/experiments/{experiment_id}").json()["runs"]]
    for run_id in ids:  # both stacks train: one actor each, a slot each
        server.wait_for(run_id, lambda r: r["status"] == "running" and r["step"] > 0)
    health = server.http.get("/api/health").json()
    assert health["workers"]["busy"] == 2 and health["cluster"]["gpus"]["free"] == 0
    victim, _ = cluster.actor_pids(("StackActor",))
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    deadline = killed_at + 10
    while len(failed := [r for r in map(server.run, ids) if r["status"] == "failed"]) < 2:
        assert time.monotonic() < deadline, [server.run(i)["status"] for i in ids]
        time.sleep(0.2)
    assert len({r["config"]["batch_norm"] for r in failed}) == 1  # one stack's runs
    for run in failed:
        assert "Ray actor" in run["error"], run["error"]
    # The other stack trains on; one of its runs cancelled stops alone.
    first, second = [i for i in ids if i not in {r["id"] for r in failed}]
    server.post(f"/api/runs/{first}/cancel")
    assert server.wait_status(first, "cancelled", timeout=30)["error"] is None
    step = server.run(second)["step"]
    server.wait_for(second, lambda r: r["status"] == "running" and r["step"] > step)
    # The last cancelled: the stack stops, its actor goes and its slot is free.
    server.post(f"/api/runs/{second}/cancel")
    server.wait_status(second, "cancelled", timeout=30)
    deadline = time.monotonic() + 15
    while cluster.actor_pids() or server.http.get("/api/health").json()["workers"]["busy"]:
        assert time.monotonic() < deadline, "the stack's actor outlived its runs"
        time.sleep(0.2)


def test_no_actor_outlives_its_driver_or_its_server_and_a_restart_interrupts_the_run(
    ray_server, cluster
):
    def gone(pids: list[int]) -> None:
        deadline = time.monotonic() + 15
        while cluster.actor_pids() or any(Path(f"/proc/{pid}").exists() for pid in pids):
            assert time.monotonic() < deadline, "an actor outlived its driver"
            time.sleep(0.2)

    server = ray_server()
    # The driver alone dies (the OOM killer's pick): Ray ends the actors it owned,
    # the run fails saying so, and the next run gets a new driver.
    lost = server.post("/api/runs", LONG).json()
    server.wait_for(lost["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    (driver,) = server.worker_pids()
    os.kill(driver, signal.SIGKILL)
    failed = server.wait_status(lost["id"], "failed", timeout=10)
    assert "the Ray driver process was killed by SIGKILL" in failed["error"]
    gone([driver])

    flying = server.post("/api/runs", LONG).json()
    server.wait_for(flying["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    assert len(cluster.actor_pids()) == 1
    driver = [pid for pid in server.pids() if pid != server.process.pid]
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone, as a crash would
    gone(driver)  # it sees its pipe close and ends, and its actors with it
    # The restarted server: the run is interrupted, exactly as with worker processes.
    again = ray_server()  # the same database file
    interrupted = again.run(flying["id"])
    assert interrupted["status"] == "interrupted" and "running" in interrupted["error"]


def test_mnist_the_driver_could_not_read_is_read_again_by_the_next_run(
    ray_server, data_dir, tmp_path
):
    # Worker processes each read the files, so fixing them helps the next run at once;
    # the Ray driver, which puts them into the object store, must not need a restart.
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for name in FILES:
        shutil.copy(data_dir / name, mnist / name)
    broken = mnist / "t10k-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:1000])  # as an interrupted copy leaves it
    server = ray_server(data=mnist)
    first = server.post("/api/runs", TINY).json()
    failed = server.wait_status(first["id"], "failed", "completed", timeout=30)
    assert failed["status"] == "failed"
    assert f"MNIST file {broken} is corrupt or truncated" in failed["error"]

    shutil.copy(data_dir / broken.name, broken)
    second = server.post("/api/runs", TINY).json()
    assert server.wait_status(second["id"], "completed", "failed")["status"] == "completed"


def test_a_stopped_cluster_fails_its_runs_clearly_and_the_server_keeps_serving(ray_server, cluster):
    # Last in the module: it stops the shared cluster.
    server = ray_server()
    flying = server.post("/api/runs", LONG).json()
    server.wait_for(flying["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    cluster.stop()
    stopped_at = time.monotonic()
    failed = server.wait_status(flying["id"], "failed", timeout=30)
    assert time.monotonic() - stopped_at < 10
    assert f"lost the connection to the Ray cluster at {cluster.address}" in failed["error"]
    listed = server.http.get("/api/runs").json()["items"]  # stored runs are still served
    assert [run["id"] for run in listed] == [flying["id"]]
    health = server.http.get("/api/health").json()
    assert health["cluster"]["connected"] is False
    assert "Ray cluster" in health["cluster"]["error"]
    # A new run cannot reach the cluster either, and says so
    late = server.post("/api/runs", TINY).json()
    error = server.wait_status(late["id"], "failed", timeout=60)["error"]
    assert f"cannot connect to the Ray cluster at {cluster.address}" in error


# -- the driver's words for what went wrong (no cluster needed) -------------------


def test_a_lost_actor_or_node_is_named_in_one_line_with_the_node():
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from bnlab.server.execution.ray_driver import death_reason

    # Ray's messages as Ray 2.60 words them: a killed node's closed connection, and
    # the GCS giving up on a node that stopped answering.
    unavailable = ActorUnavailableError(
        "The actor 60e5 is unavailable: The actor is temporarily unavailable: RpcError: "
        "RPC error: Socket closed rpc_code: 14. The task may or may not have been executed "
        "on the actor.",
        b"\0" * 16,
    )
    assert death_reason(unavailable, "10.0.0.7") == (
        "lost the Ray actor training this run on node 10.0.0.7 (its process or node went "
        "away): RpcError: RPC error: Socket closed rpc_code: 14"
    )
    node_died = ActorDiedError()
    node_died.error_msg = (  # what str() gives; Ray builds it from the GCS's death cause
        "The actor died unexpectedly before finishing this task.\n\tclass_name: RunActor\n"
        "The actor died because its node has died. Node Id: b488 the actor's node was "
        "terminated unexpectedly: health check failed due to missing too many heartbeats"
    )
    assert death_reason(node_died) == (
        "the Ray actor training this run died: The actor died because its node has died. "
        "Node Id: b488 the actor's node was terminated unexpectedly: health check failed "
        "due to missing too many heartbeats"
    )
    # A node without BN Lab installed: the actor's class cannot be loaded there.
    not_installed = ActorDiedError()
    not_installed.error_msg = (
        "The actor died because of an error raised in its creation task, "
        "\x1b[36mray::RunActor.__init__()\x1b[39m (pid=11406, ip=10.0.0.9, actor_id=827d, "
        "repr=<TemporaryActor object at 0x7f8e>)\nRuntimeError: The actor with name RunActor "
        "failed to import on the worker. This may be because needed library dependencies "
        "are not installed in the worker environment:\n\nTraceback (most recent call last):\n"
        '  File "function_manager.py", line 580, in _load_actor_class_from_gcs\n'
        "ModuleNotFoundError: No module named 'bnlab'\n"
    )
    assert death_reason(not_installed) == (
        "the Ray actor for this run could not load BN Lab's code on node 10.0.0.9: install "
        "BN Lab on every node (docs/ray.md, Workers on other hosts): "
        "ModuleNotFoundError: No module named 'bnlab'"
    )


def test_the_server_log_recommends_node_health_checks_when_ray_s_would_be_too_slow():
    import ray

    from bnlab.server.execution.ray_driver import slow_node_checks
    from bnlab.server.execution.ray_executor import NODE_HEALTH_CHECKS

    # Ray's defaults, as a driver not yet connected sees them: 5 x (10 s + 3 s).
    assert ray._config.health_check_period_ms() == 3000
    warning = slow_node_checks()
    assert "up to 65 s" in warning
    assert f"--system-config='{json.dumps(NODE_HEALTH_CHECKS)}'" in warning


def test_runs_waiting_for_mnist_share_one_attempt_and_one_cancelled_leaves_it_to_the_rest(
    monkeypatch,
):
    from bnlab.model.data import DataError
    from bnlab.server.execution import ray_driver
    from bnlab.server.execution.ray_executor import DriverCommand, DriverMessage

    attempts, release = [], threading.Event()

    def put_mnist(data_dir):  # in the driver's thread, as Ray's put would be
        attempts.append(data_dir)
        if len(attempts) == 1:
            assert release.wait(10)
            raise DataError("MNIST is missing")
        return "MNIST's ref"

    monkeypatch.setattr(ray_driver, "put_mnist", put_mnist)
    server_end, driver_end = multiprocessing.Pipe()
    driver = ray_driver.Driver(driver_end, "10.0.0.5:6379", 1.0, "/data")

    def ended() -> tuple:
        message = DriverMessage.model_validate_json(server_end.recv_bytes())
        return message.run_id, message.worker.outcome, message.worker.error

    async def scenario() -> None:
        first, second = (
            asyncio.create_task(driver.run(DriverCommand(action="submit", run_id=run_id)))
            for run_id in ("a", "b")
        )
        await asyncio.sleep(0)  # both start, and wait for the one attempt
        assert set(driver.jobs) == {"a", "b"} and driver.loading is not None
        driver.cancel("a")
        await first  # at once, while the attempt goes on
        assert ended() == ("a", Outcome.CANCELLED, None)
        release.set()
        await second
        assert ended() == ("b", Outcome.FAILED, "MNIST is missing")
        # The next run makes an attempt of its own; a success is kept for every later run.
        assert await driver.mnist() == "MNIST's ref"
        assert await driver.mnist() == "MNIST's ref"

    asyncio.run(scenario())
    assert attempts == ["/data", "/data"]


def test_a_stack_waiting_for_mnist_stops_once_every_run_of_it_is_cancelled(monkeypatch):
    from bnlab.server.execution import ray_driver
    from bnlab.server.execution.ray_executor import DriverCommand, DriverMessage
    from bnlab.server.execution.stacks import StackCommand

    release = threading.Event()
    monkeypatch.setattr(ray_driver, "put_mnist", lambda data_dir: release.wait(10))
    server_end, driver_end = multiprocessing.Pipe()
    driver = ray_driver.Driver(driver_end, "10.0.0.5:6379", 1.0, "/data")
    stack = StackCommand(kind="train", job="a", run_ids=["a", "b"], configs=["{}", "{}"])

    async def scenario() -> None:
        task = asyncio.create_task(
            driver.run_stack(DriverCommand(action="stack", run_id="a", stack=stack))
        )
        await asyncio.sleep(0)
        assert driver.stacked == {"a": "a", "b": "a"}
        driver.cancel("a")  # one run: the stack would train the other
        await asyncio.sleep(0.1)
        assert not task.done() and not server_end.poll()
        driver.cancel("b")  # the last: the stack stops before it started
        await asyncio.wait_for(task, 5)
        release.set()

    asyncio.run(scenario())
    ends = [DriverMessage.model_validate_json(server_end.recv_bytes()) for _ in range(2)]
    assert [(m.run_id, m.worker.outcome) for m in ends] == [
        ("a", Outcome.CANCELLED),
        ("b", Outcome.CANCELLED),
    ]
    assert driver.jobs == {} and driver.stacked == {}


@pytest.mark.parametrize(
    ("mode", "hint"),
    [
        (None, "set RAY_AUTH_MODE=token"),  # unset is Ray's `disabled`
        ("disabled", "set RAY_AUTH_MODE=token"),
        ("token", "the same token as this server"),
    ],
)
def test_a_cluster_that_refuses_the_server_is_met_with_a_hint_about_authentication(
    monkeypatch, mode, hint
):
    from bnlab.server.execution.ray_driver import auth_hint

    # Ray only logs a refused token and retries; the hint is all the run's error can say.
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert hint in auth_hint()
