"""Middleware around every route: the request-size limit, and the request id, timing, metrics and log line."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse

from serving.state import ServingState

log = logging.getLogger("zhijian.serving")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a client's X-Request-ID is kept only in this form


class BodyLimit:
    """ASGI middleware: a request body over ``serving.max_request_bytes`` gets a 413, by its Content-Length or,
    for a chunked body, as soon as the bytes received pass the limit: never more than that is buffered."""

    def __init__(self, app, limits_of):
        self.app, self.limits_of = app, limits_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits_of().max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": f"body: {int(declared)} bytes, the limit is {limit} (serving.max_request_bytes)"}, 413)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # raised inside the route's body read: Starlette answers it as a 413
                raise HTTPException(413, f"body: more than {limit} bytes, the limit is {limit} (serving.max_request_bytes)")
            return message

        await self.app(scope, counted, send)


async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Request id, timing, metrics and one log line per request (no transcript text unless serving.log_text)."""
    request_id = request.headers.get("x-request-id", "")
    if not REQUEST_ID.fullmatch(request_id):  # logged as sent: only short ids of safe characters (no log injection)
        request_id = uuid.uuid4().hex[:16]
    start = time.perf_counter()
    response = await call_next(request)
    seconds = time.perf_counter() - start
    route = request.scope.get("route")
    name = route.path if route is not None else "unmatched"
    metrics = request.app.state.serving.metrics
    metrics.requests.labels(name, str(response.status_code)).inc()
    metrics.latency.labels(name).observe(seconds)
    response.headers["X-Request-ID"] = request_id
    log.info("%s %s %s %d %.1f ms", request_id, request.method, name, response.status_code, 1000 * seconds)
    return response


def add_middleware(app, state: ServingState) -> None:
    """The body limit inside, the observer outside it: a 413 is timed, counted and logged like any answer."""
    app.add_middleware(BodyLimit, limits_of=lambda: state.limits)
    app.middleware("http")(observe)
