"""Access token, cross-site requests and oversized bodies, against a real server."""

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.routing import BaseRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from bnlab.server.testing import ServerProcess
from bnlab.server.web.app import create_app
from bnlab.server.web.settings import Settings
from tests.server.samples import TINY

TOKEN = "s3cret-token"
REFUSED = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "this server needs its access token: send 'Authorization: Bearer <token>'",
}
# What a caller without the token may still GET from a server whose reads need it:
# the API's description and the files the page needs to ask for the token (the
# static mount, checked apart), and the health check. Every other GET is refused.
OPEN_READS = {
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/vendor/plotly.min.js",
    "/api/health",
    "/api/limits",  # no run data; the page asks before it knows the token
}
PAGE_FILES = ["/", "/index.html", "/js/api.js", "/js/main.js", "/css/style.css"]
DUMMY_EXPERIMENT = "no-such-experiment"  # 404 with the token: past the guard all the same


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, data_dir):
    server = ServerProcess(
        tmp_path_factory.mktemp("sec") / "bnlab.db", data_dir, workers=1, token=TOKEN
    ).start()
    yield server
    server.stop()


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_mutating_calls_need_the_token(guarded):
    body = {**TINY, "steps": 5}
    refused = guarded.http.post("/api/runs", json=body)
    assert refused.status_code == 401 and refused.json() == REFUSED
    wrong = guarded.http.post("/api/runs", json=body, headers=auth("guess"))
    assert wrong.status_code == 401
    assert guarded.get("/api/runs").json()["total"] == 0  # nothing stored
    run = guarded.http.post("/api/runs", json=body, headers=auth())
    assert run.status_code == 201
    run_id = run.json()["id"]
    assert guarded.get(f"/api/runs/{run_id}").status_code == 200
    assert guarded.http.post(f"/api/runs/{run_id}/cancel").status_code == 401
    assert guarded.http.delete(f"/api/runs/{run_id}").status_code == 401
    guarded.wait_status(run_id, "completed", "failed", "cancelled")
    assert guarded.http.delete(f"/api/runs/{run_id}", headers=auth()).status_code == 204


# -- reads: private with a token, unless --public-read ----------------------------------


def http_routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every HTTP route of an application, those of included routers too (FastAPI keeps
    an included router as one route holding it, `original_router`)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from http_routes(inner.routes)
        elif getattr(route, "methods", None):
            yield route


def every_read(ids: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """(path, query) for every GET route the application has, path parameters and
    required query parameters filled from `ids`."""
    app = create_app(Settings(token=TOKEN))  # routes only: nothing starts before lifespan
    reads = []
    for route in http_routes(app.routes):
        if "GET" not in route.methods:
            continue
        query = {}
        dependant = getattr(route, "dependant", None)  # None: Starlette's own (/docs)
        for param in dependant.query_params if dependant else []:
            if param.field_info.is_required():
                assert param.alias in ids, f"{route.path}: no test value for ?{param.alias}="
                query[param.alias] = ids[param.alias]
        try:
            reads.append((route.path.format(**ids), query))
        except KeyError as missing:
            raise AssertionError(f"{route.path}: no test value for {missing}") from None
    assert len(reads) >= 15 and "/api/runs" in [path for path, _ in reads], reads
    return reads


def existing_ids(server: ServerProcess) -> dict[str, str]:
    """A comparison (two runs) made for the occasion and cancelled at once, and an
    experiment id that names none: the point is 401 or not, not what is found."""
    comparison = server.post("/api/comparisons", {**TINY, "steps": 5}).json()
    server.cancel_active()
    run_id = comparison["runs"][0]["id"]
    return {
        "run_id": run_id,
        "comparison_id": comparison["id"],
        "experiment_id": DUMMY_EXPERIMENT,
        "runs": run_id,
    }


def expected_status(path: str) -> int:
    return 404 if DUMMY_EXPERIMENT in path else 200


def test_every_read_needs_the_token_but_the_open_ones(guarded):
    for path, query in every_read(existing_ids(guarded)):
        with_token = guarded.http.get(path, params=query, headers=auth())
        assert with_token.status_code == expected_status(path), (path, with_token.text[:300])
        without = guarded.http.get(path, params=query)
        wrong = guarded.http.get(path, params=query, headers=auth("guess"))
        if path in OPEN_READS:
            assert without.status_code == wrong.status_code == 200, path
        else:
            for refused in (without, wrong):
                assert refused.status_code == 401 and refused.json() == REFUSED, path
                assert refused.headers["www-authenticate"] == "Bearer"
    assert guarded.http.head("/api/runs").status_code == 401  # HEAD reads too
    for path in PAGE_FILES:  # a visitor gets the page that asks for the token
        assert guarded.http.get(path).status_code == 200, path


def test_health_tells_a_caller_without_the_token_only_that_the_server_is_up(guarded):
    """Status, version and executor: what a health check needs. Not the queue or busy
    workers (when the lab works), nor devices, TensorFlow or the Ray nodes' addresses."""
    anonymous = guarded.http.get("/api/health").json()
    assert anonymous["status"] == "ok" and anonymous["executor"] == "process"
    assert anonymous["can_read"] is False and anonymous["version"]
    told = {k for k, v in anonymous.items() if v is not None}
    assert told == {"status", "version", "executor", "can_read"}
    assert guarded.http.get("/api/health", headers=auth("guess")).json() == anonymous
    reader = guarded.get("/api/health").json()
    assert reader["can_read"] is True and reader["workers"]["total"] == 1
    assert reader["queue"] >= 0 and reader["devices"] and reader["tensorflow"]


def test_public_read_opens_reads_and_streams_but_not_changes(start_server):
    server = start_server(workers=1, token=TOKEN, extra=["--public-read"])
    assert "reads are public" in server.log.read_text()
    for path, query in every_read(existing_ids(server)):
        response = server.http.get(path, params=query)  # no token
        assert response.status_code == expected_status(path), (path, response.text[:300])
    assert server.http.get("/api/health").json()["can_read"] is True
    assert server.http.post("/api/runs", json={**TINY, "steps": 5}).status_code == 401
    # The live streams only read: a public board's page shows its runs without the token.
    with connect(f"{server.ws_url}/ws/runs", open_timeout=10) as ws:
        assert '"runs"' in ws.recv(timeout=10)
    with pytest.raises(InvalidStatus):  # the origin check still holds
        connect(f"{server.ws_url}/ws/runs", origin="https://evil.example", open_timeout=10)


def test_without_a_token_on_loopback_everything_is_open(server):
    assert server.http.get("/api/runs").status_code == 200
    assert server.http.get("/api/health").json()["can_read"] is True
    assert "reads are public" not in server.log.read_text()


def test_websockets_need_the_token(guarded):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{guarded.ws_url}/ws/runs", open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(f"{guarded.ws_url}/ws/runs?token={TOKEN}", open_timeout=10) as ws:
        assert '"runs"' in ws.recv(timeout=10)


def test_another_origin_cannot_drive_the_api_or_open_streams(server):
    evil = {"Origin": "https://evil.example"}
    response = server.http.post("/api/runs", json=TINY, headers=evil)
    assert response.status_code == 403 and "evil.example" in response.json()["detail"]
    assert server.http.delete("/api/runs/x", headers=evil).status_code == 403
    assert "access-control-allow-origin" not in response.headers  # CORS stays closed
    with pytest.raises(InvalidStatus):
        connect(f"{server.ws_url}/ws/runs", origin="https://evil.example", open_timeout=10)
    own = {"Origin": server.url}  # the dashboard itself
    created = server.http.post("/api/runs", json={**TINY, "steps": 5}, headers=own)
    assert created.status_code == 201
    with connect(f"{server.ws_url}/ws/runs", origin=server.url, open_timeout=10) as ws:
        assert '"runs"' in ws.recv(timeout=10)


def test_a_form_post_cannot_pose_as_json(server):
    before = server.http.get("/api/runs").json()["total"]
    response = server.http.post(
        "/api/runs", content=b'{"steps": 5}', headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and "JSON" in response.json()["detail"]
    assert server.http.get("/api/runs").json()["total"] == before


def test_oversized_and_malformed_bodies_are_refused(server):
    big = server.http.post(
        "/api/runs",
        content=b"{" + b" " * 100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413
    chunked = server.http.post(
        "/api/runs",
        content=iter([b"{" + b" " * 40_000] * 3),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413 and "65536" in chunked.json()["detail"]
    broken = server.http.post(
        "/api/runs", content=b'{"steps": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert (
        broken.json()["detail"]
        == "body: invalid JSON at line 1, column 11 (char 10): Expecting value"
    )


def test_refuses_to_serve_the_network_without_a_token(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnlab",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--db",
            str(tmp_path / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "BNLAB_TOKEN" in out.stderr and "Traceback" not in out.stderr


def test_queue_is_capped_with_retry_after(start_server):
    server = start_server(workers=1, extra=["--max-queued", "2"])
    long = {**TINY, "steps": 100_000, "eval_every": 1000}
    ids = [server.post("/api/runs", long).json()["id"] for _ in range(3)]  # 1 running + 2 queued
    full = server.post("/api/runs", long)
    assert full.status_code == 429 and full.headers["retry-after"]
    assert "queue" in full.json()["detail"]
    for run_id in ids:
        server.http.post(f"/api/runs/{run_id}/cancel")


def test_nan_and_absurd_numbers_are_refused_and_nothing_is_stored(server):
    before = server.http.get("/api/runs").json()["total"]
    for raw in (
        b'{"learning_rate": NaN}',
        b'{"learning_rate": Infinity}',
        b'{"steps": 1e400}',
        b'{"steps": 1000000000000}',
        b"[1, 2]",
        b'"just a string"',
    ):
        response = server.http.post(
            "/api/runs", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["detail"]
    assert server.http.get("/api/runs").json()["total"] == before


def test_garbage_on_a_websocket_is_ignored_or_refused_never_a_crash(server):
    run = server.post("/api/runs", {**TINY, "steps": 5}).json()
    with server.ws(f"/ws/runs/{run['id']}") as ws:
        assert ws.recv(timeout=10)  # snapshot
        ws.send("not a command")
        ws.send(b"\x00\xff binary junk")
        ws.send("{}")
        ws.ping()
    with server.ws("/ws/runs") as ws:
        ws.recv(timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            ws.send("x" * 200_000)  # over the frame limit: the server closes the socket
            ws.recv(timeout=10)
        assert closed.value.rcvd is None or closed.value.rcvd.code in (1009, 1006)
    assert server.http.get("/api/health").status_code == 200
    assert server.wait_status(run["id"], "completed", "failed")["status"] == "completed"


def test_a_dns_rebinding_page_cannot_reach_a_tokenless_server(server):
    """evil.example resolving to 127.0.0.1: same 'origin' as its Host, but not ours.
    Refused with 400 (security.HostGuard), the answer web servers give a Host they
    do not serve, in the API's error shape."""
    before = server.http.get("/api/runs").json()["total"]
    rebound = {
        "Host": f"evil.example:{server.port}",
        "Origin": f"http://evil.example:{server.port}",
    }
    refused = server.http.post("/api/runs", json=TINY, headers=rebound)
    assert refused.status_code == 400 and refused.json()["status"] == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"].startswith("host: ") and "evil.example" in refused.text
    assert server.http.get("/api/runs", headers={"Host": "evil.example"}).status_code == 400
    assert server.http.get("/api/runs").json()["total"] == before  # nothing was started
    # The browser resolved evil.example to 127.0.0.1: it connects here and says
    # `Host: evil.example:port`, once (a second Host header is not a browser's doing).
    with (
        socket.create_connection(("127.0.0.1", server.port)) as sock,
        pytest.raises(InvalidStatus) as handshake,
    ):
        connect(f"ws://evil.example:{server.port}/ws/runs", sock=sock, open_timeout=10)
    assert handshake.value.response.status_code == 400
    for own in (f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1"):
        assert server.http.get("/api/runs", headers={"Host": own}).is_success, own


def test_serving_the_network_without_a_token_takes_an_explicit_flag_and_warns(start_server):
    server = start_server(extra=["--host", "0.0.0.0", "--no-auth"])
    assert (
        "WARNING" in server.log.read_text() and "without an access token" in server.log.read_text()
    )
    created = server.post("/api/runs", {**TINY, "steps": 5})  # open, as the user chose
    assert created.status_code == 201


def test_configured_origins_get_cors_and_may_call(start_server):
    friend = "http://friend.example"
    server = start_server(extra=["--allowed-origins", friend])
    preflight = server.http.options(
        "/api/runs",
        headers={
            "Origin": friend,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.headers["access-control-allow-origin"] == friend
    created = server.http.post("/api/runs", json={**TINY, "steps": 5}, headers={"Origin": friend})
    assert created.status_code == 201
    other = server.http.post("/api/runs", json=TINY, headers={"Origin": "http://other.example"})
    assert other.status_code == 403
