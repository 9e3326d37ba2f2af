"""Large files read while they arrive: the first byte of a 1 GiB file does not wait for
the whole file.

On a cold open of a large file (where the remote can read ranges), the content is a
sparse temp file of the right size that fills as bytes arrive. A read waits only for
the bytes it asks for. The first read (or a read far from the bytes arriving: a seek)
starts one streamed request from its offset to the end of the file, so sequential
reading runs at the link's speed with one request; a new stream replaces the old one
on a seek. Once every byte is there the file goes into the content cache (its open
descriptors stay valid) and the next open is a cache hit.

This module owns the partial downloads: one `Partial` per (path, version) being read,
shared by the inode's handles, ended when the last one closes. Bytes are written to
disk, never held: memory stays flat whatever the file's size.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import BinaryIO, cast

import trio

from repomount.remotes.base import ProtocolError, Remote, RemoteError
from repomount.vfs.content import ContentCache
from repomount.vfs.health import Health

log = logging.getLogger(__name__)

LARGE_FILE = 8 << 20  # files from this size are read while they arrive
NEAR = 16 << 20  # a read this far ahead of a stream waits for it instead of seeking


class Ranges:
    """Disjoint, sorted [start, end) byte ranges present."""

    def __init__(self) -> None:
        self.spans: list[list[int]] = []

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        merged = [start, end]
        keep = []
        for s in self.spans:
            if s[1] < merged[0] or s[0] > merged[1]:
                keep.append(s)
            else:
                merged = [min(s[0], merged[0]), max(s[1], merged[1])]
        keep.append(merged)
        keep.sort()
        self.spans = keep

    def covers(self, start: int, end: int) -> bool:
        return start >= end or any(s[0] <= start and end <= s[1] for s in self.spans)

    def first_gap(self, start: int, end: int) -> int | None:
        """The first offset in [start, end) not present, or None."""
        pos = start
        for s in self.spans:
            if s[0] <= pos < s[1]:
                pos = s[1]
        return pos if pos < end else None


class _Stream:
    """One streamed request from `front` (where it writes next) to the end of file."""

    def __init__(self, partial: Partial, offset: int) -> None:
        self.partial = partial
        self.front = offset
        self.scope = trio.CancelScope()

    def write(self, data: bytes) -> int:  # the adapter's `dest`
        os.pwrite(self.partial.wfd, data, self.front)
        self.front += len(data)
        self.partial.arrived(self.front - len(data), self.front)
        return len(data)


MAX_STREAMS = 3  # streams of one file at once (readers at different places)


class Partial:
    def __init__(self, streams: Streams, path: str, version: str, size: int, file: Path) -> None:
        self.streams = streams
        self.path, self.version, self.size, self.file = path, version, size, file
        self.wfd = os.open(file, os.O_WRONLY)
        self.have = Ranges()
        self.users = 0
        self.complete = size == 0
        self.error: RemoteError | None = None
        self._progress = trio.Event()
        self._running: list[_Stream] = []
        self.committed = False  # handed to the cache (or found wrong)

    def arrived(self, start: int, end: int) -> None:
        self.have.add(start, end)
        if self.have.covers(0, self.size):
            self.complete = True
            for st in self._running:  # nothing left to fetch
                st.scope.cancel()
        self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def ready(self, offset: int, length: int) -> None:
        """Wait until bytes [offset, offset+length) (clipped to the file) are there;
        raise the remote's error if they cannot come."""
        end = min(offset + length, self.size)
        tried = False
        while self.error is None or not tried:
            gap = None if self.complete else self.have.first_gap(offset, end)
            if gap is None:
                return
            if not any(st.front <= gap < st.front + NEAR for st in self._running):
                if tried and self.error is not None:
                    break
                self._start(gap)
                tried = True
            await self._progress.wait()
        assert self.error is not None
        raise self.error

    async def finished(self) -> None:
        """Wait until the whole file is there (a copy of it is about to be made)."""
        await self.ready(0, self.size)

    def _start(self, offset: int) -> None:
        if len(self._running) >= MAX_STREAMS:
            self._running[0].scope.cancel()  # the oldest gives way
            del self._running[0]
        st = _Stream(self, offset)
        self._running.append(st)
        self.error = None
        self.streams.spawn(self._run, st)

    async def _run(self, st: _Stream) -> None:
        with st.scope:
            try:
                dest = cast(BinaryIO, st)
                await self.streams.remote.read(
                    self.path, dest, version=self.version, offset=st.front
                )
                self.streams.health.ok()
            except RemoteError as e:
                self.error = e
                self.streams.health.failed(e)
                log.info("reading %r from %d: %s", self.path, st.front, e)
        if st in self._running:
            self._running.remove(st)
        self._wake()  # readers go on, or see the error
        if self.complete and self.error is None and not self._running:
            await self.streams.completed(self)

    def release(self) -> None:
        """An open file of it let go (see Streams.release)."""
        self.streams.release(self)

    def close(self) -> None:
        for st in self._running:
            st.scope.cancel()
        self._running.clear()
        os.close(self.wfd)


class Streams:
    """The partial downloads, by (path, version), and the task they run in."""

    def __init__(self, remote: Remote, cache: ContentCache, health: Health) -> None:
        self.remote, self.cache, self.health = remote, cache, health
        self._partials: dict[tuple[str, str], Partial] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self) -> None:
        """Background task hosting the streams."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def spawn(self, fn: object, *args: object) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def open(self, path: str, version: str, size: int) -> tuple[int, Partial]:
        """A read-only descriptor of (path, version) filling as it arrives."""
        key = (path, version)
        partial = self._partials.get(key)
        if partial is None:
            file = self.cache.temp_path()
            with file.open("wb") as f:
                f.truncate(size)  # sparse: no blocks until written
            partial = self._partials[key] = Partial(self, path, version, size, file)
        partial.users += 1
        return os.open(partial.file, os.O_RDONLY), partial

    async def completed(self, partial: Partial) -> None:
        """Every byte is there: it becomes a cache entry (descriptors stay valid), once
        its content is checked against its version where versions are content hashes.
        (A complete file outlives its last user until this is done.)"""
        if partial.committed:
            return
        partial.committed = True
        try:
            digest = await trio.to_thread.run_sync(_sha256_of, partial.file)
        except FileNotFoundError:
            return
        derived = self.remote.version_of(digest)
        if derived is not None and derived != partial.version:
            partial.error = ProtocolError(
                f"content of {partial.path!r} does not match its version {partial.version}"
            )
            log.error("%s: not cached", partial.error.message)
            partial.file.unlink(missing_ok=True)
        elif self.cache.commit(partial.file, partial.path, partial.version) is not None:
            partial.file = self.cache.cached_path(partial.path, partial.version)

    def release(self, partial: Partial) -> None:
        """One user (an open file) let go; the last one ends the download."""
        partial.users -= 1
        if partial.users > 0:
            return
        key = (partial.path, partial.version)
        if self._partials.get(key) is partial:
            del self._partials[key]
        partial.close()
        if not partial.complete:  # (a complete one is handed to the cache)
            partial.file.unlink(missing_ok=True)


def _sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
