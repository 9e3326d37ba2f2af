"""The journal's tables (journal.py), and what a journal written by an older version
lacks, added in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from repomount.vfs.records import Record, decode_expect

# Where a state directory keeps the journal: its database, and the blobs (the contents of
# pending writes) its rows name. The journal's and journal_peek's (read-only) layout.
JOURNAL_FILE = "journal.db"
BLOB_DIR = "blobs"


def journal_path(state_dir: Path) -> Path:
    return state_dir / JOURNAL_FILE


def blob_dir(state_dir: Path) -> Path:
    return state_dir / BLOB_DIR


_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    path TEXT NOT NULL,
    dst TEXT,
    blob TEXT,
    mode INTEGER,
    expect TEXT NOT NULL,
    expect_to TEXT NOT NULL DEFAULT 'any',
    key TEXT NOT NULL,
    created REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    target TEXT,
    next_try REAL NOT NULL DEFAULT 0,
    held_for TEXT,
    mtime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS sparse (
    blob TEXT PRIMARY KEY,
    edits TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS set_aside (
    id INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    path TEXT NOT NULL,
    dst TEXT,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

# Columns added since the first journals, each with what older rows take
_ADDED_COLUMNS = {
    "target": "TEXT",  # symlinks
    "next_try": "REAL NOT NULL DEFAULT 0",  # per-change retry times
    "held_for": "TEXT",
    "mtime_ns": "INTEGER",  # writes carrying their modification time
}


def create_schema(db: sqlite3.Connection) -> None:
    """The tables, created where missing and brought up to date."""
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(changes)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in columns:
            db.execute(f"ALTER TABLE changes ADD COLUMN {name} {kind}")


def load_records(db: sqlite3.Connection) -> list[Record]:
    """The changes, in id order. Reads a journal an older version wrote as it is (a
    column it lacks takes Record's default): a read-only reader cannot add them."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(changes)")}
    wanted = [f for f in Record.__dataclass_fields__ if f in columns]
    records = []
    for row in db.execute(f"SELECT {', '.join(wanted)} FROM changes ORDER BY id"):
        fields: dict[str, Any] = dict(zip(wanted, row, strict=True))
        for name in ("expect", "expect_to"):
            if name in fields:
                fields[name] = decode_expect(fields[name])
        records.append(Record(**fields))
    return records
