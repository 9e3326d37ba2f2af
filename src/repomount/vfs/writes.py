"""Working copies of files being written (spools), one per inode, shared by its handles.

POSIX wants every descriptor of a file to see the others' writes, so the spool belongs
to the inode, not the handle. A spool is dirty from its first write until the remote
acknowledged its content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from repomount.remotes.base import ExpectT, Write
from repomount.vfs.content import COPY_CHUNK, ContentCache
from repomount.vfs.nodes import Node


@dataclass
class Spool:
    path: Path
    fd: int
    dirty: bool = False


class WriteState:
    def __init__(self, cache: ContentCache) -> None:
        self._cache = cache
        self._spools: dict[int, Spool] = {}
        # The version whose pages the kernel holds for an inode, to decide keep_cache.
        self._kernel_versions: dict[int, str | None] = {}

    def get(self, ino: int) -> Spool | None:
        return self._spools.get(ino)

    def has(self, ino: int) -> bool:
        return ino in self._spools

    def dirty(self, ino: int) -> bool:
        s = self._spools.get(ino)
        return s is not None and s.dirty

    def dirty_inos(self) -> list[int]:
        return [ino for ino, s in self._spools.items() if s.dirty]

    def adopt(self, ino: int, path: Path) -> Spool:
        spool = Spool(path, os.open(path, os.O_RDWR))
        self._spools[ino] = spool
        return spool

    def make_write(self, spool: Spool, path: str, *, expect: ExpectT, mode: int | None) -> Write:
        """A Write of the spool's current content (hashing it; runs in a worker thread)."""
        h = hashlib.sha256()
        size = 0
        offset = 0
        while chunk := os.pread(spool.fd, COPY_CHUNK, offset):
            h.update(chunk)
            size += len(chunk)
            offset += len(chunk)
        return Write(
            path, spool.path, size, h.hexdigest(), expect, key=os.urandom(16).hex(), mode=mode
        )

    def copy_out(self, spool: Spool, dest: Path) -> None:
        with spool.path.open("rb") as src, dest.open("wb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK)

    def retire_into_cache(self, ino: int, path: str, version: str) -> None:
        """A clean spool holds exactly `version`: keep it as that version's cache entry."""
        spool = self._spools.pop(ino)
        os.close(spool.fd)
        self._cache.commit(spool.path, path, version)

    def discard(self, ino: int) -> None:
        spool = self._spools.pop(ino, None)
        if spool is not None:
            os.close(spool.fd)
            spool.path.unlink(missing_ok=True)

    def discard_if_unused(self, node: Node) -> None:
        if node.open_count == 0:
            self.discard(node.ino)

    def kernel_version(self, ino: int) -> str | None:
        return self._kernel_versions.get(ino)

    def set_kernel_version(self, ino: int, version: str | None) -> None:
        self._kernel_versions[ino] = version

    def inos(self) -> Iterator[int]:
        return iter(list(self._spools))

    def close_all(self) -> None:
        for ino in list(self._spools):
            spool = self._spools.pop(ino)
            os.close(spool.fd)
