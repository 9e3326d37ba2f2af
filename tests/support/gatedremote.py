"""A MemRemote whose next commit can be held on the wire: armed, its `apply` waits at
the gate (after `entered` is set) until the test opens it, so that a test can act while
a change is in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from repomount.remotes.base import ApplyResult, Change
from support.memremote import MemRemote


class GatedRemote(MemRemote):
    """MemRemote whose apply() can be held (armed) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = trio.Event()
        self.gate = trio.Event()

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.gate.wait()
        return await super().apply(changes, base=base)

    @asynccontextmanager
    async def holding(self, send: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
        """`send()` (a drain, a round) runs until its next commit is on the wire, held
        there while the body acts; then the commit goes on, and `send` finishes."""
        self.armed = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await self.entered.wait()
            yield
            self.gate.set()
