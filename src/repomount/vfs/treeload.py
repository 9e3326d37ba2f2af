"""The whole tree's first listing, loaded behind a lookup instead of in front of it.

Where the remote lists recursively, a directory's first listing takes everything below
it, so a walk (find, ls -lR, an indexer) costs one paged listing. The first listing of
all is the root's, and a large repo's whole tree takes a while (12,000 files: about a
second at 20 ms RTT). A program that only opens one file after mounting (`cat`, `dd`,
an editor) should not wait for that. So a lookup in a directory never listed, before
the tree is loaded, lists that directory alone and asks for the whole tree in the
background; a directory read (a walk) waits for the tree in flight instead of listing
on its own, and so do lookups once OWN_LISTINGS of them have listed alone (a program
stat-ing files all over the tree, as `git status` does, then costs the tree, not one
request per directory).

Only where a directory's listing costs less than the tree's (`directory_listing`: not
where the adapter cuts it from a listing of everything). Where nothing hosts the
background load (no task runs `run`), every first listing is recursive, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

OWN_LISTINGS = 64  # lookups that list their directory alone before the tree is loaded


class TreeLoad:
    def __init__(self) -> None:
        self.loaded = False  # a recursive listing of the root was merged
        self.loading: trio.Event | None = None  # set when the load in flight ends
        self._wanted = trio.Event()
        self._hosted = False  # `run` is running: a load can be asked for
        self._own_left = OWN_LISTINGS

    def lists_alone(self, walk: bool) -> bool:
        """Whether a directory's first listing, made for a lookup (`walk` False) or a
        directory read, lists that directory alone (the caller then asks for the
        tree with `want`, once the listing succeeded)."""
        if walk or self.loaded or not self._hosted or self._own_left <= 0:
            return False
        self._own_left -= 1
        return True

    def want(self) -> None:
        """Load the whole tree in the background, unless loaded or loading. It counts
        as in flight from now: a use that would wait for it does."""
        if not self.loaded and self.loading is None and self._hosted:
            self.loading = trio.Event()
            self._wanted.set()

    async def wait(self, walk: bool) -> bool:
        """Wait for the load in flight where this use of a directory never listed
        would not list it alone; whether there was one to wait for."""
        loading = self.loading
        if loading is None or (not walk and self._own_left > 0):
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
                    if not self.loaded:
                        await load()
                finally:
                    self._landed()
        finally:
            self._hosted = False
            self._landed()

    def _landed(self) -> None:
        loading, self.loading = self.loading, None
        if loading is not None:
            loading.set()
