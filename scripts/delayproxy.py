"""A TCP proxy that emulates a link with a round-trip time: a delay line per direction.

    delayproxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:8750 --rtt 20

Every chunk read from one side is stamped on arrival and written to the other side
RTT/2 later; reading goes on meanwhile, so order and throughput are kept (up to
`--window` bytes in flight per direction), only latency is added. A new connection's
first client bytes leave no earlier than one RTT after the accept, standing for the TCP
handshake a real link would cost. An end of stream (half-close) travels through the line
like data. Prints `delayproxy: listening on HOST:PORT` once ready; stops on SIGTERM/SIGINT.

Used by scripts/bench when the kernel has no netem. What it does not emulate: the sender's
TCP window being clocked by delayed ACKs (the proxy acknowledges at once), packet loss.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections import deque

import trio

CHUNK = 1 << 18


class DelayLine:
    """Chunks with their due times; the writer waits for each in order."""

    def __init__(self, window: int) -> None:
        self.items: deque[tuple[float, bytes]] = deque()
        self.bytes = 0
        self.window = window
        self.changed = trio.Event()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def put(self, due: float, data: bytes) -> None:
        while self.bytes >= self.window:
            await self.changed.wait()
        self.items.append((due, data))
        self.bytes += len(data)
        self._wake()

    async def get(self) -> tuple[float, bytes]:
        while not self.items:
            await self.changed.wait()
        due, data = self.items.popleft()
        self.bytes -= len(data)
        self._wake()
        return due, data


async def reader(src: trio.SocketStream, line: DelayLine, half: float, not_before: float) -> None:
    while True:
        try:
            data = await src.receive_some(CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        await line.put(max(trio.current_time(), not_before) + half, data)
        if not data:
            return


async def writer(dst: trio.SocketStream, line: DelayLine) -> None:
    while True:
        due, data = await line.get()
        await trio.sleep_until(due)
        if not data:
            try:
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            return
        await dst.send_all(data)


async def direction(
    src: trio.SocketStream, dst: trio.SocketStream, half: float, not_before: float, window: int
) -> None:
    line = DelayLine(window)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, src, line, half, not_before)
        nursery.start_soon(writer, dst, line)


async def handle(client: trio.SocketStream, host: str, port: int, rtt: float, window: int) -> None:
    accepted = trio.current_time()
    try:
        upstream = await trio.open_tcp_stream(host, port)
    except OSError:
        await client.aclose()
        return
    half = rtt / 2
    try:
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(direction, client, upstream, half, accepted + rtt, window)
            nursery.start_soon(direction, upstream, client, half, -math.inf, window)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # one side reset the connection: both are closed
    except* Exception as group:  # never let one connection stop the proxy
        print(f"delayproxy: connection failed: {group.exceptions!r}", file=sys.stderr, flush=True)


async def serve(listen: str, upstream: str, rtt: float, window: int) -> None:
    lhost, lport = listen.rsplit(":", 1)
    uhost, uport = upstream.rsplit(":", 1)
    listeners = await trio.open_tcp_listeners(int(lport), host=lhost)
    sockname = listeners[0].socket.getsockname()
    print(f"delayproxy: listening on {sockname[0]}:{sockname[1]}", flush=True)

    async def on_client(stream: trio.SocketStream) -> None:
        await handle(stream, uhost, int(uport), rtt, window)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, on_client, listeners)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    ap.add_argument("--rtt", type=float, required=True, help="round-trip time to add, ms")
    ap.add_argument("--window", type=int, default=16 << 20, help="bytes in flight per direction")
    args = ap.parse_args(argv)
    trio.run(serve, args.listen, args.upstream, args.rtt / 1000, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
