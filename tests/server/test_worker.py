"""How a worker sizes TensorFlow's thread pools: the cores it may use, split between
the runs training at once (bench/concurrency.py measures why)."""

from __future__ import annotations

import os

import pytest

from bnlab.server.worker import threads_per_run


@pytest.mark.parametrize(
    ("cores", "concurrent", "threads"),
    [(2, 1, 2), (2, 2, 1), (8, 2, 4), (8, 3, 2), (2, 4, 1), (1, 2, 1), (4, 0, 4)],
)
def test_each_run_gets_an_equal_share_of_the_usable_cores_and_at_least_one(
    monkeypatch, cores, concurrent, threads
):
    # The affinity, not the machine's count: a container or taskset may allow fewer.
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads_per_run(concurrent) == threads
