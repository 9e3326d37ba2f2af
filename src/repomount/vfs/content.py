"""On-disk caches: fetched content keyed by (path, version), and spool files for writes.

Files on disk, not bytes in RAM: a cached version is a complete file under `content/`,
written to a temp name and renamed into place so a crash never leaves a torn entry.
Spool files (the working copies of files being written) live under `spool/`.
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
    def __init__(self, root: Path) -> None:
        self.root = root
        self.content_dir = root / "content"
        self.spool_dir = root / "spool"
        self.content_dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Leftover spools of an earlier run hold nothing the journal needs (its own
        # copies live in the state dir), and temp files are torn downloads.
        for leftover in self.spool_dir.iterdir():
            leftover.unlink(missing_ok=True)

    def cached_path(self, path: str, version: str) -> Path:
        key = content_key(path, version)
        return self.content_dir / key[:2] / key

    def lookup(self, path: str, version: str) -> Path | None:
        p = self.cached_path(path, version)
        return p if p.exists() else None

    def temp_path(self) -> Path:
        return self.spool_dir / f"tmp-{uuid.uuid4().hex}"

    def commit(self, tmp: Path, path: str, version: str) -> Path:
        """Move a completely written temp file into the cache as (path, version)."""
        dest = self.cached_path(path, version)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
        return dest

    def new_spool(self, copy_from: Path | None) -> Path:
        """A fresh spool file: a copy of `copy_from`, or empty."""
        spool = self.spool_dir / f"spool-{uuid.uuid4().hex}"
        if copy_from is None:
            spool.touch()
        else:
            with copy_from.open("rb") as src, spool.open("wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
        return spool

    def usage(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
        return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()
