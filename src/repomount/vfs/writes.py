"""Working copies of files being written (spools), one per inode, shared by its handles.

POSIX wants every descriptor of a file to see the others' writes, so the spool belongs
to the inode, not the handle. On close the spool is frozen: renamed into the journal as
the content of a pending write (no copy), and a later write starts a new spool from it.
Spools live in the state directory, next to the journal, so that rename is atomic.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from repomount.vfs.content import COPY_CHUNK


@dataclass
class Spool:
    path: Path
    fd: int
    dirty: bool = False
    frozen: bool = False  # its file belongs to the journal now: read it, never write it


class WriteState:
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        for leftover in spool_dir.iterdir():  # never closed, so never promised to anyone
            leftover.unlink(missing_ok=True)
        self._spools: dict[int, Spool] = {}
        # ino -> journal blob holding its newest closed content, until the remote has it
        self._pending: dict[int, str] = {}
        # The version whose pages the kernel holds for an inode, to decide keep_cache.
        self._kernel_versions: dict[int, str | None] = {}

    def get(self, ino: int) -> Spool | None:
        return self._spools.get(ino)

    def dirty(self, ino: int) -> bool:
        s = self._spools.get(ino)
        return s is not None and s.dirty

    def dirty_inos(self) -> list[int]:
        return [ino for ino, s in self._spools.items() if s.dirty]

    def new_spool_file(self, copy_from: Path | None) -> Path:
        """A fresh spool file: a copy of `copy_from`, or empty (runs in a worker thread)."""
        spool = self.spool_dir / uuid.uuid4().hex
        if copy_from is None:
            spool.touch()
        else:
            with copy_from.open("rb") as src, spool.open("wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
        return spool

    def adopt(self, ino: int, path: Path) -> Spool:
        self.close(ino)
        spool = Spool(path, os.open(path, os.O_RDWR))
        self._spools[ino] = spool
        return spool

    def freeze(self, ino: int, dest: Path) -> Spool:
        """Hand the spool's file to the journal at `dest`; keep reading it from there."""
        spool = self._spools[ino]
        os.rename(spool.path, dest)
        spool.path = dest
        spool.frozen = True
        spool.dirty = False
        return spool

    def close(self, ino: int) -> None:
        """Forget the spool; its file goes too unless the journal owns it."""
        spool = self._spools.pop(ino, None)
        if spool is not None:
            os.close(spool.fd)
            if not spool.frozen:
                spool.path.unlink(missing_ok=True)

    def pending_blob(self, ino: int) -> str | None:
        return self._pending.get(ino)

    def set_pending_blob(self, ino: int, blob: str | None) -> None:
        if blob is None:
            self._pending.pop(ino, None)
        else:
            self._pending[ino] = blob

    def kernel_version(self, ino: int) -> str | None:
        return self._kernel_versions.get(ino)

    def set_kernel_version(self, ino: int, version: str | None) -> None:
        if version is None:
            self._kernel_versions.pop(ino, None)
        else:
            self._kernel_versions[ino] = version

    def close_all(self) -> None:
        for ino in list(self._spools):
            self.close(ino)
