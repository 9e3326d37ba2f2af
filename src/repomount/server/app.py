"""The ASGI application: faces mounted under their prefixes, over one Backend.

Layers, outside in: access log (every request, even refused ones), the wrapper that
lets a streamed answer end cleanly (server/lastsend.py), the URL guard (a
URL that is not UTF-8 is refused by its face, after its authentication), then per face
its authentication and routes. The native protocol lives under /v1; other dialects
(Relace, Terminal Use, Oxen, Sentry) go in `server/faces/` and are added to `FACES`
below, each with a function returning its routes for the shared Backend and its 422.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp

from repomount.diskfull import is_full
from repomount.server.accesslog import CLIENT_CLOSED, AccessLog
from repomount.server.auth import BearerAuth
from repomount.server.backend import Backend
from repomount.server.bodybudget import HeldBodies
from repomount.server.faces import oxen_wire
from repomount.server.faces import terminaluse_wire as wire
from repomount.server.faces.oxen import oxen_routes
from repomount.server.faces.relace import relace_bad_url, relace_routes
from repomount.server.faces.sentry import sentry_bad_url, sentry_routes
from repomount.server.faces.terminaluse import terminaluse_routes
from repomount.server.faults import FaultInjector
from repomount.server.hub import WakeAfterAnswer
from repomount.server.jsonresponse import JSONResponse
from repomount.server.lastsend import FinishLastSend
from repomount.server.native import native_routes
from repomount.server.native_responses import native_bad_url
from repomount.server.requestguard import RequestGuard
from repomount.server.urlguard import BadUrl, UrlGuard, refusal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    routes: Callable[[Backend], list[BaseRoute]]
    bad_url: BadUrl  # its 422 for a URL that is not UTF-8 (server/urlguard.py)


# prefix -> the face served under it
FACES: dict[str, Face] = {
    "/v1": Face(native_routes, native_bad_url),
    "/relace/v1": Face(relace_routes, relace_bad_url),
    "/terminaluse": Face(terminaluse_routes, wire.bad_url),
    # Oxen's own paths (/api/repos/...): its client takes no prefix
    "/api": Face(oxen_routes, oxen_wire.bad_url),
    "/api/0": Face(sentry_routes, sentry_bad_url),  # Sentry's own paths: sentry-cli takes no prefix
}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, as JSON like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {
        "error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """The server's disk (or quota) full: 507, one line in the log. Clients retry a 5xx
    later (no Retry-After: a client holding its request for it would hold every change
    behind it); a 500 and a traceback told nobody what to free."""
    if not is_full(exc):
        raise exc
    where = f"{request.method} {request.url.path}"
    log.error("%s: the server's disk is full (%s)", where, exc)
    body = {
        "error": {"code": "insufficient_storage", "message": f"{where}: the server's disk is full"}
    }
    return JSONResponse(body, status_code=507)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left before its request body was whole: no server error (Starlette
    answered 500), and nobody is left to read an answer: logged as 499."""
    return Response(status_code=CLIENT_CLOSED)


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
    faces = faces or FACES
    token = backend.options.token
    # Longest prefix first: a face at /api/0 must not be shadowed by one at /api.
    chosen = sorted(faces.items(), key=lambda item: -len(item[0]))
    mounts: list[BaseRoute] = [
        Mount(
            prefix,
            app=BearerAuth(Router(routes=face.routes(backend), redirect_slashes=False), token),
        )
        for prefix, face in chosen
    ]
    handlers = {
        HTTPException: _http_error,
        OSError: _storage_error,
        sqlite3.Error: _storage_error,
        ClientDisconnect: _client_gone,
    }
    starlette = Starlette(routes=mounts, exception_handlers=handlers)
    # No redirect to the path with(out) a slash: its Location repeated the request's Host
    # header (chosen by the client), and no client of any face needs one.
    starlette.router.redirect_slashes = False
    app: ASGIApp = starlette
    if fault_rate:
        app = FaultInjector(app, fault_rate)
    refusals = {prefix: BearerAuth(refusal(face.bad_url), token) for prefix, face in faces.items()}
    app = WakeAfterAnswer(UrlGuard(app, refusals), backend.hub)
    app = HeldBodies(RequestGuard(app, no_auth=token is None), backend.bodies)
    guarded: ASGIApp = FinishLastSend(app)
    return AccessLog(guarded, request_log) if log_requests else guarded
