"""One error shape (RFC 9457 problem details) for every refusal, whoever refuses.

Against a real server with an access token and room for one queued run, each kind of
error: the access guard's (401, 403, 413, 415, before FastAPI sees the request),
the router's (404, 405), the services' (404, 409, 429) and validation's (422 for a
field, a query value and a body that is not JSON). The shape builder itself is
checked in process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from bnlab.model.config import RunConfig
from bnlab.server.testing import ServerProcess
from bnlab.server.web.app import create_app
from bnlab.server.web.problems import invalid, problem, validation_problem
from bnlab.server.web.settings import Settings
from tests.server.samples import LONG

TOKEN = "problem-token"
# A body whose syntax breaks on its second line, for a person to find.
BROKEN = b'{\n  "steps": ,\n  "seed": 1\n}'


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    # One queued run at most: a comparison (two runs) is refused at once, training nothing.
    server = ServerProcess(
        tmp_path_factory.mktemp("problems") / "bnlab.db",
        data_dir,
        workers=1,
        extra=["--max-queued", "1"],
        token=TOKEN,
    ).start()
    yield server
    server.stop()


def _conflict(server: ServerProcess) -> httpx.Response:
    """Resuming a run that is training: the service refuses (409)."""
    run = server.post("/api/runs", LONG).json()
    try:
        return server.post(f"/api/runs/{run['id']}/resume")
    finally:
        server.post(f"/api/runs/{run['id']}/cancel")


def _post_raw(
    server: ServerProcess, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    headers = {**server.auth(), "Content-Type": content_type}
    return server.http.post("/api/runs", content=body, headers=headers)


# (kind, request, status, what `detail` must say)
CASES: list[tuple[str, Callable[[ServerProcess], httpx.Response], int, str]] = [
    ("no token", lambda s: s.http.get("/api/runs"), 401, "access token"),
    (
        "another origin",
        lambda s: s.http.post(
            "/api/runs", json={}, headers={**s.auth(), "Origin": "https://evil.example"}
        ),
        403,
        "evil.example",
    ),
    ("unknown run", lambda s: s.get("/api/runs/nope"), 404, "no run with id 'nope'"),
    ("unknown path", lambda s: s.get("/api/nope"), 404, "nothing at /api/nope"),
    ("wrong method", lambda s: s.http.put("/api/runs", headers=s.auth()), 405, "PUT"),
    ("state conflict", _conflict, 409, "only interrupted or failed runs can be resumed"),
    (
        "body too large",
        lambda s: _post_raw(s, b"{" + b" " * 70_000 + b"}"),
        413,
        "65536",
    ),
    (
        "not JSON",
        lambda s: _post_raw(s, b"{}", "text/plain"),
        415,
        "application/json",
    ),
    (
        "field",
        lambda s: s.post("/api/runs", {"steps": 0}),
        422,
        "steps: Input should be greater than or equal to 1",
    ),
    (
        "query value",
        lambda s: s.get("/api/compare", runs=","),
        422,
        "runs: give at least one run id",
    ),
    (
        "JSON syntax",
        lambda s: _post_raw(s, BROKEN),
        422,
        "body: invalid JSON at line 2, column 12 (char 13): Expecting value",
    ),
    ("queue full", lambda s: s.post("/api/comparisons", {}), 429, "the queue is full"),
]


@pytest.mark.parametrize(
    ("request_", "status", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_kind_of_error_answers_one_shape(server, request_, status, says):
    response = request_(server)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "about:blank"
    assert problem["title"] == HTTPStatus(status).phrase
    assert problem["status"] == status
    assert says in problem["detail"], problem
    if status == 422:  # one item per refused value, the first named as `detail` names it
        field = problem["detail"].split(":")[0]
        assert problem["errors"][0]["field"] == field, problem
        assert set(problem["errors"][0]) == {"field", "loc", "msg", "type"}
        assert set(problem) == {"type", "title", "status", "detail", "errors"}
    else:
        assert set(problem) == {"type", "title", "status", "detail"}
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 429:
        assert int(response.headers["retry-after"]) > 0


# -- the builder, in process --------------------------------------------------------


def _errors(body: dict) -> list[dict]:
    """pydantic's errors for a RunConfig body, located as FastAPI locates them."""
    with pytest.raises(ValidationError) as refused:
        RunConfig.model_validate(body)
    return [{**e, "loc": ("body", *e["loc"])} for e in refused.value.errors()]


def test_a_validation_problem_names_each_field_in_its_detail_and_errors():
    built = validation_problem(_errors({"steps": 0, "batch_size": 10**6}))
    body = json.loads(built.body())
    assert body["status"] == 422 and body["title"] == HTTPStatus(422).phrase
    assert {e["field"] for e in body["errors"]} == {"batch_size", "steps"}
    assert body["detail"] == "; ".join(f"{e['field']}: {e['msg']}" for e in body["errors"])
    assert all(e["loc"][0] == "body" for e in body["errors"])


def test_a_nested_field_is_named_by_its_path_and_a_validators_prefix_dropped():
    error = {
        "type": "value_error",
        "loc": ("body", "base", "steps"),
        "msg": "Value error, steps must be at least 2",
        "input": 1,
    }
    (item,) = validation_problem([error]).errors
    assert (item.field, item.msg) == ("base.steps", "steps must be at least 2")


def test_a_json_syntax_error_says_line_column_and_offset():
    document = '{\n  "a": 1,\n  "b": tru\n}'
    with pytest.raises(json.JSONDecodeError) as decoded:
        json.loads(document)
    error = {
        "type": "json_invalid",
        "loc": ("body", decoded.value.pos),  # as FastAPI raises it
        "msg": "JSON decode error",
        "ctx": {"error": decoded.value.msg},
    }
    built = validation_problem([error], document)
    assert built.detail == "body: invalid JSON at line 3, column 8 (char 19): Expecting value"
    assert built.errors[0].loc == ["body"] and built.errors[0].type == "json_invalid"
    # Without the document (not text), the offset alone.
    assert validation_problem([error]).detail == "body: invalid JSON at char 19: Expecting value"


def test_a_plain_problem_has_no_errors_field():
    body = json.loads(problem(404, "no run with id 'x'").body())
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no run with id 'x'",
    }


def test_a_route_raising_invalid_reads_like_any_422():
    raised = invalid(("query", "runs"), "give at least one run id")
    assert isinstance(raised, RequestValidationError)
    assert validation_problem(raised.errors()).detail == "runs: give at least one run id"


def test_openapi_declares_the_problem_for_every_operations_errors():
    spec = create_app(Settings()).openapi()  # routes only: nothing starts before lifespan
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape, never sent here
    assert set(schemas["Problem"]["required"]) == {"title", "status", "detail"}
    assert schemas["Problem"]["properties"]["errors"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert len(operations) >= 20
    for operation in operations:
        for code in ("4XX", "5XX"):
            content = operation["responses"][code]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
