"""The overlay: local intent the remote has not acknowledged yet.

It owns the journal (the durable rows of pending changes and their content files, the
"blobs") and, per inode, the blob holding the file's newest closed content. Nobody else
names a blob: readers get a descriptor from `open_pending`, taken in the same step that
found the file, so a blob deleted once nothing needs it (linked into the content cache
when its upload landed) never breaks a reader that already has it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from repomount.vfs.files import copy_fd
from repomount.vfs.journal import Journal


class Overlay:
    def __init__(self, state_dir: Path) -> None:
        self.journal = Journal(state_dir)
        self._pending: dict[int, str] = {}  # ino -> blob of its newest closed content
        self._owner: dict[str, int] = {}  # the reverse: blob -> ino

    # ------------------------------------------------------------------ per-inode content

    def pending_blob(self, ino: int) -> str | None:
        return self._pending.get(ino)

    def set_pending_blob(self, ino: int, blob: str | None) -> None:
        old = self._pending.pop(ino, None)
        if old is not None and self._owner.get(old) == ino:
            del self._owner[old]
        if blob is not None:
            self._pending[ino] = blob
            self._owner[blob] = ino

    def owner_of(self, blob: str) -> int | None:
        """The inode whose newest closed content `blob` is, if any."""
        return self._owner.get(blob)

    def open_pending(self, ino: int) -> int | None:
        """A read-only descriptor of the inode's pending content, or None."""
        blob = self._pending.get(ino)
        if blob is None:
            return None
        try:
            return os.open(self.journal.blob_path(blob), os.O_RDONLY)
        except FileNotFoundError:  # uploaded (and deleted, linked into the cache) meanwhile
            return None

    def new_blob_from(self, src_fd: int) -> str:
        """A new blob holding a copy of `src_fd` (worker thread)."""
        name = self.journal.new_blob_name()
        fd = os.open(self.journal.blob_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            copy_fd(src_fd, fd)
        finally:
            os.close(fd)
        return name

    def drop_local_blob(self, ino: int) -> None:
        """A local-only file's content file goes, unless a journal row still sends it."""
        blob = self._pending.get(ino)
        self.set_pending_blob(ino, None)
        if blob is not None and not self.journal.uses_blob(blob):
            self.journal.blob_path(blob).unlink(missing_ok=True)

    def take_uploaded(self, blob: str, ids: Iterable[int]) -> Path | None:
        """The upload of `blob` (rows `ids`) landed: its file, if nothing else pending
        still needs it under its name, for the caller to link into the cache (which
        copes with a file gone meanwhile)."""
        if self.journal.uses_blob(blob, excluding=set(ids)):
            return None
        return self.journal.blob_path(blob)  # (gone meanwhile: link_in says so)

    def close(self) -> None:
        self.journal.close()
