"""Empty files made ahead of need, in a worker thread: the spools that create() and
open(O_TRUNC) start (files.py).

Making a file is the one step of those that can be slow: on ext4 without a journal (as
on many cloud VMs) the inode allocator skips, one lookup each, every inode freed in the
last minutes, so after a large delete (the previous cache removed, say) a create(2)
took 100-400 µs instead of 3. On the trio thread, which answers every FUSE request,
that was a fifth of `cp -r`'s time. Here they are made a batch at a time in a worker
thread, before they are asked for. (A read-ahead batch takes files much faster than one
per millisecond: there, files made ahead only added a thread making files at once.)
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from pathlib import Path

import trio

SIZE = 64  # files kept ready (refilled at half); cp -r takes about one per millisecond


def make_file(directory: Path) -> Path:
    """A new empty file of ours (0600)."""
    path = directory / uuid.uuid4().hex
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


class ReadyFiles:
    """Up to `size` empty files in `directory`, made ahead while `run` runs."""

    def __init__(self, directory: Path, size: int = SIZE) -> None:
        self.directory = directory
        self.size = size
        self._ready: deque[Path] = deque()
        self._low = trio.Event()  # refill: set while fewer than half are ready
        self._running = False

    def paths(self) -> list[Path]:
        """The files ready now."""
        return list(self._ready)

    def take(self) -> Path:
        """An empty file, now the caller's: a ready one, or (none left, or no
        refilling task) one made now. (Trio thread.)"""
        taken = self._ready.popleft() if self._ready else None
        if self._running and len(self._ready) <= self.size // 2:
            self._low.set()
        return taken if taken is not None else make_file(self.directory)

    async def run(self) -> None:
        """The refilling task (with the mount's others); the files left go with it."""
        self._running = True
        try:
            while True:
                want = self.size - len(self._ready)
                if want > 0:
                    self._ready.extend(await trio.to_thread.run_sync(self._make, want))
                await self._low.wait()
                self._low = trio.Event()
        finally:
            self._running = False
            self.close()

    def close(self) -> None:
        """Delete the files no one took."""
        while self._ready:
            self._ready.popleft().unlink(missing_ok=True)

    def _make(self, count: int) -> list[Path]:
        """Worker thread. Stops early (keeping what it made) when the disk refuses."""
        made: list[Path] = []
        try:
            for _ in range(count):
                made.append(make_file(self.directory))
        except OSError:
            pass  # (take() makes its own, and meets the error where it is reported)
        return made
