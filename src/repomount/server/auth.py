"""Bearer-token authentication as plain ASGI middleware (usable in front of any face).

A request without the token also passes when it carries a valid presigned-URL signature
for its method and path (server/presign.py), which only a face hands out."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from repomount.server import presign


class BearerAuth:
    """Refuses HTTP requests without `Authorization: Bearer <token>` (401, JSON error)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.expected = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.expected is None:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected) or presign.verify(
            self.token, scope["method"], scope["path"], scope.get("query_string", b"")
        ):
            await self.app(scope, receive, send)
            return
        message = "missing bearer token" if not given else "wrong bearer token"
        body = json.dumps({"error": {"code": "unauthorized", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="repomount"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
