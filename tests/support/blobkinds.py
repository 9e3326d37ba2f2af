"""The two kinds of blob of the reference server's store: rows of its database (small
contents, server/smallblobs.py) and files under blobs/ab/<sha256> (the others, and
every blob written before rows existed). Tests look at both from outside the store,
through a connection of their own (WAL: the server's connection is not disturbed)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from repomount.server import smallblobs, sqlite_store


def files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make an in-process store keep every blob as a file, as before rows existed."""
    monkeypatch.setattr(smallblobs, "SMALL_BLOB_MAX", -1)
    monkeypatch.setattr(sqlite_store, "SMALL_BLOB_MAX", -1)


def blob_file(data_dir: Path, sha256: str) -> Path:
    return data_dir / "blobs" / sha256[:2] / sha256


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "meta.sqlite3", isolation_level=None)


def blob_row(data_dir: Path, sha256: str) -> bytes | None:
    db = _db(data_dir)
    try:
        row = db.execute("SELECT data FROM small_blobs WHERE sha256 = ?", (sha256,)).fetchone()
    finally:
        db.close()
    return None if row is None else bytes(row[0])


def stored_content(data_dir: Path, sha256: str) -> bytes | None:
    """The blob's bytes as stored, a row or a file; None when it is neither."""
    row = blob_row(data_dir, sha256)
    if row is not None:
        return row
    try:
        return blob_file(data_dir, sha256).read_bytes()
    except FileNotFoundError:
        return None


def all_blobs(data_dir: Path) -> dict[str, float]:
    """Every stored blob's SHA-256 and the time it was last uploaded."""
    found: dict[str, float] = {}
    for path in (data_dir / "blobs").glob("*/*"):
        found[path.name] = path.stat().st_mtime
    db = _db(data_dir)
    try:
        found.update(db.execute("SELECT sha256, mtime FROM small_blobs").fetchall())
    finally:
        db.close()
    return found


def set_upload_time(data_dir: Path, sha256: str, when: float) -> None:
    path = blob_file(data_dir, sha256)
    if path.exists():
        os.utime(path, (when, when))
        return
    db = _db(data_dir)
    try:
        db.execute("UPDATE small_blobs SET mtime = ? WHERE sha256 = ?", (when, sha256))
    finally:
        db.close()
