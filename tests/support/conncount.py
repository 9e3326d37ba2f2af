"""A TCP forwarder that counts the connections a client opens to a server.

Tests that pin connection reuse put it between a remote adapter and the real server:
a connection the client could not reuse shows as one more here (over a WAN, each costs
a handshake and TCP's slow start again)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio


class Forwarder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.connections = 0
        self.url = ""

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            async for data in source:
                await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _serve(self, client: trio.SocketStream) -> None:
        self.connections += 1
        server = await trio.open_tcp_stream(*self.target)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)


@asynccontextmanager
async def forwarder(url: str) -> AsyncIterator[Forwarder]:
    """A Forwarder to the server at `url` (http://host:port), listening on 127.0.0.1
    at its own `.url` while the block runs."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    fwd = Forwarder(host, int(port))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fwd._serve, 0, host="127.0.0.1"))
        fwd.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        try:
            yield fwd
        finally:
            nursery.cancel_scope.cancel()
