"""Open files: the one owner of a file's working content while descriptors are open.

POSIX wants every descriptor of a file to see the others' writes, so the content an open
file reads and writes belongs to the inode, not to the handle: one `OpenFile` per inode,
shared by its handles, holding one descriptor of the current content:

- a *spool*: our own writable copy in the state directory (made on the first write);
- a *frozen* spool: one that a close() handed to the journal as a pending write (renamed
  into `blobs/`, no copy); it stays readable through its descriptor wherever the journal
  or the cache moves its file, and the next write copies it into a new spool;
- or a read-only descriptor of the file's pending or cached content.

Every copy starts from a descriptor, never from a path: a path may be moved by another
task (an uploaded blob is linked into the cache and deleted) between an await and an open.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from repomount.sidehash import SideHash
from repomount.vfs.partial import Partial
from repomount.vfs.readyfiles import ReadyFiles
from repomount.vfs.sparse import Sparse
from repomount.vfs.staging import Staging

COPY_CHUNK = 1 << 20


def fill_spool(fd: int, src: int | None, length: int) -> None:
    """Worker thread: a new spool becomes a copy of `src`, or `length` bytes of holes."""
    if src is not None:
        copy_fd(src, fd)
    elif length:
        os.ftruncate(fd, length)


def copy_fd(src: int, dst: int) -> None:
    """Copy the whole of `src` (from offset 0) into `dst` (at offset 0), in the kernel
    where it can. Runs in a worker thread."""
    offset = 0
    try:
        while n := os.copy_file_range(src, dst, COPY_CHUNK * 8, offset, offset):
            offset += n
        return
    except OSError:  # another filesystem without support: fall back to reading
        pass
    while chunk := os.pread(src, COPY_CHUNK, offset):
        os.pwrite(dst, chunk, offset)
        offset += len(chunk)


@dataclass(eq=False)
class OpenFile:
    fd: int  # the current content, for every handle of the inode
    path: Path | None = None  # the spool's file, while it is ours (not frozen)
    dirty: bool = False  # written since the last freeze
    # Content still arriving (a large file read while it downloads): reads wait for
    # their bytes, copies for all of them.
    partial: Partial | None = None
    # Edits of a content never fetched (sparse.py): only these bytes are there.
    sparse: Sparse | None = None
    # Bytes of a spool written from empty in order (appends only); None once it is
    # written any other way. Past sidehash.BATCH its SHA-256 is made in a thread as it
    # grows (`appended`): its close needs no second reading of it.
    in_order: int | None = None
    appended: SideHash | None = None
    # Up to inorder.SMALL_HASHED bytes, its SHA-256 is made from the bytes as they are
    # written (a save of a small file is not read back to be hashed before it is sent).
    small: hashlib._Hash | None = None
    # Past staging.STAGE_AFTER such a spool is uploaded as it grows (staging.py).
    staging: Staging | None = None

    def start_in_order(self) -> None:
        """The spool is empty: count (and later hash) what is appended to it."""
        self.stop_hashing()
        self.in_order = 0
        self.small = hashlib.sha256()

    def stop_hashing(self) -> None:
        """No longer written from empty in order: its running hash and staged upload
        stop (the blob is hashed and uploaded whole when sent)."""
        self.in_order = None
        self.small = None
        if self.appended is not None:
            self.appended.drop()
            self.appended = None
        if self.staging is not None:
            self.staging.cancel()
            self.staging = None

    @property
    def writable(self) -> bool:
        return self.path is not None


class Files:
    """ino -> OpenFile, for inodes with open handles (or a spool being made)."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in spool_dir.iterdir():  # never closed, so never promised to anyone
            leftover.unlink(missing_ok=True)
        self._open: dict[int, OpenFile] = {}
        self.ready = ReadyFiles(spool_dir)

    def get(self, ino: int) -> OpenFile | None:
        return self._open.get(ino)

    def dirty(self, ino: int) -> bool:
        f = self._open.get(ino)
        return f is not None and f.dirty

    def dirty_inos(self) -> list[int]:
        return [ino for ino, f in self._open.items() if f.dirty]

    def set_content(self, ino: int, fd: int, partial: Partial | None = None) -> OpenFile:
        """Read-only content for an inode opened without writing."""
        assert ino not in self._open
        f = self._open[ino] = OpenFile(fd, partial=partial)
        return f

    def new_spool(self) -> tuple[Path, int]:
        """A fresh empty spool file, open (trio thread: made ahead, readyfiles.py)."""
        path = self.ready.take()
        try:  # (made again should someone have deleted it: the name is ours alone)
            return path, os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @staticmethod
    def discard_spool(path: Path, fd: int) -> None:
        """A new spool never adopted (its filling failed or was cancelled)."""
        os.close(fd)
        path.unlink(missing_ok=True)

    def adopt_spool(self, ino: int, path: Path, fd: int) -> OpenFile:
        """Make a new spool the inode's content (its previous descriptor is closed)."""
        old = self._open.get(ino)
        if old is None:
            f = self._open[ino] = OpenFile(fd, path)
            return f
        self._drop_file(old)
        old.fd, old.path, old.dirty = fd, path, False
        return old

    def freeze(self, ino: int, dest: Path) -> None:
        """Hand the spool's file to the journal at `dest`; keep reading it via its fd."""
        f = self._open[ino]
        assert f.path is not None
        os.rename(f.path, dest)
        f.path = None
        f.dirty = False

    def thaw(self, ino: int, frozen: Path, spool: Path) -> None:
        """Undo `freeze(ino, frozen)`, whose spool was `spool` (the journal could not
        take it): the spool is ours again, written and not yet journaled."""
        f = self._open[ino]
        os.rename(frozen, spool)
        f.path = spool
        f.dirty = True

    def close(self, ino: int) -> None:
        """The last handle went: forget the content; a spool's file goes too."""
        f = self._open.pop(ino, None)
        if f is not None:
            self._drop_file(f)

    def _drop_file(self, f: OpenFile) -> None:
        f.stop_hashing()
        if f.partial is not None:
            f.partial.release()
            f.partial = None
        os.close(f.fd)
        if f.path is not None:
            f.path.unlink(missing_ok=True)

    def close_all(self) -> None:
        for ino in list(self._open):
            self.close(ino)
