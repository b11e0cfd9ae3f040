"""Every error the server answers, in one shape: RFC 9457 problem details.

`application/problem+json` with `type` ("about:blank": the status says what kind of
error it is, and `title` is its HTTP phrase), `title`, `status` and `detail`, one
sentence for a human that starts with the field when there is one ("steps: …").
Validation errors (422) also list `errors`, one `{field, loc, msg, type}` per field,
which the page shows beside each input. The same shape comes from the routes'
validation, HTTP errors (404, 405, …), the services' exceptions, the AccessGuard's
refusals (security.py, which answers before FastAPI's handlers) and a server error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runs.service import Conflict, NotFound, QueueFull
from ..storage.store import StoreError

log = logging.getLogger("bnlab")

PROBLEM_JSON = "application/problem+json"
# How long a caller whose run did not fit in the queue should wait before asking again.
QUEUE_RETRY_AFTER = "60"
# The parts of a pydantic location that say where the value was, not which field it is.
_ROOTS = ("body", "query", "path")


class FieldError(BaseModel):
    """One refused value of a request."""

    field: str = Field(
        description="the field as the form and `bnlab` name it ('steps', 'base.steps', "
        "'runs'); 'body' for the body as a whole (not JSON, not an object)"
    )
    loc: list[str | int] = Field(description="where it is: ['body', 'steps'], ['query', 'runs']")
    msg: str = Field(description="what is wrong with it, for a human")
    type: str = Field(description="pydantic's error type: 'less_than_equal', 'json_invalid', …")


class Problem(BaseModel):
    """An error (RFC 9457 problem details), the body of every 4xx and 5xx answer."""

    type: str = Field("about:blank", description="'about:blank': the status says the kind")
    title: str = Field(description="the status's HTTP phrase ('Not Found', …)")
    status: int = Field(description="the HTTP status code, repeated")
    detail: str = Field(description="what went wrong, in one sentence naming the field if any")
    errors: list[FieldError] | None = Field(
        None, description="422 only: every refused value, one item each"
    )

    def body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def problem(status: int, detail: str, errors: Sequence[FieldError] | None = None) -> Problem:
    phrase = HTTPStatus(status).phrase
    return Problem(title=phrase, status=status, detail=detail, errors=errors)


def respond(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        problem.status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


# -- validation ---------------------------------------------------------------------


def invalid(loc: tuple[str, ...], msg: str) -> RequestValidationError:
    """A refusal the routes find themselves (a query value the schema cannot check),
    raised as the validation error it is, so it reads like every other 422."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": None}])


def _json_syntax(error: dict, document: Any) -> FieldError:
    """FastAPI's json_invalid carries the decoder's reason and the offset (in `loc`); a
    person fixing a body by hand needs the line and column too."""
    reason = (error.get("ctx") or {}).get("error", "not JSON")
    offsets = [p for p in error["loc"] if isinstance(p, int)]
    where = ""
    if offsets and isinstance(document, str):
        decoded = json.JSONDecodeError(reason, document, offsets[0])  # computes line, column
        where = f" at line {decoded.lineno}, column {decoded.colno} (char {decoded.pos})"
    elif offsets:
        where = f" at char {offsets[0]}"
    return FieldError(
        field="body", loc=["body"], msg=f"invalid JSON{where}: {reason}", type=error["type"]
    )


def field_errors(errors: Iterable[dict], document: Any = None) -> list[FieldError]:
    """pydantic's errors as FieldErrors: ('body', 'base', 'steps') is 'base.steps'."""
    out = []
    for error in errors:
        if error["type"] == "json_invalid":
            out.append(_json_syntax(error, document))
            continue
        loc = list(error["loc"])
        field = ".".join(str(p) for p in loc if p not in _ROOTS) or "body"
        msg = error["msg"].removeprefix("Value error, ")  # a validator's ValueError
        out.append(FieldError(field=field, loc=loc, msg=msg, type=error["type"]))
    return out


def validation_problem(errors: Iterable[dict], document: Any = None) -> Problem:
    items = field_errors(errors, document)
    detail = "; ".join(f"{e.field}: {e.msg}" for e in items) or "the request is invalid"
    return problem(422, detail, items)


# -- handlers -----------------------------------------------------------------------


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return respond(validation_problem(exc.errors(), exc.body))


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:  # no such route
        detail = f"nothing at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return respond(problem(exc.status_code, detail), exc.headers)


def _service_error(status: int, headers: dict[str, str] | None = None):
    def handler(_: Request, exc: Exception) -> JSONResponse:
        return respond(problem(status, str(exc)), headers)

    return handler


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return respond(problem(500, "internal server error; see the server log"))


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a Problem, and say so in its OpenAPI description."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NotFound, _service_error(404))
    app.add_exception_handler(Conflict, _service_error(409))
    app.add_exception_handler(QueueFull, _service_error(429, {"Retry-After": QUEUE_RETRY_AFTER}))
    app.add_exception_handler(StoreError, _service_error(503))
    app.add_exception_handler(Exception, _unexpected)
    _document(app)


# -- OpenAPI ------------------------------------------------------------------------

_REF = "#/components/schemas/"
# Declared on every operation in place of FastAPI's own 422 (`HTTPValidationError`, a
# shape this server never sends): any 4xx or 5xx comes as a Problem.
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": f"{kind}: a Problem (RFC 9457)",
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"{_REF}Problem"}}},
    }
    for code, kind in (("4XX", "Refused"), ("5XX", "Server error"))
}


def _document(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            schema = Problem.model_json_schema(ref_template=_REF + "{model}")
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(schema.pop("$defs"))
            schemas["Problem"] = schema
        return app.openapi_schema

    app.openapi = openapi
