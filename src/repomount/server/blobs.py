"""Content-addressed blob files on local disk.

A blob lives at `blobs/<first two hex digits>/<sha256>`. Uploads are spooled into `tmp/`
(same filesystem), made durable, then renamed into place, and the renames are made
durable before `add` returns, so a blob path either does not exist or holds exactly the
content its name promises, even after a crash or power loss mid-upload. Anything left in
`tmp/` by a crash is removed when the store opens.

A few blobs are made durable one by one: an fsync of each file before its rename, one
of each directory touched after all renames. A group of SYNCFS_FROM or more new blobs
costs two `syncfs(2)` of the store's filesystem instead, one before the renames (every
file's data) and one after (every rename), however many blobs and directories: an
fsync costs a journal commit, about as much as a syncfs when little else on the
filesystem is waiting to be written. Where syncfs is missing, or reports an error, the
group falls back to the fsyncs.

A blob's mtime is when it was last uploaded: storing one again (or finding it with
`keep`) refreshes it, so that the garbage collector (server/gc.py), which removes only
unreferenced blobs older than its grace period, leaves an upload alone while its commit
is on the way. `_lock` makes "found, refreshed" and "old, removed" exclusive.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from repomount.server import libc, writeout
from repomount.server.store import BlobSpool

SHA256_RE = re.compile(r"[0-9a-f]{64}")
SYNCFS_FROM = 4  # new blobs in one `add` from which two syncfs replace the fsyncs
SPOOL_BUFFER = 1 << 20  # a spool's write buffer, unless its content is known to be smaller
SPOOL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class BlobDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()  # a blob's refresh vs its removal by the GC
        # Leftover spools are uploads that never completed: drop them.
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Per-blob paths are strings joined by hand: building Paths cost more than the
        # system calls on them for a pack of small blobs.
        self._blobs = os.fspath(self.blobs)
        self._tmp = os.fspath(self.tmp)
        self._spool_numbers = itertools.count()  # (its next() is atomic: any thread)

    def path(self, sha256: str) -> Path:
        return Path(self._file(sha256))

    def _file(self, sha256: str) -> str:
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return f"{self._blobs}/{sha256[:2]}/{sha256}"

    def new_spool(self, size: int | None = None) -> BlobSpool:
        """An empty spool file in tmp/, named by a counter (tmp/ is this store's alone,
        emptied when it opens). Its buffer keeps each write cheap when it is called from
        the event loop with small network chunks: 1 MiB, or the content's `size` when
        that is smaller (a small pack member then costs one write(2) and no 1 MiB
        allocation)."""
        while True:
            name = f"{self._tmp}/upload-{next(self._spool_numbers)}"
            try:
                fd = os.open(name, SPOOL_FLAGS, 0o600)
                break
            except FileExistsError:  # (not left by this store: take the next number)
                continue
        buffering = SPOOL_BUFFER if size is None else max(1, min(size, SPOOL_BUFFER))
        file = io.BufferedWriter(io.FileIO(fd, "wb"), buffering)
        return BlobSpool(name, file, write_out=writeout.start_write_out)

    def discard(self, spool: BlobSpool) -> None:
        """Remove a spool no blob comes from: its file first, since closing it flushes
        its buffer, which fails on a full disk (and left the file behind, holding the
        disk full after the upload that filled it)."""
        try:
            os.unlink(spool.name)
        except FileNotFoundError:
            pass
        try:
            spool.file.close()
        except OSError:  # (bytes no one wants: not written)
            pass

    def add(self, spools: Sequence[BlobSpool]) -> list[bool]:
        """Move finished spools (open, or closed once filled) into place; True for each
        blob that was new. Durable when it returns (see the module docstring)."""
        added = [False] * len(spools)
        new: list[tuple[BlobSpool, str]] = []
        for index, spool in enumerate(spools):
            target = self._file(spool.sha256)
            if self._refresh(target):
                self.discard(spool)
                continue
            new.append((spool, target))
            added[index] = True
        if not new:
            return added
        grouped = False
        if len(new) >= SYNCFS_FROM:
            for spool, _ in new:
                spool.close()  # its data in the page cache, for the syncfs to write
            grouped = _syncfs(self.root)
        if not grouped:
            for spool, _ in new:
                _fsync_spool(spool)
        touched: set[str] = set()  # shard directories, then blobs/ when one is new
        for spool, target in new:
            shard = target[: -len(spool.sha256) - 1]
            try:
                os.replace(spool.name, target)
            except FileNotFoundError:  # its shard directory is not made yet
                try:
                    os.mkdir(shard, 0o700)
                except FileExistsError:  # (made meanwhile, by another upload)
                    pass
                touched.add(self._blobs)
                os.replace(spool.name, target)
            touched.add(shard)
        if not (grouped and _syncfs(self.root)):
            shards = touched - {self._blobs}
            for directory in [*shards, *(touched - shards)]:  # (blobs/ last)
                _fsync_dir(directory)
        return added

    def size(self, sha256: str) -> int | None:
        """The blob's size, None when it is not stored."""
        if not SHA256_RE.fullmatch(sha256):
            return None
        try:  # (once per write of a commit)
            return os.stat(f"{self._blobs}/{sha256[:2]}/{sha256}").st_size
        except FileNotFoundError:
            return None

    def open(self, sha256: str) -> BinaryIO:
        return open(self._file(sha256), "rb")

    def keep(self, sha256: str) -> bool:
        """Whether the blob is stored; if so its mtime is now, as if uploaded again."""
        return bool(SHA256_RE.fullmatch(sha256)) and self._refresh(self._file(sha256))

    def _refresh(self, target: str) -> bool:
        with self._lock:
            try:
                os.utime(target)
            except FileNotFoundError:
                return False
            return True

    def scan(self) -> Iterator[tuple[str, int, float]]:
        """(SHA-256, size, mtime) of every stored blob; a file not named by a SHA-256
        in its own shard directory is no blob, never listed (so never collected)."""
        with os.scandir(self.blobs) as shards:
            for shard in shards:
                if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as files:
                    for file in files:
                        if not SHA256_RE.fullmatch(file.name) or file.name[:2] != shard.name:
                            continue
                        try:
                            st = file.stat(follow_symlinks=False)
                        except FileNotFoundError:  # removed meanwhile
                            continue
                        yield file.name, st.st_size, st.st_mtime

    def remove_if_older(self, sha256: str, cutoff: float) -> int | None:
        """Delete the blob if it was last uploaded before `cutoff`; its size then, else
        None (refreshed meanwhile, or gone already)."""
        target = self._file(sha256)
        with self._lock:
            try:
                st = os.stat(target)
                if st.st_mtime >= cutoff:
                    return None
                os.unlink(target)
            except FileNotFoundError:
                return None
            return st.st_size


def _fsync_spool(spool: BlobSpool) -> None:
    """Flush, fsync and close a spool's file (reopened when it was closed already)."""
    if spool.file.closed:
        fd = os.open(spool.name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        spool.file.flush()
        os.fsync(spool.file.fileno())
        spool.file.close()


def _find_syncfs() -> Callable[[int], None] | None:
    """syncfs(2) of the filesystem holding a descriptor, raising OSError on failure:
    `os.syncfs` where Python has it, else the C library's; None where neither exists."""
    syncfs: Callable[[int], None] | None = getattr(os, "syncfs", None)
    if syncfs is not None:
        return syncfs
    libc_syncfs = libc.function("syncfs", [ctypes.c_int])
    if libc_syncfs is None:
        return None

    def call(fd: int) -> None:
        if libc_syncfs(fd) != 0:  # (ctypes releases the GIL for the call)
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return call


SYNCFS = _find_syncfs()


def _syncfs(path: Path) -> bool:
    """Write out every dirty page and all metadata of the filesystem holding `path`;
    False when that cannot be done (no syncfs here) or failed (the caller fsyncs)."""
    if SYNCFS is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        SYNCFS(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
