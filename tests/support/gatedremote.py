"""A MemRemote whose next commit can be held on the wire: armed, its `apply` waits at
the gate (after `entered` is set) until the test opens it, so that a test can act while
a change is in flight."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from repomount.remotes.base import ApplyResult, Change
from support.memremote import MemRemote

HELD = {"flush_delay": 3600.0, "max_flush_window": 3600.0}  # sent only when asked


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
