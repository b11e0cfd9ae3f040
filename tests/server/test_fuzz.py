"""Property-based fuzzing of the whole REST API from its own OpenAPI schema."""

import contextlib
import os
import signal
import time

import schemathesis
from hypothesis import HealthCheck, given, settings

from bnlab.server.testing import ServerProcess
from tests.server.samples import LONG

# 22 operations, 19 of them with parameters: over 1,100 generated cases in all. (150 each
# made 2,850 and cost a minute and a half of the suite on a loaded machine.)
EXAMPLES_PER_OPERATION = 60
# Reads without the token: the guard answers before any route, so a few each suffice.
EXAMPLES_WITHOUT_TOKEN = 10
OPEN_READS = {"/api/health", "/api/limits"}  # what a caller without the token may read


def test_no_generated_request_makes_the_server_fail(tmp_path, data_dir):
    # One worker kept busy by a run that never ends: fuzzed runs queue behind
    # it (up to the queue cap, then 429) instead of loading the machine. With an
    # access token, as a server on the network has: every request carries it.
    server = ServerProcess(tmp_path / "bnlab.db", data_dir, workers=1, token="fuzz-token").start()
    worker = None
    try:
        server.post("/api/runs", LONG).raise_for_status()
        # Its worker stopped (SIGSTOP): the run holds the only slot as a training one
        # does, without training a core's worth of CPU for the whole fuzzing.
        worker = busy_worker(server)
        os.kill(worker, signal.SIGSTOP)
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        cases: dict[str, int] = {}
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            fuzz(operation, server, cases)
        assert len(operations) >= 22 and len(cases) == len(operations), cases  # every one
        assert sum(cases.values()) >= 1000, cases
        refused: dict[str, int] = {}
        reads = [o for o in operations if o.method.upper() == "GET"]
        for operation in reads:
            fuzz_without_token(operation, server, refused)
        assert len(reads) >= 12 and len(refused) == len(reads), refused
        assert server.http.get("/api/health").status_code == 200
    finally:
        if worker is not None:  # a stopped worker would sit out the server's grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        server.stop()


def busy_worker(server: ServerProcess, timeout: float = 60) -> int:
    """The pid of the server's one run worker, once it is there."""
    deadline = time.monotonic() + timeout
    while not (pids := server.worker_pids()):
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    (pid,) = pids
    return pid


def fuzz(operation, server: ServerProcess, cases: dict[str, int]) -> None:
    label = operation.label

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case):
        response = case.call(base_url=server.url, headers=server.auth(), timeout=30)
        assert response.status_code != 401, (label, response.text[:500])
        cases[label] = cases.get(label, 0) + 1
        assert response.status_code < 500, (label, response.text[:500])
        if response.status_code >= 400:  # a Problem (server/web/problems.py)
            content_type = response.headers.get("content-type", [""])[0]  # header -> [values]
            assert content_type == "application/problem+json", content_type
            problem = response.json()
            assert problem["status"] == response.status_code, response.text[:500]
            assert problem["title"] and problem["detail"], response.text[:500]

    check()


def fuzz_without_token(operation, server: ServerProcess, cases: dict[str, int]) -> None:
    """Whatever the parameters, a read without the token is refused (401), and in the
    same words as a change, before validation could say anything about the data."""
    label = operation.label

    @settings(
        max_examples=EXAMPLES_WITHOUT_TOKEN,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case):
        response = case.call(base_url=server.url, timeout=30)
        cases[label] = cases.get(label, 0) + 1
        if operation.path in OPEN_READS:
            assert response.status_code == 200, (label, response.text[:500])
            if operation.path == "/api/health":  # tells the page the token is needed
                assert response.json()["can_read"] is False
        else:
            assert response.status_code == 401, (label, response.status_code, response.text[:500])
            assert "access token" in response.json()["detail"]

    check()
