"""Edits of a file whose content the mount has never seen (made while offline).

Appending to (or rewriting part of) a remote file needs its current content; offline,
with nothing cached, there is none to copy. The edit is kept anyway: a spool of the
file's length whose written ranges are known (`Sparse.known`) and whose other bytes are
the remote version's, still to be fetched. Closed, it is journaled like any write, its
blob marked sparse; before sending, the flusher fetches that version and lays the known
ranges over it (`materialize`). Reads of bytes the mount has never seen are EIO.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from repomount.remotes.base import Conflict, Remote
from repomount.vfs.conflicts import save_copy

if TYPE_CHECKING:
    from repomount.vfs.journal import Journal


@dataclass
class Sparse:
    where: str  # the remote path the base version is read from
    version: str  # the base: the remote version the edits are laid over
    keep: int  # bytes of the base that survive (a truncate cuts it)
    length: int  # the file's length now
    known: list[tuple[int, int]] = field(default_factory=list)  # [start, end), sorted

    def copy(self) -> Sparse:
        return Sparse(self.where, self.version, self.keep, self.length, list(self.known))

    def wrote(self, start: int, end: int) -> None:
        if end <= start:
            return
        if start > self.length:  # past the end: the gap reads as zeros, known too
            start = self.length
        self.length = max(self.length, end)
        merged: list[tuple[int, int]] = []
        for a, b in self.known:
            if b < start or a > end:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        self.known = sorted(merged)

    def truncated(self, size: int) -> None:
        if size < self.length:
            self.known = [(a, min(b, size)) for a, b in self.known if a < size]
            self.keep = min(self.keep, size)
            self.length = size
        elif size > self.length:
            # The extension reads as zeros: known bytes (held by the spool's file).
            grown_from = self.length
            self.length = size
            self.wrote(grown_from, size)

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of [start, end) within the file is known."""
        end = min(end, self.length)
        if start >= end:
            return True
        for a, b in self.known:
            if a <= start < b:
                start = b
                if start >= end:
                    return True
        return False

    def to_json(self) -> str:
        fields = ("where", "version", "keep", "length", "known")
        return json.dumps({name: getattr(self, name) for name in fields})

    @staticmethod
    def from_json(text: str) -> Sparse:
        d = json.loads(text)
        return Sparse(
            d["where"], d["version"], d["keep"], d["length"], [tuple(r) for r in d["known"]]
        )


def materialize(sparse: Sparse, base: int, edits: int, out: int) -> None:
    """Write into `out` the base version (descriptor `base`) with the known ranges of
    `edits` (the sparse blob) laid over it, at the file's length. Worker thread."""
    offset = 0
    while offset < sparse.keep:
        chunk = os.pread(base, min(1 << 20, sparse.keep - offset), offset)
        if not chunk:
            break  # (a shorter base: the rest reads as zeros, as a truncate would)
        os.pwrite(out, chunk, offset)
        offset += len(chunk)
    os.ftruncate(out, sparse.length)
    for start, end in sparse.known:
        pos = start
        while pos < end:
            chunk = os.pread(edits, min(1 << 20, end - pos), pos)
            if not chunk:
                break
            os.pwrite(out, chunk, pos)
            pos += len(chunk)


async def lay_over_base(remote: Remote, journal: Journal, blob: str, edits: Sparse) -> str:
    """Fetch the base version of sparse `blob` and write a new blob holding it with the
    edits laid over it; its name. Raises the remote's error (Conflict or NotFound when
    that version is gone)."""
    name = journal.new_blob_name()
    base = journal.blob_path(name + ".base")  # (no row names it: gone at a restart)
    try:
        with base.open("wb") as out:
            got = await remote.read(edits.where, out, version=edits.version)
        if got.version is not None and got.version != edits.version:
            raise Conflict(f"{edits.where}: version {edits.version} is gone", current=got.version)
        await trio.to_thread.run_sync(_materialize_files, edits, base, journal.blob_path(blob),
                                      journal.blob_path(name))  # fmt: skip
    except BaseException:
        journal.blob_path(name).unlink(missing_ok=True)
        raise
    finally:
        base.unlink(missing_ok=True)
    return name


def _materialize_files(edits: Sparse, base: Path, sparse_blob: Path, out: Path) -> None:
    with base.open("rb") as b, sparse_blob.open("rb") as e:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            materialize(edits, b.fileno(), e.fileno(), fd)
            os.fsync(fd)
        finally:
            os.close(fd)


def save_edits(conflicts_dir: Path, path: str, blob: Path, edits: Sparse) -> Path:
    """Keep edits that can no longer be laid over their base (it changed meanwhile):
    the file as written (bytes never fetched are zeros) and, beside it, which byte
    ranges are the edits."""
    dest = save_copy(conflicts_dir, path, blob)
    ranges = "".join(f"{a} {b}\n" for a, b in edits.known)
    dest.with_name(dest.name + ".edited-ranges").write_text(
        f"# byte ranges [start end) written over version {edits.version}; the rest is zeros\n"
        + ranges
    )
    return dest
