"""A SHA-256 computed in a worker thread while its bytes are still coming.

A file written from empty in order (vfs/fileio.py) hands its bytes over as they pass.
Once `BATCH` bytes are queued a worker thread hashes them (hashlib lets go of the GIL),
so the event loop only queues, and the digest is ready about when the last byte is. One
batch is hashed at a time, in order. The feeder waits only when the thread falls `LAG`
bytes behind, which bounds the bytes held. A short stream never leaves the loop: its few
bytes are hashed there when the digest is asked for.
"""

from __future__ import annotations

import hashlib

import outcome
import trio

BATCH = 2 << 20  # queued bytes that make a batch for the thread
LAG = 16 << 20  # queued and in-thread bytes at most; past that the feeder waits
HERE_MAX = 1 << 20  # a remainder up to this is hashed on the loop (less than a hop)


class SideHash:
    def __init__(self) -> None:
        self.size = 0  # bytes fed
        self._hash = hashlib.sha256()
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._batch: trio.Event | None = None  # set when the batch in the thread is done
        self._batch_bytes = 0
        self._failed: BaseException | None = None
        self._finishing = False  # no more bytes: queue the rest at once
        self._dropped = False
        self._token = trio.lowlevel.current_trio_token()

    @property
    def started(self) -> bool:
        """Whether a batch went to the thread (a stream shorter than BATCH never does)."""
        return self._batch is not None or self.size > self._queued_bytes

    async def feed(self, chunk: bytes) -> None:
        """The stream's next bytes (kept, not copied: they must not change)."""
        if not chunk:
            return
        self._queued.append(chunk)
        self._queued_bytes += len(chunk)
        self.size += len(chunk)
        if self._queued_bytes < BATCH:
            return
        while self._batch is not None and self._queued_bytes + self._batch_bytes > LAG:
            await self._batch.wait()
        if self._batch is None:
            self._start()

    def finish_soon(self) -> None:
        """No more bytes come: all that is queued goes to the thread now, not when the
        digest is asked for (a closed file's bytes are not held until its upload)."""
        self._finishing = True
        if self._batch is None and self._queued_bytes:
            self._start()

    def drop(self) -> None:
        """Not wanted any more: let go of the queued bytes (a batch in the thread ends
        on its own)."""
        self._dropped = True
        self._queued.clear()
        self._queued_bytes = 0

    async def hexdigest(self) -> str:
        """The digest of every byte fed."""
        assert not self._dropped
        while self._batch is not None:
            await self._batch.wait()
        if self._failed is not None:
            raise self._failed
        rest, self._queued, self._queued_bytes = self._queued, [], 0
        if sum(map(len, rest)) > HERE_MAX:
            await trio.to_thread.run_sync(_update, self._hash, rest)
        else:
            _update(self._hash, rest)
        return self._hash.hexdigest()

    def _start(self) -> None:
        batch, self._queued, self._queued_bytes = self._queued, [], 0
        done = self._batch = trio.Event()
        self._batch_bytes = sum(map(len, batch))

        def deliver(result: outcome.Outcome[None]) -> None:  # (in the worker thread)
            try:
                self._token.run_sync_soon(self._done, done, result)
            except trio.RunFinishedError:
                pass  # the loop is gone, and with it everyone who waited

        trio.lowlevel.start_thread_soon(lambda: _update(self._hash, batch), deliver)

    def _done(self, done: trio.Event, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):
            self._failed = self._failed or result.error
        self._batch = None
        self._batch_bytes = 0
        done.set()
        if self._dropped or self._failed is not None:
            return
        if self._queued_bytes >= BATCH or (self._finishing and self._queued_bytes):
            self._start()


def _update(digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
