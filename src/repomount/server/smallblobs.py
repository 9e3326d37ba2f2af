"""Small blobs (at most SMALL_BLOB_MAX bytes) kept as rows of the store's SQLite database.

A blob file costs a create, an fsync of its data and one of its directory (see
blobs.py); a row costs nothing more than the transaction that adds it, and one
transaction (one WAL sync, `synchronous=FULL`) adds a whole group. So small contents,
most of a mount's saves, are stored here; larger ones stay files. Identity, dedup, GC
and durability are the same for both kinds: the row is named by the content's SHA-256,
committed before `Store.add_blobs` returns (so before any commit naming it is
acknowledged), and carries the time it was last uploaded for the GC's grace period.
Blobs stored as files before this table existed stay files and are served as before.

Lookups that run outside a write transaction (has_blob, sizes, reads) use a read-only
connection of their own: in WAL mode a reader never waits for the writer, so a pack's
per-member check from the event loop never waits behind a commit holding the store's
lock. A lookup that finds a blob records "uploaded again now" in memory (a write per
check would cost a transaction, and the event loop would wait for the store's lock);
the next upload or commit writes those times into the rows (in its transaction, so
after a restart they hold as a file's mtime does), and the GC folds in the rest before
it decides, then consults them for each candidate under `refresh_lock`, which it holds
until its batch of deletions is committed, so a blob a check just found is never
removed after the check answered.

A commit naming a blob found present does not write its refresh (rewriting rows of up
to 64 KiB cost a commit of 2,000 such files 30-70 ms): the refresh is left to the GC,
which folds it in and consults it as the others, but no commit writes it. Nor is it
simply dropped: the lookup may have been another client's pack, whose commit
is still to come, and the naming commit's entry may keep the blob for less than the
grace period, or not at all (a write deleted in the same commit, a replayed commit, a
repository deleted, an entry replaced and pruned with a short history). Past
LEFT_TO_GC_MAX left so, they are written with the next write transaction after all.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from repomount.server.blobs import BlobDir
from repomount.server.sqlite_in import rows_in
from repomount.server.store import BlobSpool

SMALL_BLOB_MAX = 64 << 10  # contents up to this size are rows, larger ones files
LEFT_TO_GC_MAX = 50_000  # refreshes left to the GC (see above) before commits write them

# `mtime`: when the blob was last uploaded (or found by a lookup and folded in by the GC).
SCHEMA = """
CREATE TABLE IF NOT EXISTS small_blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    data BLOB NOT NULL
);"""


@dataclass
class MemorySpool(BlobSpool):
    """A spool for a content known to be small: filled in memory, never a file."""

    data: bytes = b""

    def close(self) -> None:
        if not self.file.closed:
            self.data = self.file.getvalue()  # type: ignore[attr-defined]
            self.file.close()

    def held_content(self) -> bytes:
        self.close()
        return self.data


def new_memory_spool() -> MemorySpool:
    return MemorySpool(name="", file=io.BytesIO())


class SmallBlobs:
    def __init__(self, database: Path) -> None:
        # The table exists already (sqlite_schema.open_database made it).
        self._reader = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self._reader.execute("PRAGMA query_only=ON")
        self._read_lock = threading.Lock()
        self.refresh_lock = threading.Lock()  # a lookup's refresh vs the GC's removal
        self._refreshed: dict[str, float] = {}
        self._left_to_gc: dict[str, float] = {}  # refreshes no commit writes (see above)

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()

    # --- inside the store's write transaction --------------------------------------------

    @staticmethod
    def add(db: sqlite3.Connection, contents: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Insert each (SHA-256, content) not stored yet, refresh the others; True for
        each new one. Durable once the caller's transaction commits."""
        now = time.time()
        added = []
        for sha, data in contents:
            cursor = db.execute(
                "INSERT OR IGNORE INTO small_blobs (sha256, size, mtime, data) VALUES (?, ?, ?, ?)",
                (sha, len(data), now, data),
            )
            if cursor.rowcount == 1:
                added.append(True)
                continue
            db.execute("UPDATE small_blobs SET mtime = ? WHERE sha256 = ?", (now, sha))
            added.append(False)
        return added

    @staticmethod
    def sizes_in(db: sqlite3.Connection, shas: Collection[str]) -> dict[str, int]:
        """The sizes of those of `shas` that are rows."""
        sql = "SELECT sha256, size FROM small_blobs WHERE sha256 IN ({marks})"
        return {sha: int(size) for sha, size in rows_in(db, sql, list(shas))}

    @staticmethod
    def size_in(db: sqlite3.Connection, sha256: str) -> int | None:
        row = db.execute("SELECT size FROM small_blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def pending_refreshes(self) -> dict[str, float]:
        """The lookups' refresh times not written yet (a copy: they stay counted by
        the GC until `forget_refreshes` after they are committed)."""
        with self.refresh_lock:
            return dict(self._refreshed)

    @staticmethod
    def write_refreshes(db: sqlite3.Connection, refreshes: dict[str, float]) -> None:
        db.executemany(
            "UPDATE small_blobs SET mtime = max(mtime, ?) WHERE sha256 = ?",
            [(t, sha) for sha, t in refreshes.items()],
        )

    def forget_refreshes(self, written: dict[str, float]) -> None:
        """Drop the refreshes committed to the rows (not those found again since)."""
        with self.refresh_lock:
            for sha, t in written.items():
                if self._refreshed.get(sha) == t:
                    del self._refreshed[sha]

    def leave_to_gc(self, named: dict[str, float]) -> None:
        """After a commit naming these blobs: their refreshes (unless found again since)
        are no longer written by write transactions, only by the GC's fold."""
        with self.refresh_lock:
            for sha, t in named.items():
                if self._refreshed.get(sha) == t:
                    del self._refreshed[sha]
                    self._left_to_gc[sha] = max(t, self._left_to_gc.get(sha, t))
            if len(self._left_to_gc) > LEFT_TO_GC_MAX:  # written with the next write after all
                for sha, t in self._left_to_gc.items():
                    self._refreshed[sha] = max(t, self._refreshed.get(sha, t))
                self._left_to_gc.clear()

    def fold_refreshes(self, db: sqlite3.Connection) -> None:
        """Write every refresh into the rows, those left to the GC too (the GC, or the
        store closing, holding refresh_lock)."""
        self.write_refreshes(db, self._left_to_gc)
        self.write_refreshes(db, self._refreshed)
        self._left_to_gc.clear()
        self._refreshed.clear()

    def remove_if_older(self, db: sqlite3.Connection, sha256: str, cutoff: float) -> int | None:
        """Delete the row if it was last uploaded (or found) before `cutoff`; its size
        then, else None. The caller holds refresh_lock until `db` commits."""
        if max(self._refreshed.get(sha256, 0.0), self._left_to_gc.get(sha256, 0.0)) >= cutoff:
            return None
        row = db.execute(
            "DELETE FROM small_blobs WHERE sha256 = ? AND mtime < ? RETURNING size",
            (sha256, cutoff),
        ).fetchone()
        return None if row is None else int(row[0])

    # --- lookups (the read-only connection) ----------------------------------------------

    def keep(self, sha256: str) -> bool:
        """Whether the blob is a row; if so it counts as uploaded again now."""
        with self.refresh_lock:
            if self.size(sha256) is None:
                return False
            self._refreshed[sha256] = time.time()
            return True

    def size(self, sha256: str) -> int | None:
        with self._read_lock:
            return self.size_in(self._reader, sha256)

    def open(self, sha256: str) -> BinaryIO | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT data FROM small_blobs WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else io.BytesIO(row[0])

    def totals(self) -> tuple[int, int]:
        """(count, bytes) of the rows."""
        with self._read_lock:
            count, total = self._reader.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM small_blobs"
            ).fetchone()
        return int(count), int(total)

    def older_than(self, cutoff: float) -> list[tuple[str, int]]:
        """(SHA-256, size) of the rows last uploaded before `cutoff`."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT sha256, size FROM small_blobs WHERE mtime < ?", (cutoff,)
            ).fetchall()
        return [(sha, int(size)) for sha, size in rows]


def split(
    spools: Sequence[BlobSpool], blobs: BlobDir
) -> tuple[list[tuple[int, str, bytes]], list[tuple[int, BlobSpool]]]:
    """The spools of `Store.add_blobs` by kind: (index, SHA-256, content) of the small
    ones (a small spool file is read back and removed: no sync), (index, spool file) of
    the others (a memory spool that outgrew its declared size becomes a file)."""
    small: list[tuple[int, str, bytes]] = []
    large: list[tuple[int, BlobSpool]] = []
    for index, spool in enumerate(spools):
        if isinstance(spool, MemorySpool):
            if spool.size <= SMALL_BLOB_MAX:
                small.append((index, spool.sha256, spool.held_content()))
                continue
            file_spool = blobs.new_spool(spool.size)
            file_spool.write(spool.held_content())
            file_spool.close()
            large.append((index, file_spool))
        elif spool.size <= SMALL_BLOB_MAX:
            spool.close()
            with open(spool.name, "rb") as f:
                small.append((index, spool.sha256, f.read()))
            blobs.discard(spool)
        else:
            large.append((index, spool))
    return small, large
