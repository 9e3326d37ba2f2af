"""Counting the blob store's disk syncs (server/blobs.py): its fsync and syncfs calls,
each still done for real (or, with `syncfs_fails`, a syncfs that fails)."""

from __future__ import annotations

import errno
import os

import pytest

from repomount.server import blobs


class BlobSyncs:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, syncfs_fails: bool = False) -> None:
        self.syncfs = 0
        self.fsync = 0
        real_fsync, real_syncfs = os.fsync, blobs.SYNCFS

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def syncfs(fd: int) -> None:
            self.syncfs += 1
            if syncfs_fails:
                raise OSError(errno.EIO, "injected")
            if real_syncfs is None:
                os.sync()
            else:
                real_syncfs(fd)

        monkeypatch.setattr(blobs.os, "fsync", fsync)
        monkeypatch.setattr(blobs, "SYNCFS", syncfs)

    @property
    def count(self) -> int:
        return self.fsync + self.syncfs
