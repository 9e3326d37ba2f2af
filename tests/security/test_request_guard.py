"""Requests refused before any face sees them (server/requestguard.py), found by this
stop's security probe:
- a `--no-auth` server (what `repomount demo` runs) took a commit from any web page in
  the user's browser (a text/plain POST needs no CORS preflight), and with DNS
  rebinding (Host: evil.example resolved to 127.0.0.1) a page could read everything;
- a request with both Content-Length and Transfer-Encoding was served, and the next
  one on its connection too (request smuggling behind a proxy that frames by length).
"""

from __future__ import annotations

import json
import socket

import httpx

from support.server import ServerFactory


def test_a_no_auth_server_refuses_what_a_web_page_could_send(
    server_factory: ServerFactory,
) -> None:
    live = server_factory(["--no-auth"])
    with httpx.Client(base_url=live.url) as anon:
        assert anon.post("/v1/repos", json={"name": "r"}).status_code == 201
        csrf = anon.post(
            "/v1/repos/r/commits",
            content=json.dumps({"operations": [{"op": "mkdir", "path": "planted"}]}),
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
        assert csrf.status_code == 403 and "Origin" in csrf.json()["error"]["message"]
        rebound = anon.get("/v1/repos/r/tree", headers={"Host": "rebind.evil.example:80"})
        assert rebound.status_code == 403
        for host in ("localhost", f"127.0.0.1:{live.port}", "[::1]:8750", "127.1.2.3"):
            assert anon.get("/v1/repos/r/tree", headers={"Host": host}).status_code == 200
        assert anon.get("/v1/repos/r/tree").json()["entries"] == []  # nothing was made


def test_a_server_with_a_token_is_unchanged_for_browsers(server_factory: ServerFactory) -> None:
    """A token is what a page cannot send without a preflight this server never grants."""
    live = server_factory()
    with live.client() as c:
        r = c.get("/v1/repos", headers={"Origin": "https://app.example", "Host": "x.example"})
        assert r.status_code == 200


def test_a_body_framed_two_ways_is_refused_and_the_connection_closed(
    server_factory: ServerFactory,
) -> None:
    live = server_factory()
    smuggled = b"GET /v1/repos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n\r\n"
    body = b"2\r\n{}\r\n0\r\n\r\n"
    request = (
        b"POST /v1/repos HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-token\r\n"
        b"Content-Type: application/json\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body + smuggled
    )
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        try:
            while chunk := s.recv(65536):  # (until the server closes the connection)
                answer += chunk
        except ConnectionResetError:  # (closed with the smuggled bytes unread: a reset,
            pass  # which may also drop the 400 on its way)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 501")), answer[:80]
    assert answer.count(b"HTTP/1.1 ") <= 1, "the request after it was served"
    assert b" 200 " not in answer
