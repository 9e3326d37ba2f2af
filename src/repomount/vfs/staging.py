"""Uploads that begin while a large file is still being written (`Remote.stage`).

A file written from empty, in order (the spool's `in_order` count), that passes
STAGE_AFTER bytes starts streaming to the remote as it grows, following the writer:
its upload overlaps the writing instead of starting when the file is closed (or
fsynced) and sent. Any other change to the file (a write elsewhere, a hole, a truncate)
or the last handle going without a freeze cancels it: the file is then uploaded with
its change, as any other.

When the file is frozen into the journal as a blob (close, fsync), its upload is told
the final size, sends the rest and ends; the flusher then `take`s it for that blob. The
remote names the content by the SHA-256 of what it received, and a staged upload counts
only when that equals the blob's own digest: a change never names bytes other than the
ones it carries. An upload that failed, was cancelled or differs is simply not used
(the change uploads its content itself). At most AT_ONCE run at a time; a file past
that is not staged.

This module owns the staged uploads: by spool while the file is written, then by blob.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import trio

from repomount.remotes.base import Remote, RemoteError
from repomount.threadcall import ThreadCall
from repomount.vfs.taskhost import TaskHost

log = logging.getLogger(__name__)

STAGE_AFTER = 8 << 20  # a file written in order starts uploading past this many bytes
AT_ONCE = 2  # staged uploads running at a time
PIECE = 1 << 20  # read from the spool (in a worker thread) and sent this much at a time


class Staging:
    """One upload following one spool. What it reads to send it also hashes (in the
    same worker-thread call), so the file's digest needs no reading of its own: it
    stands in for the file's running hash (sidehash.py) once the upload starts."""

    def __init__(self, fd: int, written: int) -> None:
        self.fd = os.dup(fd)  # (the spool's inode, under whatever name it takes)
        self.written = written  # bytes of the spool complete so far
        self.final: int | None = None  # its size once frozen: the upload ends there
        self.sha256: str | None = None  # what the remote named it, once uploaded
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self._more = trio.Event()
        self._hash = hashlib.sha256()  # of the bytes read (and sent) so far: `_hashed`
        self._hashed = 0
        self._ahead: ThreadCall[bytes] | None = None  # the next piece, being read

    @property
    def size(self) -> int:
        """The file's size once frozen (Digests asks only then)."""
        assert self.final is not None
        return self.final

    async def hexdigest(self) -> str:
        """The SHA-256 of the file's bytes, as read to send them; OSError when the
        upload ended before it read them all (the blob is then hashed from disk)."""
        await self.done.wait()
        if self.final is None or self._hashed != self.final:
            raise OSError(f"the staged upload read {self._hashed} of {self.final} bytes")
        return self._hash.hexdigest()

    def drop(self) -> None:
        """(Its digest not wanted: the upload is the Stager's to end.)"""

    def wrote(self, size: int) -> None:
        self.written = size
        self._more.set()

    def finish(self, size: int) -> None:
        self.final = self.written = size
        self._more.set()

    def cancel(self) -> None:
        self.scope.cancel()

    def _read_piece(self, size: int) -> bytes:
        """The next `size` bytes, hashed (worker thread; one at a time)."""
        piece = os.pread(self.fd, size, self._hashed)
        if len(piece) != size:  # (cut short behind our back: not this content)
            raise OSError(f"staged spool gave {len(piece)} of {size} bytes")
        self._hash.update(piece)
        self._hashed += size
        return piece

    def _ready(self) -> int:
        """How much to read next: a PIECE once written (a writer's small writes are not
        a thread hop each), the rest once frozen; 0 for nothing yet."""
        ready = self.written - self._hashed
        if ready >= PIECE or (ready > 0 and self.final is not None):
            return min(PIECE, ready)
        return 0

    def _read_ahead(self) -> None:
        """Start reading the next piece in a worker thread, if one is ready."""
        size = self._ready()
        if size:
            self._ahead = ThreadCall(functools.partial(self._read_piece, size))

    async def settled(self) -> None:
        """Once no read of the spool is under way (its descriptor may then close)."""
        if self._ahead is not None:
            await self._ahead.settled()

    async def body(self) -> AsyncIterator[bytes]:
        """The spool's bytes as they are written, until its final size. The next piece
        is read (and hashed) in a worker thread while the one before it is sent, so
        neither waits for the other."""
        await self.settled()  # (a retry starts over)
        self._hash, self._hashed, self._ahead = hashlib.sha256(), 0, None
        while True:
            if self._ahead is None:
                self._read_ahead()
            if self._ahead is not None:
                piece = await self._ahead.result()
                self._ahead = None
                self._read_ahead()
                yield piece
            elif self.final is not None:
                return
            else:
                self._more = trio.Event()
                await self._more.wait()


class Stager(TaskHost):
    """The staged uploads; they run under `run`."""

    def __init__(self, remote: Remote) -> None:
        super().__init__()
        self.remote = remote
        self._free = AT_ONCE
        self._by_blob: dict[str, Staging] = {}
        self.started = self.used = 0  # (status, tests)

    def start(self, fd: int, written: int) -> Staging | None:
        """Stage the spool `fd` (`written` bytes so far), if the remote can and a slot
        is free; None otherwise."""
        if not self.running or self._free == 0:
            return None
        if not self.remote.capabilities.staged_upload:
            return None
        try:
            staging = Staging(fd, written)
        except OSError:  # (no descriptor to be had: uploaded at its flush)
            return None
        self._free -= 1
        self.started += 1
        self.spawn(self._upload, staging)
        return staging

    async def _upload(self, staging: Staging) -> None:
        body: Callable[[], AsyncIterator[bytes]] = staging.body
        try:
            with staging.scope:
                staging.sha256 = await self.remote.stage(body)
        except (RemoteError, OSError) as e:  # (the change uploads it itself)
            log.debug("staged upload failed: %s", e)
        except Exception:  # (never the mount's end: the change uploads it itself)
            log.exception("staged upload failed unexpectedly")
        finally:
            self._free += 1
            await staging.settled()
            os.close(staging.fd)
            staging.done.set()

    def bind(self, staging: Staging, blob: str, size: int) -> None:
        """The spool was frozen as `blob`, `size` bytes: the upload sends the rest."""
        staging.finish(size)
        self._by_blob[blob] = staging

    async def take(self, blob: str, sha256: str) -> bool:
        """Whether the remote has `blob` (whose digest is `sha256`) through its staged
        upload, waiting for that to end. Asked once per blob: later asks say False (a
        change sent again, say after the remote lost it, uploads it itself)."""
        staging = self._by_blob.pop(blob, None)
        if staging is None:
            return False
        await staging.done.wait()
        if staging.sha256 is None:
            return False
        if staging.sha256 != sha256:
            log.warning("staged upload of %s arrived as %s, not %s", blob, staging.sha256, sha256)
            return False
        self.used += 1
        return True

    def has(self, blob: str) -> bool:
        """Whether `blob` has a staged upload (not taken yet)."""
        return blob in self._by_blob

    def forget(self, blobs: list[str] | set[str]) -> None:
        """These blobs will not be sent (gone from the journal): stop their uploads."""
        for blob in blobs:
            staging = self._by_blob.pop(blob, None)
            if staging is not None:
                staging.cancel()

    def blobs(self) -> list[str]:
        return list(self._by_blob)
