"""Property-based fuzzing of the whole REST API from its own OpenAPI schema."""

import schemathesis
from hypothesis import HealthCheck, given, settings

from bnlab.server.testing import ServerProcess
from tests.server.samples import LONG

# 22 operations, 19 of them with parameters: over 1,100 generated cases in all. (150 each
# made 2,850 and cost a minute and a half of the suite on a loaded machine.)
EXAMPLES_PER_OPERATION = 60


def test_no_generated_request_makes_the_server_fail(tmp_path, data_dir):
    # One worker kept busy by a run that never ends: fuzzed runs queue behind
    # it (up to the queue cap, then 429) instead of loading the machine.
    server = ServerProcess(tmp_path / "bnlab.db", data_dir, workers=1).start()
    try:
        server.post("/api/runs", LONG).raise_for_status()
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        cases: dict[str, int] = {}
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            fuzz(operation, server, cases)
        assert len(operations) >= 22 and len(cases) == len(operations), cases  # every one
        assert sum(cases.values()) >= 1000, cases
        assert server.http.get("/api/health").status_code == 200
    finally:
        server.stop()


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
        response = case.call(base_url=server.url, timeout=30)
        cases[label] = cases.get(label, 0) + 1
        assert response.status_code < 500, (label, response.text[:500])
        if response.status_code >= 400:
            content_type = response.headers.get("content-type", [""])[0]  # header -> [values]
            assert content_type.startswith("application/json"), content_type
            assert response.json().get("detail"), response.text[:500]

    check()
