"""This server's origin as a client's connection reached it, for the absolute URLs a
face puts in an answer (Terminal Use's presigned URLs, Sentry's `Link` pages).

Built from the socket's own address, never from the request's Host header: the client
chooses that header, and a URL built from it (one signed with the token, or one a
client follows with its token) would point wherever the header said.
"""

from __future__ import annotations

from starlette.requests import Request


def origin(request: Request) -> str:
    """`scheme://host:port` of the socket the request came in on."""
    server = request.scope.get("server")
    if not server:
        return f"{request.url.scheme}://{request.url.netloc}"  # (no socket: a test client)
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{request.url.scheme}://{host}:{port}"
