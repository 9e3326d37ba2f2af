"""The on-disk content cache: fetched (or uploaded) content keyed by (path, version).

Files on disk, not bytes in RAM: an entry is a complete file, written to a temp name and
renamed into place, so a crash never leaves a torn entry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

COPY_CHUNK = 1 << 20


def content_key(path: str, version: str) -> str:
    return hashlib.sha256(f"{path}\0{version}".encode()).hexdigest()


class ContentCache:
    """`limit` bounds the bytes kept; the least recently used entries go first (an entry
    open elsewhere stays readable through its descriptor after it is dropped)."""

    def __init__(self, root: Path, limit: int = 10 << 30) -> None:
        self.root = root
        self.limit = limit
        self.content_dir = root / "content"
        self.tmp_dir = root / "tmp"
        self.content_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # torn downloads of an earlier run
            leftover.unlink(missing_ok=True)
        self._size = sum(f.stat().st_size for f in self.content_dir.glob("*/*"))

    def cached_path(self, path: str, version: str) -> Path:
        key = content_key(path, version)
        return self.content_dir / key[:2] / key

    def lookup(self, path: str, version: str) -> Path | None:
        p = self.cached_path(path, version)
        try:
            os.utime(p)  # "recently used", for eviction (atime is unreliable: relatime)
        except FileNotFoundError:
            return None
        return p

    def temp_path(self) -> Path:
        return self.tmp_dir / uuid.uuid4().hex

    def commit(self, tmp: Path, path: str, version: str) -> Path:
        """Move a complete file into the cache as (path, version)."""
        dest = self.cached_path(path, version)
        dest.parent.mkdir(exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another filesystem (the state dir's): copy, then drop
            part = self.temp_path()
            shutil.copyfile(tmp, part)
            os.replace(part, dest)
            tmp.unlink(missing_ok=True)
        self._size += dest.stat().st_size
        if self._size > self.limit:
            self.evict(keep=dest)
        return dest

    def evict(self, keep: Path | None = None) -> None:
        """Drop least recently used entries until the cache is within 90% of its limit."""
        entries = []
        for f in self.content_dir.glob("*/*"):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, f))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for _, size, f in entries:
            if total <= self.limit * 0.9:
                break
            if f != keep:
                f.unlink(missing_ok=True)
                total -= size
        self._size = total

    def usage(self) -> int:
        """Bytes of content kept (tracked, not walked: status asks often)."""
        return self._size
