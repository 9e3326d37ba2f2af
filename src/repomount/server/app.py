"""The ASGI application: faces mounted under their prefixes, over one Backend.

Layers, outside in: access log (every request, even refused ones), then per face its
authentication and routes. The native protocol lives under /v1; other dialects (Relace,
Terminal Use, Oxen, Sentry) go in `server/faces/` and are added to `FACES` below, each
a function returning its routes for the shared Backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp

from repomount.server.accesslog import AccessLog
from repomount.server.auth import BearerAuth
from repomount.server.backend import Backend
from repomount.server.faces.relace import relace_routes
from repomount.server.faces.sentry import sentry_routes
from repomount.server.faces.terminaluse import terminaluse_routes
from repomount.server.faults import FaultInjector
from repomount.server.native import native_routes

Face = Callable[[Backend], list[BaseRoute]]

# prefix -> routes of that face
FACES: dict[str, Face] = {
    "/v1": native_routes,
    "/relace/v1": relace_routes,
    "/terminaluse": terminaluse_routes,
    "/api/0": sentry_routes,  # Sentry's own paths: sentry-cli takes no prefix
}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, as JSON like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {
        "error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(
    backend: Backend,
    faces: dict[str, Face] | None = None,
    *,
    fault_rate: float = 0.0,
    log_requests: bool = True,
    request_log: TextIO | None = None,
) -> ASGIApp:
    """The app; with `log_requests`, one access line per request goes to `request_log`
    (None: stderr)."""
    # Longest prefix first: a face at /api/0 must not be shadowed by one at /api.
    chosen = sorted((faces or FACES).items(), key=lambda item: -len(item[0]))
    mounts: list[BaseRoute] = [
        Mount(prefix, app=BearerAuth(Router(routes=face(backend)), backend.options.token))
        for prefix, face in chosen
    ]
    app: ASGIApp = Starlette(routes=mounts, exception_handlers={HTTPException: _http_error})
    if fault_rate:
        app = FaultInjector(app, fault_rate)
    return AccessLog(app, request_log) if log_requests else app
