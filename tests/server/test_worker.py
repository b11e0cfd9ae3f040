"""How a worker is placed on the CPU: TensorFlow's thread pools sized to the cores it
may use, split between the runs training at once, and each run pinned to cores of its
own (bench/concurrency.py measures why)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from bnlab.model.environment import nvidia_driver_present
from bnlab.server.execution import processes
from bnlab.server.execution.placement import cores_for, threads_per_run
from tests.server.samples import LONG


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may use the given cores (its affinity, not the machine's count:
    a container or taskset may allow fewer)."""

    def allow(usable: set[int]) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(usable))
        monkeypatch.setattr(os, "cpu_count", lambda: 64)

    return allow


@pytest.mark.parametrize(
    ("usable", "concurrent", "threads"),
    [(2, 1, 2), (2, 2, 1), (8, 2, 4), (8, 3, 2), (2, 4, 1), (1, 2, 1), (4, 0, 4)],
)
def test_each_run_gets_an_equal_share_of_the_usable_cores_and_at_least_one(
    cores, usable, concurrent, threads
):
    cores(set(range(usable)))
    assert threads_per_run(concurrent) == threads


@pytest.mark.parametrize(
    ("usable", "concurrent", "expected"),
    [
        ({0, 1}, 2, [{0}, {1}]),
        ({0, 1, 2, 3}, 2, [{0, 1}, {2, 3}]),
        ({0, 1, 2, 3, 4, 5, 6, 7}, 3, [{0, 1}, {2, 3, 4}, {5, 6, 7}]),  # none left idle
        ({3, 5}, 2, [{3}, {5}]),  # the allowed cores, whichever they are
    ],
)
def test_concurrent_runs_are_pinned_to_disjoint_shares_of_the_usable_cores(
    cores, usable, concurrent, expected
):
    cores(usable)
    assert [cores_for(slot, concurrent) for slot in range(concurrent)] == expected


@pytest.mark.parametrize(("usable", "concurrent"), [(2, 1), (2, 3), (1, 2)])
def test_a_run_alone_or_more_runs_than_cores_are_left_to_the_scheduler(cores, usable, concurrent):
    # Pinned, two of three runs would share a core while the third had one to itself.
    cores(set(range(usable)))
    assert all(cores_for(slot, concurrent) is None for slot in range(concurrent))


def _thread_affinities(pid: int) -> list[list[int]]:
    """The distinct affinities of process `pid`'s threads (TensorFlow's pools included)."""
    found = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            found.add(frozenset(os.sched_getaffinity(int(thread))))
    return sorted(sorted(cores) for cores in found)


def _kernel_keys(cache: Path) -> set[str]:
    return set(json.loads(Path(cache, "bnlab", "kernels.json").read_text()))


def test_a_server_with_two_workers_gives_a_run_alone_every_core_and_splits_them_for_a_pair(
    start_server, tmp_path, monkeypatch
):
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("on one core a run alone and a pair's run get the same single thread")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the workers' kernel choices go here
    server = start_server(workers=2)

    # A run alone: every core, not the half a second worker might one day need, and
    # its kernel paths timed in that thread configuration.
    began = time.monotonic()
    alone = server.post("/api/runs", LONG).json()
    # Its worker forks from a fork server still importing TensorFlow: the server answers
    # at once and meanwhile (the start waits off the event loop, `ProcessExecutor._start`).
    slowest, until = time.monotonic() - began, time.monotonic() + 3
    while time.monotonic() < until:
        began = time.monotonic()
        assert server.http.get("/api/health").status_code == 200
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.05)
    assert slowest < 1.5, f"the server stalled {slowest:.1f} s while the first worker started"
    server.wait_for(alone["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    assert [_thread_affinities(pid) for pid in server.worker_pids()] == [[usable]]
    alone_keys = _kernel_keys(cache)
    assert alone_keys and all(f"| {threads_per_run(1)} thread(s) |" in k for k in alone_keys)
    # A second run joins on its slot's share: the first moves to its own slot's cores
    # while they overlap, and has every core back once it is alone again.
    joiner = server.post("/api/runs", LONG).json()
    server.wait_for(joiner["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    split = sorted([sorted(cores_for(slot, 2) or usable)] for slot in range(2))
    assert sorted(_thread_affinities(pid) for pid in server.worker_pids()) == split
    joiner_keys = _kernel_keys(cache) - alone_keys
    assert joiner_keys and all(f"| {threads_per_run(2)} thread(s) |" in k for k in joiner_keys)
    server.post(f"/api/runs/{joiner['id']}/cancel")
    server.wait_for(joiner["id"], lambda r: r["status"] == "cancelled")
    assert [_thread_affinities(pid) for pid in server.worker_pids()] == [[usable]]
    server.post(f"/api/runs/{alone['id']}/cancel")
    server.wait_for(alone["id"], lambda r: r["status"] == "cancelled")

    # A comparison's twins start together: each on a core of its own from the start.
    twins = server.post("/api/comparisons", LONG).json()["runs"]
    for run in twins:
        server.wait_for(run["id"], lambda r: r["status"] == "running" and r["step"] > 0)
    placed = [_thread_affinities(pid) for pid in server.worker_pids()]
    # Without an NVIDIA driver each twin is forked from the server's fork server, which
    # imported TensorFlow once (processes.worker_context), not spawned to import it again.
    if not nvidia_driver_present():
        parents = {_parent_cmdline(pid) for pid in server.worker_pids()}
        assert len(parents) == 1 and b"forkserver" in parents.pop()
    server.cancel_active()
    assert sorted(placed) == split  # one core each on 2 cores


def _parent_cmdline(pid: int) -> bytes:
    status = Path(f"/proc/{pid}/status").read_text()
    parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
    return Path(f"/proc/{parent}/cmdline").read_bytes()


def test_workers_fork_from_a_warm_fork_server_only_where_no_gpu_can_be_touched(monkeypatch):
    # A GPU given, or a driver that TensorFlow's import may already have loaded: a forked
    # CUDA does not survive, so each worker is spawned and imports TensorFlow itself.
    monkeypatch.setattr(processes, "nvidia_driver_present", lambda: False)
    assert processes.worker_context([]).get_start_method() == "forkserver"
    assert processes.worker_context(["0"]).get_start_method() == "spawn"
    monkeypatch.setattr(processes, "nvidia_driver_present", lambda: True)
    assert processes.worker_context([]).get_start_method() == "spawn"
