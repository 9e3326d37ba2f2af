"""Bearer-token authentication as plain ASGI middleware (usable in front of any face).

A request without the token also passes when it carries a valid presigned-URL signature
for its method and path (server/presign.py), which only a face hands out."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from repomount.server import presign


class BearerAuth:
    """Refuses HTTP requests and WebSocket handshakes without exactly one
    `Authorization: Bearer <token>` header (401 with a JSON error; a handshake is
    closed), unless they carry a valid presigned-URL signature."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.expected = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every connection but the server's own lifespan events passes the check: a
        # WebSocket too, though no face serves one yet, so that one added later cannot
        # be reached without the token.
        if scope["type"] == "lifespan" or self.expected is None:
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        # Exactly one header, its token equal byte for byte: with two, which one counts
        # would be up to each proxy on the way. The scheme's case is free (RFC 9110
        # 11.1: `bearer` is Bearer); HTTP strips spaces around a header's value.
        exact = len(given) == 1 and _bearer_is(given[0], self.expected)
        method = scope.get("method", "GET")  # a WebSocket's handshake is a GET
        if exact or presign.verify(
            self.token, method, scope["path"], scope.get("query_string", b"")
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # Closing before accepting refuses the handshake (the server answers 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        if not given and presign.carries_signature(scope.get("query_string", b"")):
            # A presigned URL gone bad (expired, altered, garbled): as an object store.
            await refuse(send, 403, "forbidden", "the presigned URL is invalid or has expired")
            return
        message = {0: "missing bearer token", 1: "wrong bearer token"}.get(
            len(given), "more than one Authorization header"
        )
        await refuse(send, 401, "unauthorized", message)


def _bearer_is(value: bytes, token: bytes) -> bool:
    """Whether an Authorization value is `Bearer <token>`, the scheme in any case, the
    token compared in constant time."""
    scheme, _, credentials = value.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials, token)


async def refuse(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    """A JSON error answer sent straight from ASGI middleware (before any face);
    `close`: the connection closes after it (whatever else it carries is not read)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="repomount"'))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
