"""Empty spool files made ahead of need, in a worker thread.

Every create() and open(O_TRUNC) of a file starts a new spool, and making a file is the
one step of it that can be slow: on ext4 without a journal (as on many cloud VMs) the
inode allocator skips every inode freed in the last minutes, looking each one up, so
after a large delete a create(2) took 100-400 µs instead of 3. On the trio thread, which
answers every FUSE request, that was a quarter of `cp -r`'s time. The pool makes them in
a worker thread, a batch at a time, before they are asked for.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from pathlib import Path

import trio

SIZE = 64  # files kept ready (refilled at half); cp -r takes about one per millisecond


def make_spool(directory: Path) -> tuple[Path, int]:
    """A new empty file of ours, open for reading and writing."""
    path = directory / uuid.uuid4().hex
    return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)


class SpoolPool:
    def __init__(self, directory: Path, size: int = SIZE) -> None:
        self.directory = directory
        self.size = size
        self._ready: deque[tuple[Path, int]] = deque()
        self._low = trio.Event()  # refill: set while the pool is short
        self._running = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    def paths(self) -> list[Path]:
        return [path for path, _ in self._ready]

    def take(self) -> tuple[Path, int]:
        """An empty spool: a ready one, or (none left, or no refilling task) made now."""
        taken = self._ready.popleft() if self._ready else None
        if self._running and len(self._ready) <= self.size // 2:
            self._low.set()
        return taken if taken is not None else make_spool(self.directory)

    async def run(self) -> None:
        """The refilling task (with the mount's others); the files left go with it."""
        self._running = True
        try:
            while True:
                want = self.size - len(self._ready)
                if want > 0:
                    made = await trio.to_thread.run_sync(self._make, want)
                    self._ready.extend(made)
                await self._low.wait()
                self._low = trio.Event()
        finally:
            self._running = False
            self.close()

    def close(self) -> None:
        """Delete the files no one took."""
        while self._ready:
            path, fd = self._ready.popleft()
            os.close(fd)
            path.unlink(missing_ok=True)

    def _make(self, count: int) -> list[tuple[Path, int]]:
        """Worker thread. Stops early (keeping what it made) when the disk refuses."""
        made: list[tuple[Path, int]] = []
        try:
            for _ in range(count):
                made.append(make_spool(self.directory))
        except OSError:
            pass  # (take() makes its own, and reports the error where it happens)
        return made
