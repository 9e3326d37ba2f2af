"""What every HTTP face shares: the store, run off the event loop, and change wakeups."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from repomount.server.bodybudget import BodyBudget
from repomount.server.hub import ChangeHub
from repomount.server.store import CommitResult, Idempotency, Operation, Store

T = TypeVar("T")

LARGE_BODIES_AT_ONCE = 2


@dataclass(frozen=True)
class ServerOptions:
    token: str | None = None  # None: no authentication
    max_file_size: int = 1 << 30
    max_pack_size: int = 1 << 30  # the whole body of a POST /blobs (a pack of blobs)
    require_preconditions: bool = False
    max_wait: float = 60.0  # longest change-feed long-poll, seconds


class Backend:
    def __init__(self, store: Store, options: ServerOptions) -> None:
        self.store = store
        self.options = options
        self.hub = ChangeHub()
        # Turns for reading and parsing JSON bodies over body.LARGE_BODY (body.py).
        self.large_bodies = trio.CapacityLimiter(LARGE_BODIES_AT_ONCE)
        self.bodies = BodyBudget()  # bytes of request bodies in memory (bodybudget.py)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in a worker thread."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))

    async def commit(
        self,
        repo: str,
        operations: Sequence[Operation],
        *,
        message: str = "",
        author: str = "",
        idempotency: Idempotency | None = None,
        base: int | None = None,
        contents: Mapping[str, bytes] | None = None,
    ) -> CommitResult:
        return await self.committing(
            repo,
            partial(
                self.store.commit,
                repo,
                operations,
                message=message,
                author=author,
                idempotency=idempotency,
                base=base,
                contents=contents,
            ),
        )

    async def committing(self, repo: str, fn: Callable[[], T]) -> T:
        """Run `fn`, which may commit to `repo`, in a worker thread; then wake the
        repo's change-feed waiters."""
        try:
            return await self.run(fn)
        finally:
            # Also on cancellation: the thread may have committed. A spurious wakeup is
            # harmless, waiters re-read the head.
            self.hub.notify(repo)

    async def delete_repo(self, repo: str) -> None:
        try:
            await self.run(self.store.delete_repo, repo)
        finally:
            self.hub.notify(repo)
