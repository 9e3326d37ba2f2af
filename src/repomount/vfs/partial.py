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

import errno
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import BinaryIO, cast

import trio

from repomount.remotes.base import ProtocolError, Remote, RemoteError, too_long
from repomount.vfs.content import ContentCache
from repomount.vfs.errors import FsError
from repomount.vfs.health import Health
from repomount.vfs.taskhost import TaskHost

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
    """One streamed request from `front` (where it writes next) to the end of file,
    writing through a descriptor of its own (closed when the stream ends, so a stream
    outliving its Partial can never write into another file). It ends by itself when
    it reaches bytes another stream brought (a stream ahead of it)."""

    def __init__(self, partial: Partial, offset: int, *, ahead: bool = False) -> None:
        self.partial = partial
        self.start = self.front = offset
        self.ahead = ahead  # started ahead of a reader (ahead_of), not for one
        self.began = trio.current_time()
        self.scope = trio.CancelScope()
        self.fd = os.dup(partial.wfd)

    def write(self, data: bytes) -> int:  # the adapter's `dest`
        start = self.front
        if start + len(data) > self.partial.size:  # (ranged reads: sizes are exact)
            raise too_long(self.partial.path, self.partial.size, self.partial.size)
        view = memoryview(data)
        while view:  # (a short write, say the disk filling up, must not leave a hole)
            done = os.pwrite(self.fd, view, self.front)
            if done == 0:
                raise OSError(errno.ENOSPC, f"{self.partial.file}: nothing written")
            self.front += done
            view = view[done:]
        self.partial.streams.cache.growing(len(data))
        self.partial.arrived(start, self.front)
        if self.front < self.partial.size and self.partial.have.covers(self.front, self.front + 1):
            self.scope.cancel()  # overtaken: what follows is there already
        else:
            self.partial.ahead_of(self)
        return len(data)

    def rate(self) -> float:
        """Bytes a second so far."""
        return (self.front - self.start) / max(trio.current_time() - self.began, 1e-6)


MAX_STREAMS = 3  # streams of one file at once (readers at different places)
# A stream that brought AHEAD_AFTER bytes at less than SLOW_LINK bytes a second, with
# AHEAD_MIN or more still to come, gets AHEAD_STREAMS more, each for its share of the
# rest: over a long round trip one connection's window grows slowly, three grow side
# by side (256 MiB at 20 ms: 114 MiB/s with one, 160-180 with two, 200 with three).
# Not on a fast link: the file is then hashed again at the end, as after a seek. (The
# first 8 MiB came at 35 MiB/s over a 20 ms link, at 156 through scripts/delayproxy.py,
# whose own CPU is the limit there, and at 242 on loopback.)
AHEAD_AFTER = 8 << 20
SLOW_LINK = 100 << 20
AHEAD_MIN = 32 << 20
AHEAD_STREAMS = 2
YIELD_AFTER = 4 << 20  # a stream delivers this much before another may displace it
RETRY_AFTER = 2.0  # seconds after a stream failed before a read may start another


class Partial:
    def __init__(self, streams: Streams, path: str, version: str, size: int, file: Path) -> None:
        self.streams = streams
        self.path, self.version, self.size, self.file = path, version, size, file
        self.wfd = os.open(file, os.O_WRONLY)
        self.have = Ranges()
        self.users = 0
        self.complete = size == 0  # every byte is there
        self.checked = False  # ... and compared with the version (see Streams.completed)
        self.closed = False  # the last user let go
        self.error: Exception | None = None  # why bytes cannot come (or came wrong)
        self.failed_at = -math.inf  # (trio clock) when a stream last ended in an error
        self._progress = trio.Event()
        self._running: list[_Stream] = []
        self.committed = False  # handed to the cache (or found wrong)
        self.started = 0  # streams started
        # A stream wrote the whole file from its start, and the remote checked its bytes
        # against the version as they came: with no other stream (`started`), no second
        # reading of the file to check them.
        self.checked_as_it_came = False
        self.ahead = False  # a stream ahead was started (once per file)

    def arrived(self, start: int, end: int) -> None:
        self.have.add(start, end)
        if self.have.covers(0, self.size):
            self.complete = True
            for st in self._running:  # nothing left to fetch
                if st.front < self.size:  # (one at the end ends by itself, checked)
                    st.scope.cancel()
        self._wake()

    def ahead_of(self, st: _Stream) -> None:
        """Start streams ahead of `st` if the link is slow (see SLOW_LINK); each
        stream ends where the next one began (see _Stream.write)."""
        rest = self.size - st.front
        if (
            self.ahead
            or rest < AHEAD_MIN
            or st.front - st.start < AHEAD_AFTER
            or len(self._running) + AHEAD_STREAMS > MAX_STREAMS
            or st.rate() >= SLOW_LINK
        ):
            return
        self.ahead = True
        for k in range(1, AHEAD_STREAMS + 1):
            at = st.front + rest * k // (AHEAD_STREAMS + 1)
            self._start(at - at % (1 << 20), ahead=True)

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _usable(self) -> None:
        if self.closed:
            raise FsError(errno.EIO, f"{self.path}: the download was closed")
        if self.complete and self.error is not None:  # complete, but found wrong
            raise FsError(errno.EIO, f"{self.path}: {self.error}")

    async def ready(self, offset: int, length: int) -> None:
        """Wait until bytes [offset, offset+length) (clipped to the file) are there;
        raise the remote's error if they cannot come.

        A read fails, rather than start another stream, once a stream failed while it
        waited (its own, or one it was waiting on), and for RETRY_AFTER after any
        stream failed: the kernel retries a failed read-ahead page by page, and each of
        those reads would otherwise start a stream of its own, so a server that stops
        after n bytes of every answer would keep `cat` going forever, n bytes and one
        timeout at a time (tests/security/test_hostile_mount.py)."""
        end = min(offset + length, self.size)
        tried = False
        began = trio.current_time()
        while True:
            self._usable()
            gap = None if self.complete else self.have.first_gap(offset, end)
            if gap is None:
                return
            if not any(st.front <= gap < st.front + NEAR for st in self._running):
                if self.error is not None and (
                    tried
                    or self.failed_at >= began
                    or trio.current_time() - self.failed_at < RETRY_AFTER
                ):
                    raise self._failure()
                if self._start(gap):
                    tried = True
            await self._progress.wait()

    def _failure(self) -> Exception:
        e = self.error
        return e if isinstance(e, RemoteError | OSError | FsError) else FsError(errno.EIO, str(e))

    async def finished(self) -> None:
        """Wait until the whole file is there and checked (a copy of it is about to be
        made: it must never start from wrong bytes)."""
        await self.ready(0, self.size)
        while not self.checked:
            self._usable()
            if not self._running and not self.committed:
                await self.streams.completed(self)
                continue
            await self._progress.wait()
        self._usable()

    def _start(self, offset: int, *, ahead: bool = False) -> bool:
        """Start a stream at `offset`; False (wait and see) when every slot is taken by
        a stream that has not yet delivered its share (displacing it would let readers
        at far-apart places cancel each other forever)."""
        if len(self._running) >= MAX_STREAMS:
            oldest = self._running[0]
            if oldest.front - oldest.start < YIELD_AFTER:
                return False
            oldest.scope.cancel()
            del self._running[0]
        st = _Stream(self, offset, ahead=ahead)
        self.started += 1
        self._running.append(st)
        self.error = None
        self.streams.spawn(self._run, st)
        return True

    async def _run(self, st: _Stream) -> None:
        try:
            with st.scope:
                got = await self.streams.remote.read(
                    self.path, cast(BinaryIO, st), version=self.version, offset=st.start
                )
                whole = st.start == 0 and st.front == self.size
                if got.checked and whole and got.version == self.version:
                    self.checked_as_it_came = True  # (vouches alone: see completed())
                if not self.complete and st.front < self.size:
                    raise ProtocolError(
                        f"{self.path}: the answer ended at byte {st.front} of {self.size}"
                    )
                self.streams.health.ok()
        except RemoteError as e:
            log.info("reading %r from %d: %s", self.path, st.start, e)
            # A stream ahead failed no reader (one who gets there starts its own);
            # complete: the bytes are all here, and completed() checks them.
            if not st.ahead:
                if not self.complete:
                    self._failed(e)
                self.streams.health.failed(e)
        except Exception as e:  # a local disk error: this read fails, not the mount
            self._failed(e)
            log.warning("reading %r from %d: %r", self.path, st.start, e)
        finally:
            os.close(st.fd)
            if st in self._running:
                self._running.remove(st)
            self._wake()  # readers go on, or see the error
        if self.complete and not self._running:
            await self.streams.completed(self)

    def _failed(self, e: Exception) -> None:
        self.error = e
        self.failed_at = trio.current_time()

    def release(self) -> None:
        """An open file of it let go (see Streams.release)."""
        self.streams.release(self)

    def close(self) -> None:
        self.closed = True
        for st in self._running:
            st.scope.cancel()
        self._running.clear()
        os.close(self.wfd)
        self._wake()


class Streams(TaskHost):
    """The partial downloads, by (path, version); their streams run under `run`."""

    def __init__(self, remote: Remote, cache: ContentCache, health: Health) -> None:
        super().__init__()
        self.remote, self.cache, self.health = remote, cache, health
        self._partials: dict[tuple[str, str], Partial] = {}

    def open(self, path: str, version: str, size: int) -> tuple[int, Partial]:
        """A read-only descriptor of (path, version) filling as it arrives."""
        key = (path, version)
        partial = self._partials.get(key)
        if partial is None:
            file = self.cache.temp_path()
            with file.open("wb") as f:
                f.truncate(size)  # sparse: no blocks until written
            partial = self._partials[key] = Partial(self, path, version, size, file)
        fd = os.open(partial.file, os.O_RDONLY)
        partial.users += 1
        return fd, partial

    async def completed(self, partial: Partial) -> None:
        """Every byte is there: it becomes a cache entry (descriptors stay valid), once
        its content is checked against its version where versions are content hashes.
        (A complete file outlives its last user until this is done.)"""
        if partial.committed:
            return
        partial.committed = True
        derived = None
        if not (partial.checked_as_it_came and partial.started == 1):
            try:
                digest = await trio.to_thread.run_sync(_sha256_of, partial.file)
            except OSError as e:
                partial.error = e
                partial.file.unlink(missing_ok=True)
                return
            finally:
                partial._wake()
            derived = self.remote.version_of(digest)
        if derived is not None and derived != partial.version:
            partial.error = ProtocolError(
                f"content of {partial.path!r} does not match its version {partial.version}"
            )
            log.error("%s: not cached", partial.error.message)
            partial.file.unlink(missing_ok=True)
        else:
            partial.error = None  # (an earlier stream's failure no longer matters)
            partial.checked = True
            try:
                if self.cache.commit(partial.file, partial.path, partial.version):
                    partial.file = self.cache.cached_path(partial.path, partial.version)
            except OSError as e:  # (the cache's disk): the open descriptors still read it
                log.warning("%s: not cached: %r", partial.path, e)
                partial.file.unlink(missing_ok=True)
        partial._wake()

    def release(self, partial: Partial) -> None:
        """One user (an open file) let go; the last one ends the download."""
        partial.users -= 1
        if partial.users > 0:
            return
        key = (partial.path, partial.version)
        if self._partials.get(key) is partial:
            del self._partials[key]
        partial.close()
        if not partial.complete:  # (a complete one is completed()'s: cached or removed)
            partial.file.unlink(missing_ok=True)


def _sha256_of(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
