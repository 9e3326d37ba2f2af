"""A call begun in a worker thread now and awaited later.

`trio.to_thread.run_sync` waits for its call at once; a pipeline wants the next step
running while this one goes on (a staged upload's next piece read while this one is
sent: vfs/staging.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class ThreadCall(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.done = trio.Event()  # set once the call has returned or raised
        self._outcome: outcome.Outcome[T] | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[T]) -> None:  # (in the worker thread)
            self._outcome = result
            try:
                token.run_sync_soon(self.done.set)
            except trio.RunFinishedError:  # (the loop is gone: nobody waits)
                pass

        trio.lowlevel.start_thread_soon(fn, deliver)

    async def result(self) -> T:
        """Its return value, or its exception raised here. Cancelled, the call goes on
        in its thread: see `settled`."""
        await self.done.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()

    async def settled(self) -> None:
        """Once the call has ended, whatever it did, even while cancelled: what it uses
        (a descriptor, a file) may then go."""
        with trio.CancelScope(shield=True):
            await self.done.wait()
