"""The SHA-256 of a file being written in order, made in a worker thread as it grows.

A spool written from empty by appends only (vfs/fileio.py) tells this how far it has
been written. Each time another `BATCH` bytes are there, a worker thread reads them back
from the file (the page cache; through a descriptor of its own, so the spool may close)
and hashes them (hashlib lets go of the GIL). Nothing of the file is held in memory, and
the digest is ready about when the last byte is: its upload need not read it again. One
batch is hashed at a time, in order. The caller drops the hash as soon as the file is
written any other way (a rewrite, a truncate): bytes a batch read before that no longer
count for anything.
"""

from __future__ import annotations

import hashlib
import os

import outcome
import trio

BATCH = 2 << 20  # new bytes that make a batch for the thread
READ = 1 << 20  # bytes read back at a time


class SideHash:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = os.dup(fd)  # (OSError: none to be had; the caller goes on)
        self._hash = hashlib.sha256()
        self.size = 0  # bytes written so far, all of them in order
        self._hashed = 0  # bytes handed to batches
        self._batch: trio.Event | None = None  # set when the batch in the thread is done
        self._failed: BaseException | None = None
        self._finishing = False  # no more bytes: the rest goes at once
        self._dropped = False
        self._token = trio.lowlevel.current_trio_token()

    def wrote(self, size: int) -> None:
        """The file now holds `size` bytes, every one written in order."""
        self.size = size
        if self._batch is None and size - self._hashed >= BATCH:
            self._start()

    def finish_soon(self) -> None:
        """No more bytes come: the rest goes to the thread now, not when the digest is
        asked for."""
        self._finishing = True
        if self._batch is None:
            self._next()

    def drop(self) -> None:
        """Not wanted any more (a batch in the thread ends on its own)."""
        self._dropped = True
        if self._batch is None:
            self._close()

    async def hexdigest(self) -> str:
        """The digest of the file's `size` bytes."""
        assert not self._dropped
        self.finish_soon()
        while self._batch is not None:
            await self._batch.wait()
        if self._failed is not None:
            raise self._failed
        return self._hash.hexdigest()

    def _next(self) -> None:
        """After a batch (or at the finish): the next one, if it is due; else, once
        nothing more will come, the descriptor goes."""
        if self._failed is None and not self._dropped:
            left = self.size - self._hashed
            if left >= BATCH or (self._finishing and left > 0):
                self._start()
                return
        if self._finishing or self._dropped or self._failed is not None:
            self._close()

    def _start(self) -> None:
        fd, start, end = self._fd, self._hashed, self.size
        assert fd is not None
        self._hashed = end
        done = self._batch = trio.Event()

        def deliver(result: outcome.Outcome[None]) -> None:  # (in the worker thread)
            try:
                self._token.run_sync_soon(self._done, done, result)
            except trio.RunFinishedError:
                pass  # the loop is gone, and with it everyone who waited

        trio.lowlevel.start_thread_soon(lambda: _hash_range(self._hash, fd, start, end), deliver)

    def _done(self, done: trio.Event, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):
            self._failed = self._failed or result.error
        self._batch = None
        done.set()
        self._next()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _hash_range(digest: hashlib._Hash, fd: int, start: int, end: int) -> None:
    """Bytes [start, end) of `fd` into `digest` (worker thread)."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(READ, end - pos), pos)
        if not chunk:
            raise OSError(f"the file ended at byte {pos} of {end} while it was hashed")
        digest.update(chunk)
        pos += len(chunk)
