"""Who may read and change what: access token, same-origin checks, request size.

An ASGI middleware, so one rule covers REST and websocket handshakes alike:
- With a token configured, every mutating REST call (POST, PUT, PATCH, DELETE),
  every other request under /api/ (the reads) and every websocket handshake must
  present it: `Authorization: Bearer <token>` (or `?token=` on websockets, which
  browsers cannot send headers for). Compared in constant time. A token protects
  the lab's results, not only its queue: reads are private too, unless the server
  was started with `public_read` (a read-only public board), which opens the reads
  and the websockets (they only stream what the reads return; they take no input).
  What stays open: the page's own files (so a visitor can enter the token), the
  OpenAPI description (/openapi.json, /docs) and OPEN_READS, the health check, which
  tells a caller without the token no more than that the server is up
  (routes/health.py).
- A browser page on another origin must not drive the API through the user's
  browser: a mutating call or websocket handshake whose `Origin` is neither the
  server's own nor in the allow-list is refused. (Requests without `Origin`,
  such as curl's, are not from a browser page.)
- A mutating call with a body must say it is JSON: HTML forms cannot, so they
  cannot slip past the origin check as "simple" requests.
- Bodies over MAX_BODY bytes are refused before they are read.

Serving loopback without a token, the server trusts that only this machine can
reach it. A DNS-rebinding page (evil.example resolving to 127.0.0.1) would reach
it with `Host: evil.example`: there the HostGuard, in front of this AccessGuard, lets
through only requests naming a loopback host (`loopback_hosts`).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs

from starlette.requests import Request

from ..live.messages import CloseCode
from .problems import PROBLEM_JSON, problem, respond

MAX_BODY = 64 * 1024
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
API = "/api"
# Under /api/, what a caller without the token may still ask: container and load
# balancer health checks carry no token.
# The limits hold no run data, and the page asks for them before it knows a token.
OPEN_READS = {"/api/health", "/api/limits"}
# The request scope's state key saying whether this caller may read the lab's data.
MAY_READ = "may_read"


def is_api(path: str) -> bool:
    return path == API or path.startswith(API + "/")


UNAUTHORIZED = "this server needs its access token: send 'Authorization: Bearer <token>'"


def may_read(request: Request) -> bool:
    """Whether AccessGuard let this request's caller read the lab's data."""
    return bool(request.scope.get("state", {}).get(MAY_READ, False))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> list[str]:
    """The Host names a loopback server answers to: the usual three, and the
    address it is bound to when that is another loopback one (127.0.0.2)."""
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    bound = host.strip("[]")
    bound = f"[{bound}]" if ":" in bound else bound
    return hosts if bound in hosts else [*hosts, bound]


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def host_name(host: str) -> str:
    """The name in a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0]


class HostGuard:
    """ASGI middleware answering only requests that name one of `hosts` (the
    DNS-rebinding defence above). Others get 400, the answer web servers give a Host
    they do not serve (Starlette's TrustedHostMiddleware, Django): the request is
    malformed for this server. Ours, not Starlette's, to say so in the API's error shape."""

    def __init__(self, app, hosts: list[str]) -> None:
        self.app = app
        self.hosts = [h.lower() for h in hosts]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            name = host_name(_headers(scope).get("host", ""))
            if name not in self.hosts:
                detail = f"host: this server answers to {', '.join(self.hosts)}, not to {name!r}"
                # A websocket handshake gets it as an HTTP answer too (Starlette sends it
                # through the websocket.http.response extension).
                await respond(problem(400, detail))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AccessGuard:
    """ASGI middleware in front of the whole app: each request and websocket passes
    the token, same-origin and size checks here before any route sees it."""

    def __init__(
        self, app, token: str | None, allowed_origins: list[str], public_read: bool = False
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}
        self.public_read = public_read

    # -- checks -------------------------------------------------------------

    def _origin_ok(self, headers: dict[str, str], scope) -> bool:
        origin = headers.get("origin")
        if origin is None:  # not sent by a browser page (curl, scripts)
            return True
        host = headers.get("host", "")
        own = {f"http://{host}", f"https://{host}"}
        return origin.rstrip("/") in own | self.allowed_origins

    def _token_ok(self, headers: dict[str, str], scope) -> bool:
        if self.token is None:
            return True
        presented = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        elif scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            presented = (query.get("token") or [""])[0]
        return hmac.compare_digest(presented.encode(), self.token)

    def _may_read(self, headers: dict[str, str], scope) -> bool:
        return self.public_read or self._token_ok(headers, scope)

    # -- ASGI ---------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in MUTATING and is_api(scope["path"]):
            may_read = self._may_read(_headers(scope), scope)
            if not may_read and scope["path"] not in OPEN_READS:
                await self._refuse_http(send, 401, UNAUTHORIZED)
                return
            # The open routes answer readers more than the others (health: the load).
            scope.setdefault("state", {})[MAY_READ] = may_read
        elif scope["type"] == "http" and scope["method"] in MUTATING:
            headers = _headers(scope)
            problem = self._http_problem(headers, scope)
            if problem:
                await self._refuse_http(send, *problem)
                return
            receive = await self._buffered(receive, send)
            if receive is None:
                return
        elif scope["type"] == "websocket":
            headers = _headers(scope)
            if not self._origin_ok(headers, scope):
                await self._refuse_websocket(receive, send, CloseCode.FORBIDDEN)
                return
            if not self._may_read(headers, scope):
                await self._refuse_websocket(receive, send, CloseCode.UNAUTHORIZED)
                return
        await self.app(scope, receive, send)

    def _http_problem(self, headers: dict[str, str], scope) -> tuple[int, str] | None:
        if not self._origin_ok(headers, scope):
            return 403, f"cross-origin request from {headers['origin']} refused"
        if not self._token_ok(headers, scope):
            return 401, UNAUTHORIZED
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "malformed Content-Length"
            if int(length) > MAX_BODY:
                return 413, f"request body over {MAX_BODY} bytes"
        has_body = (length not in (None, "0")) or "transfer-encoding" in headers
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if has_body and content_type != "application/json":
            return 415, "send the body as JSON with 'Content-Type: application/json'"
        return None

    async def _buffered(self, receive, send):
        """Read the whole (small) body here, refusing it past MAX_BODY even when
        it is chunked and carries no length; the app then reads the copy."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return None
            size += len(message.get("body", b""))
            if size > MAX_BODY:
                await self._refuse_http(send, 413, f"request body over {MAX_BODY} bytes")
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    @staticmethod
    async def _refuse_http(send, status: int, detail: str) -> None:
        # Answered before FastAPI's handlers: in their shape all the same (problems.py).
        body = problem(status, detail).body()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _refuse_websocket(receive, send, code: int) -> None:
        # Refusing before accepting: the client's handshake fails with HTTP 403.
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": code})
