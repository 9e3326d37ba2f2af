"""Which first listings take a whole subtree, and the whole tree's load behind lookups.

Where the remote lists recursively, a directory read (opendir) of a directory never
listed lists everything below it in one paged request: the walk that follows (find,
ls -lR, tar, an indexer) costs one listing, not one per directory. A lookup only needs
one name, though, and a large repo's whole tree takes a while (12,000 files: about a
second at 20 ms RTT): a program that opens one file after mounting (`cat`, `dd`, an
editor) should not wait for that. So, where a directory's listing costs less than the
tree's (`directory_listing`), a lookup in a directory never listed lists that
directory alone (`Listings.alone` remembers it), and a later read of it lists its
subtree then.

A program that stats files all over the tree without reading directories (`git
status` checks every tracked file first) would list directory after directory that
way. So after OWN_LISTINGS lookups have listed alone, the whole tree is loaded in the
background, and every first listing waits for that load while it is in flight.
Where nothing hosts the load (no task runs `run`), or it failed less than RETRY_AFTER
seconds ago, they list on their own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

OWN_LISTINGS = 64  # lookups that list their directory alone before the tree loads
RETRY_AFTER = 5.0  # seconds after a failed load before it is asked for again


class TreeLoad:
    def __init__(self) -> None:
        self.loaded = False  # a recursive listing of the root was merged
        self.loading: trio.Event | None = None  # set when the load in flight ends
        self._wanted = trio.Event()
        self._hosted = False  # `run` is running: a load can be asked for
        self._own_left = OWN_LISTINGS
        self._failed_at = -RETRY_AFTER  # when a load last failed

    def lists_alone(self) -> bool:
        """Whether a lookup's first listing of a directory lists that directory alone
        (counted)."""
        if self.loaded or self._own_left <= 0:
            return False
        self._own_left -= 1
        return True

    def spent(self) -> bool:
        """Whether lookups list with the tree now, not alone."""
        return self._own_left <= 0 and not self.loaded

    def want(self) -> None:
        """Load the whole tree in the background, unless loaded or loading. It counts
        as in flight from now: a use that would wait for it does."""
        if self.loaded or self.loading is not None or not self._hosted:
            return
        if time.monotonic() - self._failed_at >= RETRY_AFTER:
            self.loading = trio.Event()
            self._wanted.set()

    async def wait(self) -> bool:
        """Wait for the load in flight, if there is one; whether there was."""
        loading = self.loading
        if loading is None:
            return False
        await loading.wait()
        return True

    async def run(self, load: Callable[[], Awaitable[None]]) -> None:
        """Background task: load the tree whenever asked, until it is loaded."""
        self._hosted = True
        try:
            while not self.loaded:
                await self._wanted.wait()
                self._wanted = trio.Event()
                try:
                    await load()  # (which sees whether a root read loaded it meanwhile)
                finally:
                    if not self.loaded:  # (meanwhile each use lists on its own)
                        self._failed_at = time.monotonic()
                    self._landed()
        finally:
            self._hosted = False
            self._landed()

    def _landed(self) -> None:
        loading, self.loading = self.loading, None
        if loading is not None:
            loading.set()
