"""The gate in front of every route (pure ASGI middleware): what needs no route is answered here.

503 while shutting down, 401 without the API key (but for GET /health and the page), 413 for a body over
--payload-limit, and the request counters (by route; failures by reason). A refused request's body is read
and dropped before the answer (up to DRAIN_BYTES or DRAIN_SECONDS), as nginx's lingering close does: a
client still writing its body would otherwise see the connection reset, since closing a socket with unread
data sends a reset, which can overtake the answer. A client that waits for "100 Continue" before sending its
body gets the answer at once.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi.responses import JSONResponse

from .core import ApiError, Server

UNCOUNTED = ("/metrics", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")
KEYLESS = ("/health", "/")  # GET only: the health check, and the page (where the user pastes the key)
FORM = b"application/x-www-form-urlencoded"  # what curl -d calls a body
DRAIN_BYTES = 1 << 30  # a refused body is dropped up to 1 GiB (100 MB on loopback takes about 0.2 s) ...
DRAIN_SECONDS = 30.0  # ... or for 30 s (nginx's lingering_time), then the connection is closed regardless


class Gate:
    def __init__(self, app, server: Server):
        self.app, self.server = app, server
        self.key = f"Bearer {server.settings.api_key}".encode() if server.settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        server, path = self.server, scope["path"]
        counted = path not in UNCOUNTED
        route = path if path in server.paths else "/pipeline/{task}" if path.startswith("/pipeline/") else "other"
        if counted:
            server.metrics.requests.labels(route).inc()
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and headers.get(b"content-type", FORM) == FORM:
            # every body here is JSON: read it as JSON whatever the client (curl -d) calls it
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}
        length = headers.get(b"content-length")
        body_pending = (length is not None and length != b"0") or b"transfer-encoding" in headers
        refusal = None
        if server.draining:
            refusal = ApiError(503, "Unhealthy", "the server is shutting down; retry elsewhere or later", "shutdown")
        elif self.key is not None and not (path in KEYLESS and scope["method"] in ("GET", "HEAD")) and not \
                hmac.compare_digest(headers.get(b"authorization", b""), self.key):
            refusal = ApiError(401, "Unauthorized", "missing or wrong API key: send the header "
                               "'Authorization: Bearer KEY'", "unauthorized")
        else:
            limit = server.settings.payload_limit
            if length is not None and length.isdigit() and int(length) > limit:
                refusal = _too_large(int(length), limit)
            elif length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, refusal, body_pending = await _read_limited(receive, limit)
                if refusal is None:
                    receive = _replay(body)
        if refusal is not None:
            server.metrics.failures.labels(refusal.reason).inc()
            close = refusal.status in (413, 503)
            if body_pending and headers.get(b"expect", b"").lower() != b"100-continue":
                close |= not await _discard(receive)
            response = JSONResponse(refusal.body(), refusal.status, headers={"connection": "close"} if close else None)
            return await response(scope, receive, send)

        async def send_counted(message):
            if message["type"] == "http.response.start" and counted:
                if message["status"] < 400:
                    server.metrics.successes.labels(route).inc()
                else:
                    reason = scope.get("state", {}).get("failure_reason") or f"http_{message['status']}"
                    server.metrics.failures.labels(reason).inc()
            await send(message)

        server.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_counted)
        finally:
            server.requests_in_flight -= 1


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "Validation", f"the body is {size} bytes, over the payload limit of {limit} bytes "
                    "(--payload-limit): send fewer or shorter inputs per request", "payload_limit")


async def _read_limited(receive, limit: int) -> tuple[bytes, ApiError | None, bool]:
    """A body without Content-Length, read up to the limit: (body, refusal, whether more of it is unread)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", ApiError(400, "Validation", "the client went away", "disconnected"), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return b"", _too_large(size, limit), bool(message.get("more_body"))
        if not message.get("more_body"):
            return b"".join(chunks), None, False


async def _discard(receive) -> bool:
    """Read and drop the rest of the body, within DRAIN_BYTES and DRAIN_SECONDS: whether it was all read."""
    deadline, size = time.monotonic() + DRAIN_SECONDS, 0
    try:
        while size <= DRAIN_BYTES:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            if message["type"] != "http.request":
                return False  # the client went away
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                return True
    except asyncio.TimeoutError:
        pass
    return False


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
