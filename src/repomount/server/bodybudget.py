"""How many bytes of request bodies the server holds in memory at once, all requests
together.

A JSON body (up to 64 MiB) or an Oxen form (up to 256 MiB) is read whole before it is
used; each alone is bounded, but many sent at once were not: eight 250 MiB forms took
gigabytes. A body over SMALL is read only once the budget has room for the size it
declares (its limit when it declares none), and that room is held until the request's
answer is sent (`HeldBodies`, the middleware): the body and what is made of it live
that long. A body larger than the whole budget waits for all of it, so it runs alone.
Waiting bodies go in order of arrival; a small one (a saved file's commit) never waits.

Nothing is held while waiting, and a request takes its room at once or not at all,
so requests cannot hold parts of the budget while waiting for each other.

What was made of a body may outlive its request: a refusal's traceback holds the frames
that parsed it, in a reference cycle only the garbage collector frees, and that waits
for its next full pass (a refused 100,001-operation commit of 5 MB kept 50 MB; a 64 MiB
body of empty objects, 1.7 GB). So after a failure the room goes back only after a
collection.
"""

from __future__ import annotations

import gc
from contextvars import ContextVar

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODIES_IN_MEMORY = 512 << 20  # bytes
SMALL = 1 << 20  # a body up to this many bytes takes no room


class BodyBudget:
    def __init__(self, total: int = BODIES_IN_MEMORY) -> None:
        self.total = total
        self.free = total
        self._line = trio.Lock()  # (fair: waiters are served in order of arrival)
        self._given = trio.Event()

    async def take(self, size: int) -> int:
        """Wait for room for `size` bytes (at most the whole budget) and take it; the
        bytes taken, to be given back."""
        size = min(size, self.total)
        async with self._line:
            while self.free < size:
                await self._given.wait()
                self._given = trio.Event()
            self.free -= size
        return size

    def give(self, size: int) -> None:
        self.free += size
        self._given.set()


# The current request's budget and the bytes it holds (set by HeldBodies).
_holding: ContextVar[tuple[BodyBudget, list[int]] | None] = ContextVar("holding", default=None)


async def room_for(size: int) -> None:
    """Before a body of up to `size` bytes is read into memory: wait for its room, held
    until the request is answered. Outside a request under HeldBodies, nothing."""
    holding = _holding.get()
    if holding is None or size <= SMALL:
        return
    budget, held = holding
    held.append(await budget.take(size))


class HeldBodies:
    """ASGI middleware: gives the room a request's bodies took back once it is answered
    (or has failed)."""

    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[int] = []
        failed = True  # (until a response starts: an exception before one is a failure)

        async def sending(message: Message) -> None:
            nonlocal failed
            if message["type"] == "http.response.start":
                failed = message["status"] >= 400
            await send(message)

        token = _holding.set((self.budget, held))
        try:
            await self.app(scope, receive, sending)
        except BaseException:
            failed = True
            raise
        finally:
            _holding.reset(token)
            if held and failed:
                # Its answer is sent: what it made is garbage now, cycles too. Only
                # after a failure: a full collection holds the event loop (10-30 ms, and
                # 60-170 ms while another large body is parsed), and a request that
                # succeeded leaves no traceback behind.
                gc.collect()
            for size in held:
                self.budget.give(size)
