"""Size and SHA-256 of the journal's content files: computed in worker threads (a few
small ones on the trio thread), once per blob, and kept while the journal still sends
the blob. A long file written in order was hashed as it was written (sidehash.py, or
its staged upload: staging.py)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import trio

from repomount.vfs.journal import Journal

log = logging.getLogger(__name__)


class RunningDigest(Protocol):
    """A digest made while the blob was written: sidehash.SideHash, or the staged
    upload that read it (staging.Staging)."""

    @property
    def size(self) -> int: ...

    async def hexdigest(self) -> str: ...

    def drop(self) -> None: ...


class Digests:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._known: dict[str, tuple[int, str]] = {}  # blob -> (size, sha256)
        self._coming: dict[str, RunningDigest] = {}  # blob -> its hash, still being made

    def expect(self, blob: str, appended: RunningDigest) -> None:
        """The blob's digest is being made as it was written (sidehash.py, staging.py):
        taken from there, not from reading the blob again."""
        self._coming[blob] = appended

    def learn(self, blob: str, size: int, sha256: str) -> None:
        """The blob's digest, made from its bytes as they were written (inorder.py)."""
        self._known[blob] = (size, sha256)

    def known(self, blob: str) -> tuple[int, str] | None:
        """(size, sha256) of a blob hashed already."""
        return self._known.get(blob)

    async def of(self, blob: str) -> tuple[int, str]:
        got = self._known.get(blob)
        if got is None:
            got = await self._from_writing(blob)
        if got is None:
            got = await trio.to_thread.run_sync(hash_file, self.journal.blob_path(blob))
            self._known[blob] = got
        return got

    async def _from_writing(self, blob: str) -> tuple[int, str] | None:
        appended = self._coming.pop(blob, None)
        if appended is None:
            return None
        try:
            got = (appended.size, await appended.hexdigest())
        except OSError as e:  # (a staged upload that ended early, say): read the blob
            log.info("%s: hashed from the blob instead (%s)", blob, e)
            return None
        except Exception:  # (say no memory for the thread): read the blob again
            log.exception("hashing %s as it was written failed", blob)
            return None
        self._known[blob] = got
        return got

    async def prepare(self, blobs: Iterable[str], *, missing_ok: bool = False) -> None:
        """Hash every one not hashed yet, in one worker-thread call (a batch of a
        thousand small files is not a thousand thread round trips); a few small ones
        here, for less than the hop to a thread and back (an fsync waits for it).
        `missing_ok`: a blob gone from disk is left out, not FileNotFoundError."""
        todo = {b: self.journal.blob_path(b) for b in blobs if b not in self._known}
        for b in [b for b in todo if b in self._coming]:
            await self._from_writing(b)
            del todo[b]
        if not todo:
            return
        hash_all = functools.partial(_hash_all, todo, missing_ok)
        if len(todo) <= HASH_HERE_FILES and all(
            _size(p) <= HASH_HERE_MAX // HASH_HERE_FILES for p in todo.values()
        ):
            self._known.update(hash_all())
        else:
            self._known.update(await trio.to_thread.run_sync(hash_all))

    def forget(self, blobs: Iterable[str]) -> None:
        for b in blobs:
            self._known.pop(b, None)
            self._drop_coming(b)

    def forget_unused(self) -> None:
        for b in [b for b in self._known if not self.journal.uses_blob(b)]:
            del self._known[b]
        for b in [b for b in self._coming if not self.journal.uses_blob(b)]:
            self._drop_coming(b)

    def _drop_coming(self, blob: str) -> None:
        appended = self._coming.pop(blob, None)
        if appended is not None:
            appended.drop()


HASH_HERE_FILES = 4  # up to this many blobs ...
HASH_HERE_MAX = 16 * 1024  # ... of this much in all are hashed on the loop


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0  # (hash_file raises it, as the worker thread would)


def _hash_all(blobs: dict[str, Path], missing_ok: bool) -> dict[str, tuple[int, str]]:
    got = {}
    for blob, path in blobs.items():
        try:
            got[blob] = hash_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise
    return got


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
