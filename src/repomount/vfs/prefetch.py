"""Read-ahead of small files for programs that walk a tree (tar, cp -r, grep -r, an
IDE's indexer): what they will open next comes in a few bulk reads, not one request
per file.

A walk shows itself by cold opens (cache misses) following one another closely inside
directories that were just read (readdir). Its root is the highest directory of an
unbroken chain of such directories above the file. A program can also open files by
name without reading a directory, in order (`git status` checks its index's files,
sorted by path): IN_ORDER cold opens in a row, in increasing path order within
COLD_WINDOW, walk the deepest directory they all lie in (so such a walk widens as it
goes: a directory, its parent, then the tree; the tree only after a walk by name below
it). The small files below that root
that are not cached yet are queued, in the order a walker meets them (sorted names,
depth first), and fetched in batches through `Remote.read_many`, a few at a time, into
the content cache. A single `cat` (one cold open) never triggers it. An open of a file
whose batch is in flight waits for that batch instead of sending its own request.

This module owns the prefetch state: recent directory reads, recent cold opens, the
queued and in-flight batches. It decides nothing about content: the vfs hands it the
candidates (see fileio.py), and everything fetched lands in the cache under the
version the listing named, checked by the adapter.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from repomount.remotes.base import Fetched, Remote, RemoteError
from repomount.vfs.content import ContentCache
from repomount.vfs.health import Health

log = logging.getLogger(__name__)

SMALL_FILE = 1 << 20  # files up to this size are read ahead; larger ones on demand
BATCH_FILES = 256  # files per bulk read
BATCH_BYTES = 16 << 20  # ... and bytes per bulk read
WALK_BYTES = 256 << 20  # at most this much queued per walk (and a quarter of the cache)
WALK_FILES = 20_000
COLD_OPENS = 2  # cold opens within COLD_WINDOW seconds make a walk
IN_ORDER = 4  # ... or this many, in path order, with no directory read above them
COLD_WINDOW = 2.0
DIR_WINDOW = 30.0  # a directory read this recently is part of a walk
WALKED_AGAIN = 60.0  # a walk root is not queued twice within this many seconds

Key = tuple[str, str]  # (path, version)


@dataclass(frozen=True, slots=True)  # slots: a walk queues up to WALK_FILES of these
class Candidate:
    path: str
    version: str
    size: int


class Prefetcher:
    def __init__(self, remote: Remote, cache: ContentCache, health: Health, transfers: int) -> None:
        self.remote = remote
        self.cache = cache
        self.health = health
        self.transfers = max(1, transfers)
        self._dirs_read: OrderedDict[int, float] = OrderedDict()  # dir ino -> when
        self._cold: deque[float] = deque(maxlen=COLD_OPENS)
        self._by_name: deque[tuple[float, str]] = deque(maxlen=IN_ORDER)  # (when, path)
        self._by_name_walked = -WALKED_AGAIN  # when opens by name last made a walk
        self._walked: OrderedDict[int, float] = OrderedDict()  # walk root ino -> when
        self._queued: set[Key] = set()
        self._in_flight: dict[Key, trio.Event] = {}
        self._send, self._receive = trio.open_memory_channel[list[Candidate]](math.inf)
        self.batches = 0  # bulk reads sent (status, tests)

    # ------------------------------------------------------------------ signals

    def dir_read(self, ino: int) -> None:
        """opendir of a directory (a walker reads every directory it enters)."""
        self._dirs_read[ino] = time.monotonic()
        self._dirs_read.move_to_end(ino)
        while len(self._dirs_read) > 4096:
            self._dirs_read.popitem(last=False)

    def recently_read(self, ino: int) -> bool:
        when = self._dirs_read.get(ino)
        return when is not None and time.monotonic() - when < DIR_WINDOW

    def cold_open(self) -> bool:
        """A cache miss on open; True when opens come fast enough to be a walk."""
        now = time.monotonic()
        self._cold.append(now)
        return len(self._cold) == COLD_OPENS and now - self._cold[0] < COLD_WINDOW

    def opened_by_name(self, path: str) -> str | None:
        """A cold open of `path` with no directory read above it: the directory the
        last IN_ORDER such opens all lie in, when they came in path order within
        COLD_WINDOW seconds (a walk of it), else None."""
        now = time.monotonic()
        if self._by_name and path <= self._by_name[-1][1]:
            self._by_name.clear()  # (out of order: not a walk by name)
        self._by_name.append((now, path))
        if len(self._by_name) < IN_ORDER or now - self._by_name[0][0] >= COLD_WINDOW:
            return None
        common = posixpath.commonpath([p for _, p in self._by_name])  # (all distinct files)
        if not common and now - self._by_name_walked >= WALKED_AGAIN:
            # The whole tree only when it widens from a walk by name below it (`git
            # status`), not for a few opens across the top (`cat a/x b/y c/z d/w`).
            return None
        self._by_name_walked = now
        return common

    def walked_recently(self, root_ino: int) -> bool:
        when = self._walked.get(root_ino)
        return when is not None and time.monotonic() - when < WALKED_AGAIN

    def busy(self) -> bool:
        """Files queued or in flight (a walk already being read ahead)."""
        return bool(self._queued or self._in_flight)

    def walk_budget(self) -> int:
        return min(WALK_BYTES, self.cache.limit // 4)

    def queue(self, root_ino: int, candidates: Sequence[Candidate]) -> int:
        """Queue these for fetching in batches; returns how many were queued."""
        self._walked[root_ino] = time.monotonic()
        self._walked.move_to_end(root_ino)
        while len(self._walked) > 1024:
            self._walked.popitem(last=False)
        batch: list[Candidate] = []
        size = queued = 0
        for c in candidates:
            key = (c.path, c.version)
            if key in self._queued or key in self._in_flight:
                continue
            self._queued.add(key)
            batch.append(c)
            size += c.size
            queued += 1
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                self._send.send_nowait(batch)
                batch, size = [], 0
        if batch:
            self._send.send_nowait(batch)
        return queued

    # ------------------------------------------------------------------ waiting

    async def wait(self, path: str, version: str) -> None:
        """If (path, version) is being fetched, wait until its batch is done (it is in
        the cache then, unless the batch failed). If it is only queued, take it out:
        the caller fetches it itself rather than wait behind other batches."""
        key = (path, version)
        event = self._in_flight.get(key)
        if event is not None:
            await event.wait()
        else:
            self._queued.discard(key)

    # ------------------------------------------------------------------ fetching

    async def run(self) -> None:
        """Background task: fetch queued batches, `transfers` at a time."""
        limit = trio.Semaphore(self.transfers)
        async with trio.open_nursery() as nursery:
            async for batch in self._receive:
                await limit.acquire()
                nursery.start_soon(self._fetch, batch, limit)

    async def _fetch(self, batch: list[Candidate], limit: trio.Semaphore) -> None:
        try:
            wanted: dict[str, Candidate] = {}
            for c in batch:
                key = (c.path, c.version)
                if key not in self._queued:
                    continue  # an open took it over
                self._queued.discard(key)
                if self.cache.lookup(c.path, c.version) is None:
                    wanted[c.path] = c
                    self._in_flight[key] = trio.Event()
            if not self._queued:
                self._queued = set()  # (a set never shrinks: a walk's table would stay)
            if wanted:
                await self._read(wanted)
        finally:
            limit.release()

    async def _read(self, wanted: dict[str, Candidate]) -> None:
        def got(path: str, fetched: Fetched, file: Path) -> None:
            c = wanted.get(path)
            if c is None or fetched.version != c.version:
                file.unlink(missing_ok=True)  # changed since it was listed: not ours
            elif self.cache.commit(file, path, c.version) is None:
                file.unlink(missing_ok=True)
            if c is not None:
                self._done((path, c.version))

        self.batches += 1
        try:
            sizes = {c.path: c.size for c in wanted.values()}
            await self.remote.read_many(
                list(wanted), self.cache.temp_path, got, transfers=self.transfers, sizes=sizes
            )
            self.health.ok()
        except RemoteError as e:
            log.debug("read-ahead of %d file(s) failed: %s", len(wanted), e)
            self.health.failed(e)
        except Exception as e:  # a local disk error (or a group of them): opens fetch
            log.warning("read-ahead of %d file(s) failed: %r", len(wanted), e)
        finally:
            for c in wanted.values():  # (waiters then fetch on their own)
                self._done((c.path, c.version))

    def _done(self, key: Key) -> None:
        event = self._in_flight.pop(key, None)
        if event is not None:
            event.set()
