"""The socket read sizes set on httpcore (the mount's client) and hypercorn (the server)
take effect: each is a patch of another library's internals (remotes/http.py,
server/run.py), which a release of that library could silently turn into a no-op."""

from __future__ import annotations

import httpcore
import hypercorn.trio.tcp_server

from repomount.remotes import http
from repomount.server import run


def test_the_client_reads_its_connections_a_mebibyte_at_a_time() -> None:
    assert http.SOCKET_READ == 1 << 20
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == http.SOCKET_READ


def test_the_server_reads_its_connections_a_mebibyte_at_a_time() -> None:
    assert run.SOCKET_READ == 1 << 20
    assert hypercorn.trio.tcp_server.MAX_RECV == run.SOCKET_READ
