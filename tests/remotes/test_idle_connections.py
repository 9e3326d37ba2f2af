"""The HTTP client drops an idle connection before a server would close it, on the
fast lane and through httpx alike, so no request goes out on a connection the server is
closing (it failed, and waited out a retry's backoff)."""

from __future__ import annotations

import pytest
import trio

from repomount.remotes import fastlane, http
from repomount.remotes.http import HttpClient
from repomount.server.run import KEEP_ALIVE_TIMEOUT
from support.conncount import forwarder
from support.server import ServerProc


def test_idle_connections_expire_before_the_servers_timeout() -> None:
    assert fastlane.IDLE_EXPIRY < KEEP_ALIVE_TIMEOUT
    assert http.IDLE_EXPIRY == fastlane.IDLE_EXPIRY


async def test_an_idle_streamed_exchange_connection_is_not_reused(
    server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "IDLE_EXPIRY", 0.3)  # (read when the client is made)
    async with forwarder(server.url) as fwd:
        client = HttpClient(fwd.url, token=server.token)
        try:
            for pause in (0.0, 0.0, 0.6):  # streamed: through httpx, not the lane
                await trio.sleep(pause)
                async with client.stream("GET", "/v1/repos") as r:
                    await r.aread()
                    assert r.status_code == 200
        finally:
            await client.aclose()
    assert fwd.connections == 2  # the first two shared one; the third came after 0.6 s
