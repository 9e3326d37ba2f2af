"""Requests refused before any face sees them.

- **A body framed two ways** (`Content-Length` and `Transfer-Encoding` both): RFC 9112
  section 6.3 makes it an error, and a proxy in front that frames it by its length
  would see another request in it (request smuggling). 400, and the connection closes.
- **Without a token** (`--no-auth`, loopback only), what a web page in the user's
  browser could send: any request carrying an `Origin` header (this server serves no
  pages, so a page elsewhere made it: cross-site request forgery, which needs no
  preflight with a text/plain body), and any sent to a name that is not a loopback one
  (DNS rebinding: a page's own name made to resolve to 127.0.0.1, which then reads
  everything). 403. Programs (curl, the mount, the SDKs) send neither.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from repomount.server.auth import refuse


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 bracketed or not) is a loopback one:
    where --no-auth may listen, and what a Host header must name without a token."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_name(header: str) -> bool:
    """Whether a Host header's name (its port aside) is a loopback one."""
    if header.startswith("["):  # [::1]:8750
        name = header[: header.find("]") + 1] if "]" in header else header
    else:
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return is_loopback(name)


class RequestGuard:
    def __init__(self, app: ASGIApp, *, no_auth: bool) -> None:
        self.app = app
        self.no_auth = no_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            why = "both Content-Length and Transfer-Encoding"
            await refuse(send, 400, "bad_request", why, close=True)
            return
        if self.no_auth:
            host = next((v for n, v in scope["headers"] if n.lower() == b"host"), b"")
            if b"origin" in names:
                why = "a request from a web page (it has an Origin header) needs a token"
                await refuse(send, 403, "forbidden", why, close=True)
                return
            if host and not _loopback_name(host.decode("latin-1")):  # (browsers send one)
                why = "without a token, only requests to a loopback name are served"
                await refuse(send, 403, "forbidden", why, close=True)
                return
        await self.app(scope, receive, send)
