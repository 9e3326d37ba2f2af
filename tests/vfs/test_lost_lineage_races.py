"""Races around a change that lost a conflict, found by a second reading of the fix for
issue 17 #2 (each failed before its fix)."""

from __future__ import annotations

import os

import pytest
import trio

from repomount.options import Policy
from repomount.vfs import conflicts as conflicts_mod
from repomount.vfs import lost as lost_mod
from repomount.vfs import outcomes as outcomes_mod
from support.gatedremote import GatedRemote
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    MakeMount,
    append,
    close,
    open_path,
    read_file,
    write_file,
)


async def test_theirs_a_close_journaled_while_the_losing_write_was_in_flight_is_lost(
    make_mount: MakeMount,
) -> None:
    """theirs: "mine 1" is on the wire; "mine 2" is appended and closed meanwhile (row B,
    write log expecting the old base). The conflict detaches the inode (pending blob B
    != the lost one) but leaves B journaled at "log": the listing skips "log" (B touches
    it), so the name vanishes. An appending program (O_CREAT|O_APPEND) makes a new empty
    file there; its close coalesces with B (repeated writes: last content wins) and only
    "mine 3" is saved: "mine 2", a closed write, is nowhere."""
    gated = GatedRemote()
    gated.put("log", b"base\n")
    m = await make_mount(gated, flusher=False, on_conflict=Policy.THEIRS, **HELD)
    await write_file(m.vfs, "log", b"mine 1\n")
    async with gated.holding(m.vfs.flusher.round):  # "mine 1" is on the wire
        gated.put("log", b"theirs\n")
        await append(m.vfs, "log", b"mine 2\n")
    assert await read_file(m.vfs, "log") == b"theirs\n"  # was: neither version shown
    # An append now is an append to the remote's version, which the name shows.
    await write_file(m.vfs, "log", b"mine 3\n", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert await m.drain() == []
    saved = [p.read_bytes() for p in (m.base / "state" / "conflicts").rglob("*") if p.is_file()]
    assert gated.files() == {"log": b"theirs\nmine 3\n"}
    assert saved == [b"mine 1\nmine 2\n"], saved  # was: only b"mine 3"


async def test_two_conflicts_of_a_file_in_one_second(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conflict copy names have a one-second stamp. The second conflict of "log" in the
    same second finds the copy's name taken: _journal_copy returns without moving the
    losing inode, and journals a second write of the same copy name. (1) The two copy
    rows coalesce (repeated writes: last content wins): "mine 1" is never sent.
    (2) The inode that lost stays at "log"; adopt_remote merges the remote's version
    into it while it is open, and the next close through the same descriptor expects
    that version: the other writer's file is overwritten (issue 17 #2 again)."""
    fixed = 1_800_000_000.0
    monkeypatch.setattr(
        lost_mod, "conflict_name", lambda p, n=1: conflicts_mod.conflict_name(p, now=fixed, n=n)
    )
    mem.put("log", b"base\n")
    m = await make_mount(flusher=False, **HELD)
    fh1, _ = await open_path(m.vfs, "log", os.O_RDWR | os.O_TRUNC)
    await m.vfs.write(fh1, 0, b"mine 1\n")
    await m.vfs.flush(fh1)
    mem.put("log", b"theirs 1\n")
    await m.vfs.flusher.round()  # lost: the inode of fh1 becomes the copy
    fh2, _ = await open_path(m.vfs, "log", os.O_RDWR | os.O_TRUNC)
    await m.vfs.write(fh2, 0, b"mine 2\n")
    await m.vfs.flush(fh2)
    mem.put("log", b"theirs 2\n")
    await m.vfs.flusher.round()  # lost again, in the same second
    await m.vfs.write(fh2, 7, b"mine 3\n")
    await close(m.vfs, fh2)
    await close(m.vfs, fh1)
    assert await m.drain() == []
    files = mem.files()
    assert any(b"mine 1" in c for c in files.values()), files  # fails: nowhere
    assert files["log"] == b"theirs 2\n", files  # fails: b"mine 2\nmine 3\n"


async def test_a_crash_between_the_copy_row_and_completing_the_lost_write(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep-both journals the copy (autocommitted) and only then completes the rows that
    lost (a separate transaction). A kill -9 in between leaves both; the replay loses
    the same conflict again and journals a second copy: the remote gets two."""
    clock = iter(range(1_800_000_000, 1_800_000_100, 10))
    monkeypatch.setattr(
        lost_mod,
        "conflict_name",
        lambda p, n=1: conflicts_mod.conflict_name(p, now=next(clock), n=n),
    )
    mem.put("log", b"base\n")
    m = await make_mount(flusher=False, **HELD)
    await write_file(m.vfs, "log", b"mine\n")
    [lost] = [r.id for r in m.vfs.journal.records()]
    real = m.vfs.journal.complete

    def complete(ids, **kw):  # type: ignore[no-untyped-def]
        ids = list(ids)
        if ids == [lost]:
            raise RuntimeError("kill -9")  # the process dies here
        real(ids, **kw)

    m.vfs.journal.complete = complete  # type: ignore[method-assign]
    mem.put("log", b"theirs\n")
    with pytest.raises(RuntimeError, match="kill -9"):
        await m.vfs.flusher.round()
    await m.restart()  # replays the journal
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("log") == b"theirs\n"
    assert list(files.values()) == [b"mine\n"], files  # fails: two copies


async def test_the_copy_follows_a_rename_of_its_directory(make_mount: MakeMount) -> None:
    """ "mine" (d/log) is on the wire; mv d e meanwhile; the write loses. The copy is
    journaled at conflict_name(op.path), under d/, after the rename of d: the remote
    gets a directory d again holding only the copy, and the inode that lost (now
    e/log) is not moved (node_at(d/log) is None)."""
    gated = GatedRemote()
    gated.put("d/log", b"base\n")
    m = await make_mount(gated, **HELD)
    await write_file(m.vfs, "d/log", b"mine\n")
    async with gated.holding(m.drain):
        gated.put("d/log", b"theirs\n")
        await m.vfs.rename(1, "d", 1, "e", 0)
    assert await m.drain() == []
    files = gated.files()
    assert files.pop("e/log") == b"theirs\n"
    assert [p.split("/")[0] for p in files] == ["e"], files  # fails: the copy is in d/


class DiesAfterApply(GatedRemote):
    """The commit lands, then the mount dies before it hears the answer."""

    async def apply(self, changes, *, base=None):  # type: ignore[no-untyped-def]
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.gate.wait()
            await MemRemote.apply(self, changes, base=base)
            raise RuntimeError("kill -9")
        return await MemRemote.apply(self, changes, base=base)


async def test_a_close_journaled_while_a_landed_write_was_in_flight_then_a_crash(
    make_mount: MakeMount,
) -> None:
    """ "one" lands, the mount dies before applying the answer; "two" was closed while
    "one" was on the wire. The replay coalesces both into one write of "two" with a new
    key (no idempotent replay) expecting the old base: a conflict with our own landed
    write, and "two", the newest content, becomes a conflict copy."""
    remote = DiesAfterApply()
    remote.put("f", b"base\n")
    m = await make_mount(remote, flusher=False, **HELD)
    await write_file(m.vfs, "f", b"one\n")
    remote.armed = True
    died = False
    try:
        async with trio.open_nursery() as n:
            n.start_soon(m.vfs.flusher.round)
            await remote.entered.wait()
            await write_file(m.vfs, "f", b"two\n")
            remote.gate.set()
    except* RuntimeError:
        died = True
    assert died and remote.files() == {"f": b"one\n"}  # landed; the answer was lost
    await m.restart()
    assert await m.drain() == []
    assert remote.files() == {"f": b"two\n"}  # fails: f is "one", "two" is a copy


async def test_theirs_a_stale_later_close_overwrites_what_the_descriptor_saved(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """theirs, a descriptor open across the conflict, a flush (close of a dup) journaled
    while "mine 1" was on the wire (row B: "mine 1 + mine 2", left at "log"). The close
    after the conflict saves "mine 1..3" at `saved`; then B is sent, loses, and is saved
    in the same second at the same name: "mine 3" is gone."""
    import shutil
    from pathlib import Path

    def save_copy(conflicts_dir: Path, path: str, blob: Path) -> Path:  # one second
        dest = conflicts_dir / "20270101T000000Z" / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, dest)
        return dest

    monkeypatch.setattr(outcomes_mod, "save_copy", save_copy)
    gated = GatedRemote()
    gated.put("log", b"base\n")
    m = await make_mount(gated, flusher=False, on_conflict=Policy.THEIRS, **HELD)
    fh, _ = await open_path(m.vfs, "log", os.O_RDWR | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"mine 1\n")
    await m.vfs.flush(fh)
    async with gated.holding(m.vfs.flusher.round):
        gated.put("log", b"theirs\n")
        await m.vfs.write(fh, 7, b"mine 2\n")
        await m.vfs.flush(fh)
    await m.vfs.write(fh, 14, b"mine 3\n")
    await close(m.vfs, fh)
    assert await m.drain() == []
    saved = [p.read_bytes() for p in (m.base / "state" / "conflicts").rglob("*") if p.is_file()]
    assert gated.files() == {"log": b"theirs\n"}
    assert any(b"mine 3\n" in s for s in saved), saved  # fails: [b"mine 1\nmine 2\n"]


async def test_the_shown_copy_has_the_size_of_its_content(make_mount: MakeMount) -> None:
    """The lineage inode was renamed away (node_at(op.path) is None) and a later close
    was re-aimed at the copy: the node made for the copy shows the later close's
    content with the size of the write that lost (the kernel cuts reads at st_size)."""
    gated = GatedRemote()
    gated.put("log", b"base\n")
    m = await make_mount(gated, flusher=False, **HELD)
    await write_file(m.vfs, "log", b"mine 1\n")
    async with gated.holding(m.vfs.flusher.round):
        gated.put("log", b"theirs\n")
        await append(m.vfs, "log", b"mine 2\n")
        await m.vfs.rename(1, "log", 1, "log2", 0)
    [copy] = [c for c in m.vfs.inodes.root.children or {} if "conflict" in c]
    node = m.vfs.inodes.root.children[copy]  # type: ignore[index]
    content = await read_file(m.vfs, copy)
    assert content == b"mine 1\nmine 2\n"
    assert node.size == len(content)  # fails: 7 (the size of "mine 1\n")
