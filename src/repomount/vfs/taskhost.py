"""A background task hosting tasks started from anywhere while it runs (the streams of
large files read as they arrive, the staged uploads): it runs with the mount's other
tasks, and what it hosts ends with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


class TaskHost:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self) -> None:
        """The background task: what `spawn` starts runs under it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start `fn(*args)`; only while `running`."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)
