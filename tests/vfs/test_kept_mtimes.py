"""Modification times reach a remote that keeps them (issue 16, finding 4: `rsync -a`
into a mount re-sent every file on every run, and each rerun committed again).

rsync writes a temporary file, closes it, sets its mtime, then renames it over the
target: the mtime must survive the close, the rename and the coalescing of the three into
one write at the final name. `touch -d` of a file already on the remote sends the new
time with the same content (no upload on the native remote); a time set to what it
already is sends nothing. A mount with another state directory (another machine, a
deleted state) lists the exact time back from the remote.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from repomount.remotes.base import ApplyResult, Change, Expect, Unauthorized, Write
from repomount.vfs.journal import Journal
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, close, mkdirs, open_path, resolve, write_file

MTIME_NS = 1_000_000_000_123_456_789


async def test_rsyncs_temp_file_mtime_survives_rename_and_coalescing(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(flusher=False, **HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/.f.txt.Ab12Cd", b"synced content\n")
    temp = await resolve(m.vfs, "d/.f.txt.Ab12Cd")
    await m.vfs.setattr(temp.ino, None, mode=0o640)  # rsync: chmod, then utimes, then rename
    await m.vfs.setattr(temp.ino, None, mtime_ns=MTIME_NS)
    d = await resolve(m.vfs, "d")
    await m.vfs.rename(d.ino, ".f.txt.Ab12Cd", d.ino, "f.txt", 0)
    assert await m.drain() == []
    assert mem.files() == {"d/f.txt": b"synced content\n"}  # the temp name never went
    writes = [c for batch in mem.commits for c in batch if isinstance(c, Write)]
    assert [(w.path, w.mtime_ns, w.mode) for w in writes] == [("d/f.txt", MTIME_NS, 0o640)]
    assert (await resolve(m.vfs, "d/f.txt")).mtime_ns == MTIME_NS

    elsewhere = await make_mount(flusher=False)  # another state directory
    shown = await resolve(elsewhere.vfs, "d/f.txt")
    assert (shown.mtime_ns, shown.mode) == (MTIME_NS, 0o640)  # was: the commit's time


async def test_a_write_sends_the_time_it_shows(make_mount: MakeMount, mem: MemRemote) -> None:
    m = await make_mount(flusher=False, **HELD)
    node = await write_file(m.vfs, "a.txt", b"written\n")
    shown = m.vfs.getattr(node.ino).mtime_ns
    assert await m.drain() == []
    assert mem.items["a.txt"].mtime_ns == shown
    assert (await resolve((await make_mount(flusher=False)).vfs, "a.txt")).mtime_ns == shown


async def test_touch_d_of_a_file_on_the_remote_sends_the_same_content(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    version = mem.put("old.txt", b"on the remote\n")
    m = await make_mount(flusher=False, **HELD)
    node = await resolve(m.vfs, "old.txt")
    head = mem.head
    await m.vfs.setattr(node.ino, None, mtime_ns=m.vfs.getattr(node.ino).mtime_ns)
    assert await m.drain() == [] and mem.head == head  # the same time: nothing to send

    await m.vfs.setattr(node.ino, None, mtime_ns=MTIME_NS, atime_ns=5)
    assert await m.drain() == []
    (batch,) = mem.commits[-1:]
    (touch,) = batch
    assert isinstance(touch, Write)
    # the content it expects: the native adapter names the remote's blob, uploads nothing
    assert (touch.path, touch.sha256, touch.expect, touch.mtime_ns) == (
        "old.txt",
        version,
        version,
        MTIME_NS,
    )
    assert mem.items["old.txt"].mtime_ns == MTIME_NS
    shown = await resolve((await make_mount(flusher=False)).vfs, "old.txt")
    assert shown.mtime_ns == MTIME_NS


async def test_futimens_on_an_open_new_file_goes_with_its_close(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`touch -d DATE new`: open(O_CREAT), futimens, close."""
    m = await make_mount(flusher=False, **HELD)
    fh, node = await open_path(m.vfs, "new.txt", os.O_WRONLY | os.O_CREAT)
    await m.vfs.setattr(node.ino, fh, mtime_ns=MTIME_NS)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert (mem.files(), mem.items["new.txt"].mtime_ns) == ({"new.txt": b""}, MTIME_NS)
    assert len(mem.commits) == 1


async def test_the_time_is_journaled_with_the_write(make_mount: MakeMount) -> None:
    """A write the replay at the next mount could not send still shows its time, and
    sends it once it can: the time is in the journal's row, not only in memory."""
    refusing = RefusingRemote()
    m = await make_mount(refusing, flusher=False, **HELD)
    node = await write_file(m.vfs, "p.txt", b"pending\n")
    await m.vfs.setattr(node.ino, None, mtime_ns=MTIME_NS)
    refusing.refusing = True
    await m.restart()
    assert (await resolve(m.vfs, "p.txt")).mtime_ns == MTIME_NS
    refusing.refusing = False
    assert await m.drain() == []
    assert refusing.items["p.txt"].mtime_ns == MTIME_NS


class RefusingRemote(MemRemote):
    """Refuses every change while `refusing` (a revoked token, say)."""

    refusing = False

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if self.refusing:
            raise Unauthorized("token revoked")
        return await super().apply(changes, base=base)


def test_a_journal_from_before_times_is_upgraded(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    blob = journal.new_blob_name()
    journal.blob_path(blob).write_bytes(b"old row")
    journal.add("write", "old.txt", blob=blob, expect=Expect.ABSENT)
    journal.close()
    db = sqlite3.connect(tmp_path / "journal.db")
    db.execute("ALTER TABLE changes DROP COLUMN mtime_ns")
    db.commit()
    db.close()

    journal = Journal(tmp_path)
    (old,) = journal.records()
    assert (old.path, old.blob, old.mtime_ns) == ("old.txt", blob, None)
    journal.add("write", "new.txt", blob=blob, expect=Expect.ABSENT, mtime_ns=MTIME_NS)
    journal.close()
    assert [r.mtime_ns for r in Journal(tmp_path).records()] == [None, MTIME_NS]


async def test_a_symlinks_times_survive_its_upload_and_a_remount(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """pjdfstest found that `touch -h -d 2001-01-01 link` held only until a remount: the
    link's time was kept with the version it had while pending, and the version it
    landed as did not match it, so the remote's commit time showed instead. An untouched
    link kept its creation time only until then too."""
    m = await make_mount(flusher=False, **HELD)
    root = await resolve(m.vfs, "")
    touched = await m.vfs.symlink(root.ino, "touched", "target")
    untouched = await m.vfs.symlink(root.ino, "untouched", "target")
    made = untouched.mtime_ns
    await m.vfs.setattr(touched.ino, None, mtime_ns=MTIME_NS, atime_ns=MTIME_NS)
    assert await m.drain() == []
    assert mem.items["touched"].kind == "symlink"
    again = await m.restart()
    assert (await resolve(again, "touched")).mtime_ns == MTIME_NS
    assert (await resolve(again, "touched")).atime_ns == MTIME_NS
    assert (await resolve(again, "untouched")).mtime_ns == made
