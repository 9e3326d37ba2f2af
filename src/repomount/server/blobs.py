"""Content-addressed blob files on local disk.

A blob lives at `blobs/<first two hex digits>/<sha256>`. Uploads are spooled into `tmp/`
(same filesystem), fsynced, then renamed into place, so a blob path either does not exist
or holds exactly the content its name promises, even after a crash mid-upload. Anything
left in `tmp/` by a crash is removed when the store opens.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from repomount.server.store import BlobSpool

SHA256_RE = re.compile(r"[0-9a-f]{64}")


class BlobDir:
    def __init__(self, root: Path) -> None:
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        # Leftover spools are uploads that never completed: drop them.
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.blobs / sha256[:2] / sha256

    def new_spool(self) -> BlobSpool:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        # A large buffer keeps the per-chunk write cheap when called from the event loop.
        return BlobSpool(Path(name), os.fdopen(fd, "wb", buffering=1 << 20))

    def discard(self, spool: BlobSpool) -> None:
        spool.file.close()
        spool.path.unlink(missing_ok=True)

    def add(self, spools: Sequence[BlobSpool]) -> list[bool]:
        """Move finished spools into place; True for each blob that was new.

        Each new blob is fsynced before its rename, and each directory touched is
        fsynced once after all renames, so a batch costs one fsync per blob, not two.
        """
        added = []
        touched: set[Path] = set()
        for spool in spools:
            spool.file.flush()
            target = self.path(spool.sha256)
            if target.exists():
                spool.file.close()
                spool.path.unlink(missing_ok=True)
                added.append(False)
                continue
            os.fsync(spool.file.fileno())
            spool.file.close()
            if not target.parent.is_dir():
                target.parent.mkdir(exist_ok=True)
                touched.add(self.blobs)
            os.replace(spool.path, target)
            touched.add(target.parent)
            added.append(True)
        for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(directory)
        return added

    def size(self, sha256: str) -> int | None:
        """The blob's size, None when it is not stored."""
        if not SHA256_RE.fullmatch(sha256):
            return None
        try:
            return os.stat(os.path.join(self.blobs, sha256[:2], sha256)).st_size
        except FileNotFoundError:
            return None

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
