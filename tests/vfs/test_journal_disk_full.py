"""The state directory's disk full: a journal write that fails changes nothing.

SQLite answers a COMMIT on a full disk with SQLITE_FULL and rolls the transaction back.
`FullAtCommit` stands in for the journal's connection and does exactly that, `fails`
times. Then:

- a close() that cannot be journaled fails with ENOSPC, and its bytes stay in the open
  file, for the next close (or the drain) to journal;
- the flusher, whose bookkeeping of what the remote applied cannot be written, does not
  stop: status says why, and once there is room the changes go (as replays), once;
- the records in memory are always the database's.

On a real full disk: tests/mount/test_state_disk_full.py (real files, a real tmpfs).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from typing import Any

import pytest

from repomount.vfs.journal import Journal
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import (
    HELD,
    ROOT,
    MakeMount,
    listdir,
    mkdirs,
    open_path,
    read_file,
    resolve,
    write_file,
)


class FullAtCommit:
    """A journal connection whose next `fails` COMMITs fail as on a full disk."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self.fails = 0
        self.failed = 0
        self.refused: tuple[str, ...] = ()  # statements that fail (their page is new)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fails:
            self.fails -= 1
            self.failed += 1
            self.con.execute("ROLLBACK")  # (what SQLite does)
            raise _full()
        if sql.startswith(self.refused):
            raise _full()
        return self.con.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith(self.refused):
            raise _full()
        return self.con.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def _full() -> sqlite3.OperationalError:
    e = sqlite3.OperationalError("database or disk is full")
    e.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    return e


def full_at_commit(journal: Journal) -> FullAtCommit:
    fake = FullAtCommit(journal._db)
    journal._db = fake  # type: ignore[assignment]
    return fake


def rows_on_disk(journal: Journal) -> list[tuple[str, str]]:
    """What a restart would read: (op, path) of every row."""
    other = Journal(journal.blob_dir.parent)
    try:
        return [(r.op, r.path) for r in other.records()]
    finally:
        other.close()


async def test_a_close_that_cannot_be_journaled_fails_and_keeps_its_bytes(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    await write_file(m.vfs, "kept", b"before\n")
    disk = full_at_commit(m.vfs.journal)
    before = [(r.op, r.path) for r in m.vfs.journal.records()]

    fh, node = await open_path(m.vfs, "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"written while the disk was full\n")
    disk.fails = 10
    with pytest.raises(OSError) as e:
        await m.vfs.flush(fh)  # close(2)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        await m.vfs.release(fh)  # (its retry fails too; nobody hears of it)
    assert disk.failed >= 2
    # nothing half-journaled: memory is what the disk holds
    assert [(r.op, r.path) for r in m.vfs.journal.records()] == rows_on_disk(m.vfs.journal)
    assert rows_on_disk(m.vfs.journal) == before
    # the bytes are still the file's
    disk.fails = 0
    assert await read_file(m.vfs, "f") == b"written while the disk was full\n"
    assert m.vfs.getattr(node.ino).size == 32
    # and go once there is room: the drain journals the written file, then sends it
    assert await m.drain() == []
    assert mem.files() == {"kept": b"before\n", "f": b"written while the disk was full\n"}


async def test_a_close_journaled_at_its_retry(make_mount: MakeMount, mem: MemRemote) -> None:
    """The first close fails; the next close of the same file journals everything."""
    m = await make_mount(**HELD)
    disk = full_at_commit(m.vfs.journal)
    fh, _ = await open_path(m.vfs, "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"one\n")
    disk.fails = 1
    with pytest.raises(OSError):
        await m.vfs.flush(fh)
    await m.vfs.write(fh, 4, b"two\n")
    await m.vfs.flush(fh)
    await m.vfs.release(fh)
    assert [(r.op, r.path) for r in m.vfs.journal.records()] == [("write", "f")]
    assert rows_on_disk(m.vfs.journal) == [("write", "f")]
    assert await m.drain() == []
    assert mem.files() == {"f": b"one\ntwo\n"}


async def test_bookkeeping_that_cannot_be_written_stops_nothing(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """The remote applied a batch, and booking it fails: the flusher goes on (before,
    the error ended the mount), says why, and sends the batch again once there is
    room; the remote sees each file land once."""
    m = await make_mount(flush_delay=0.3)
    disk = full_at_commit(m.vfs.journal)
    for i in range(3):
        await write_file(m.vfs, f"f{i}", f"content {i}\n".encode())
    disk.fails = 2  # (within the flush delay) the bookkeeping, and its first retry
    await wait_until_async(
        lambda: "state directory" in (m.vfs.health.local_error or ""), 20, "status to say why"
    )
    await wait_until_async(lambda: disk.fails == 0, 30, "the retry")
    assert await m.drain(30) == []
    assert mem.files() == {f"f{i}": f"content {i}\n".encode() for i in range(3)}
    landed = sorted(c.path for commit in mem.commits for c in commit)
    assert landed == ["f0", "f1", "f2"]  # each once: sent again, answered as a replay
    assert m.vfs.journal.records() == [] and rows_on_disk(m.vfs.journal) == []
    assert (await m.vfs.status())["last_error"] is None


async def test_attributes_that_cannot_be_saved_stay_in_memory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """A chmod of a directory and a rename whose rows of kept attributes cannot be
    written (a directory's mode is kept locally) still happen: a metadata row is not
    worth a rename failed half done."""
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"x")
    disk = full_at_commit(m.vfs.journal)
    m.vfs.attrs._db = disk  # type: ignore[assignment]  # (the same connection)
    disk.refused = ("INSERT OR REPLACE INTO attrs", "DELETE FROM attrs")
    d = await resolve(m.vfs, "d")
    await m.vfs.setattr(d.ino, None, mode=0o700)
    await m.vfs.rename(d.ino, "f", ROOT, "g", 0)
    assert await listdir(m.vfs, "") == ["d", "g"] and await listdir(m.vfs, "d") == []
    d = await resolve(m.vfs, "d")
    assert d.mode & 0o777 == 0o700  # (its mtime then moved: an entry left it)
    disk.refused = ()
    assert await m.drain() == []
    assert mem.files() == {"g": b"x"}
