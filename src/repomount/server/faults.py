"""Fault injection for tests of clients (`repomount serve --inject-faults RATE`).

A fraction of requests to repo endpoints fails the ways networks and overloaded servers
fail: refused before anything happens (503), applied but answered with a 500 (the
response is lost: a client must replay safely), or answered only after a delay (503).
Never enabled unless asked for.
"""

from __future__ import annotations

import json
import random

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class FaultInjector:
    def __init__(self, app: ASGIApp, rate: float, *, delay: float = 1.0, seed: int | None = None):
        self.app = app
        self.rate = rate
        self.delay = delay
        self.random = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "/repos/" not in scope["path"]:
            await self.app(scope, receive, send)
            return
        if self.random.random() >= self.rate:
            await self.app(scope, receive, send)
            return
        kind = self.random.choice(("refuse", "lose", "slow"))
        if kind == "slow":
            await trio.sleep(self.delay)
        if kind in ("refuse", "slow"):
            await _answer(send, 503, "injected fault: unavailable")
            return
        # "lose": run the request for real, then replace its answer with a 500.
        started = False

        async def swallow(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True

        await self.app(scope, receive, swallow)
        if started:
            await _answer(send, 500, "injected fault: response lost")


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"code": "injected_fault", "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
