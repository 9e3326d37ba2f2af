"""A journal written by an older version (before symlinks, per-change retry times,
held reasons and kept mtimes) opens with its pending changes intact: they replay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from repomount.remotes.base import Expect
from repomount.vfs import journal_peek
from repomount.vfs.journal import Journal

FIRST_SCHEMA = """
CREATE TABLE changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, path TEXT NOT NULL,
    dst TEXT, blob TEXT, mode INTEGER, expect TEXT NOT NULL,
    expect_to TEXT NOT NULL DEFAULT 'any', key TEXT NOT NULL, created REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0, last_error TEXT, state TEXT NOT NULL DEFAULT 'pending'
);
INSERT INTO changes (op, path, expect, key, created) VALUES ('mkdir', 'd', 'any', 'k1', 1.0);
INSERT INTO changes (op, path, blob, mode, expect, key, created)
    VALUES ('write', 'd/f', 'b1', 420, 'absent', 'k2', 2.0);
"""


def test_an_older_journal_opens_with_its_changes(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.db")
    db.executescript(FIRST_SCHEMA)
    db.close()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "b1").write_bytes(b"content")
    journal = Journal(tmp_path)
    mkdir, write = journal.records()
    assert (mkdir.op, mkdir.path, mkdir.key) == ("mkdir", "d", "k1")
    assert (write.op, write.path, write.blob, write.mode) == ("write", "d/f", "b1", 420)
    assert write.expect is Expect.ABSENT and write.state == "pending"
    assert (write.target, write.next_try, write.held_for, write.mtime_ns) == (None, 0.0, None, None)
    # The new columns are there: a change made now keeps its time.
    new = journal.add("write", "g", blob="b1", mtime_ns=5)
    journal.close()
    assert [r.mtime_ns for r in Journal(tmp_path).records()] == [None, None, new.mtime_ns]


def test_an_older_journal_is_read_as_it_is_without_changing_it(tmp_path: Path) -> None:
    """`repomount unmount` after a daemon died reads its journal read-only
    (journal_peek), counting changes as `status` does, whatever version wrote it."""
    db = sqlite3.connect(tmp_path / "journal.db")
    db.executescript(FIRST_SCHEMA)
    db.close()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "b1").write_bytes(b"content")
    before = (tmp_path / "journal.db").read_bytes()
    left = journal_peek.pending_in(tmp_path)
    assert left is not None and left.count == 2 and left.bytes == len(b"content")
    assert [c["path"] for c in left.changes] == ["d", "d/f"]
    assert (tmp_path / "journal.db").read_bytes() == before  # (no column added)
    assert journal_peek.pending_in(tmp_path / "none") is None
