"""Refuse URLs that do not say one thing: bad percent-escapes, bytes that are not UTF-8
once decoded, control characters in the path.

The HTTP server decodes a URL's path with replacement: `%FF` and `%FE` both became
U+FFFD and named the same file, and the route patterns never match a newline. Such a
URL is refused with 422 before routing, in the error shape of the face it was sent to,
and only once the face's authentication passed (an unauthenticated caller learns
nothing more than 401). A URL outside every face goes on to the router's 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote_to_bytes

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from repomount.server.names import control_character_problem

BadUrl = Callable[[str, str], Response]  # (part: "path" or "query", message) -> a 422

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
PROBLEM = "repomount.url_problem"  # scope key: (part, message) for the refusal app


def url_problem(scope: Scope) -> tuple[str, str] | None:
    """(part, why) for a URL that must be refused, or None."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    for part, raw in (("path", raw_path), ("query", scope.get("query_string", b""))):
        if _BAD_ESCAPE.search(raw):
            return part, f"invalid {part} in the URL: a '%' not followed by two hex digits"
        try:
            text = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return part, f"invalid {part} in the URL: not valid UTF-8 once percent-decoded"
        if part == "path" and (problem := control_character_problem(text)):
            return part, f"invalid path in the URL: it {problem}"
    return None


class UrlGuard:
    """Answers a bad URL under a face's prefix with that face's refusal app (its
    authentication in front of its 422), and passes every other request on."""

    def __init__(self, app: ASGIApp, refusals: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.refusals = refusals  # prefix -> app answering scope[PROBLEM]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (problem := url_problem(scope)) is not None:
            path = scope["path"]
            for prefix, refuse in self.refusals.items():
                if path == prefix or path.startswith(prefix + "/"):
                    await refuse({**scope, PROBLEM: problem}, receive, send)
                    return
        await self.app(scope, receive, send)


def refusal(bad_url: BadUrl) -> ASGIApp:
    """The ASGI app answering a bad URL with `bad_url`'s response."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        part, message = scope[PROBLEM]
        await bad_url(part, message)(scope, receive, send)

    return app
