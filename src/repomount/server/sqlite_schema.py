"""The SQLite database of SqliteStore: its tables and indexes, the SQL fragments the
read queries and the commit transaction share, opening it, and its migrations.

Kept apart from the queries so that the layout of the data is read in one place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from repomount.server.smallblobs import SCHEMA as SMALL_BLOBS
from repomount.server.store import Entry

# A symlink's row holds its target, and in `blob` its version (SHA-256 of the target;
# no blob file backs it: the target is read from the row). `mtime_ns` is the exact time
# (a REAL cannot hold nanoseconds); rows from before it have only `mtime`.
ENTRIES = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('file', 'dir', 'symlink')),
    blob TEXT,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime REAL NOT NULL,
    commit_from INTEGER NOT NULL,
    commit_to INTEGER,
    target TEXT,
    mtime_ns INTEGER
);"""
# Columns an entries table had before symlinks (a data directory from then is migrated).
OLD_ENTRY_COLUMNS = (
    "id, repo_id, path, parent, type, blob, size, mode, mtime, commit_from, commit_to"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    floor INTEGER NOT NULL DEFAULT 0  -- oldest head still answerable (at=, since=)
);
CREATE TABLE IF NOT EXISTS commits (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    PRIMARY KEY (repo_id, seq)
);
{ENTRIES}
CREATE UNIQUE INDEX IF NOT EXISTS entries_current
    ON entries (repo_id, path) WHERE commit_to IS NULL;
CREATE INDEX IF NOT EXISTS entries_path ON entries (repo_id, path, commit_from);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (repo_id, parent, path);
CREATE INDEX IF NOT EXISTS entries_closed
    ON entries (repo_id, commit_to) WHERE commit_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    op TEXT NOT NULL,
    version TEXT,
    PRIMARY KEY (repo_id, seq, idx)
);
CREATE TABLE IF NOT EXISTS idempotency (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (repo_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created);
-- The last head of each deleted repo: one made again under its name counts on from
-- there, so that a client's position (since=, at=) in the old one is never taken for
-- one in the new one (it is answered 410: list again).
CREATE TABLE IF NOT EXISTS retired_heads (
    name TEXT PRIMARY KEY,
    head INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_attrs (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (repo_id, key)
);
{SMALL_BLOBS}
""".replace("{ENTRIES}", ENTRIES.format(name="entries")).replace("{SMALL_BLOBS}", SMALL_BLOBS)

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for "incremental"

# Visible at head :at (also used with the current head, which is simply a kept head).
VISIBLE = "commit_from <= :at AND (commit_to IS NULL OR commit_to > :at)"
ENTRY_COLS = "path, type, size, blob, mtime, mode, target, mtime_ns"
# The time of a repository's head commit (always kept: pruning stops at the floor).
UPDATED = "(SELECT time FROM commits WHERE repo_id = repos.id AND seq = repos.head)"


def entry_of(row: sqlite3.Row | tuple[Any, ...]) -> Entry:
    """The Entry of a row selected as ENTRY_COLS."""
    path, typ, size, blob, mtime, mode, target, mtime_ns = row
    if mtime_ns is None:  # (written before exact times were kept)
        mtime_ns = round(mtime * 1e9)
    return Entry(
        path=path, type=typ, size=size, version=blob, mtime_ns=mtime_ns, mode=mode, target=target
    )


def open_database(path: Path) -> sqlite3.Connection:
    """The database at `path` (created if new, migrated if old), in WAL mode with full
    durability; transactions are begun and ended explicitly by the caller."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    _reclaim_freed_pages(db)
    _migrate(db)
    db.executescript(SCHEMA)  # (also what a database from before small blobs lacks)
    return db


def _reclaim_freed_pages(db: sqlite3.Connection) -> None:
    """Let the GC give freed pages back to the filesystem (`PRAGMA incremental_vacuum`):
    small blobs are rows, and the disk of collected ones must be freed as a file's is.
    The mode takes effect by a VACUUM (the WAL mode set before has already written the
    header of a new file): instant for a new database; one from before small blobs is
    rewritten once, as it is upgraded."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")
        db.execute("VACUUM")


def reclaim(db: sqlite3.Connection) -> None:
    """Give the database's free pages back to the filesystem (outside a transaction).
    (executescript steps the pragma to its end: execute() would free one page.)"""
    db.executescript("PRAGMA incremental_vacuum;")


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an entries table from before symlinks up to date: SQLite cannot change
    a CHECK constraint in place, so the table is copied into a new one (one
    transaction; the indexes are created again by SCHEMA). One from before exact
    times gains its column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    if not columns:
        return
    if "target" in columns:
        if "mtime_ns" not in columns:
            db.execute("ALTER TABLE entries ADD COLUMN mtime_ns INTEGER")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(ENTRIES.format(name="entries_new"))
        db.execute(
            f"INSERT INTO entries_new ({OLD_ENTRY_COLUMNS}) SELECT {OLD_ENTRY_COLUMNS} FROM entries"
        )
        db.execute("DROP TABLE entries")
        db.execute("ALTER TABLE entries_new RENAME TO entries")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
