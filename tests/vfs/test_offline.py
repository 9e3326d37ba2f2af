"""Offline as promised (issue 16 #3): with the remote away, writes keep going into the
journal even where the mount has never seen the content or the directory, and are
reconciled when it is back (a conflict when needed, never lost)."""

from __future__ import annotations

import errno
import os

import pytest

from repomount.vfs.errors import FsError
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import (
    ROOT,
    MakeMount,
    append,
    close,
    listdir,
    open_path,
    read_file,
    write_file,
)


async def _offline_append(make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote):
    mem.put("log", b"line 1\n")
    m = await make_mount(faulty)
    assert await listdir(m.vfs, "") == ["log"]  # listed, never read
    faulty.fail_rate(1.0)  # the remote is away
    await append(m.vfs, "log", b"line 2\n")
    return m


async def test_an_append_to_a_file_never_read_lands_when_the_remote_is_back(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    m = await _offline_append(make_mount, faulty, mem)
    fh, _ = await open_path(m.vfs, "log", os.O_RDONLY)
    try:
        assert await m.vfs.read(fh, 7, 7) == b"line 2\n"  # what it wrote: there
        with pytest.raises(FsError) as e:
            await m.vfs.read(fh, 0, 14)  # bytes it never saw: EIO, never zeros
        assert e.value.errno == errno.EIO
    finally:
        await close(m.vfs, fh)
    faulty.heal()
    assert await m.drain() == []
    assert mem.files() == {"log": b"line 1\nline 2\n"}
    assert await read_file(m.vfs, "log") == b"line 1\nline 2\n"


async def test_offline_edits_survive_a_restart(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    m = await _offline_append(make_mount, faulty, mem)
    fh, _ = await open_path(m.vfs, "log", os.O_WRONLY)
    await m.vfs.write(fh, 2, b"NE")  # an overwrite inside bytes never seen
    await close(m.vfs, fh)
    faulty.heal()
    await m.restart()  # replays: the base is fetched, the edits laid over it
    assert mem.files() == {"log": b"liNE 1\nline 2\n"}


async def test_a_truncate_then_append_offline(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    m = await _offline_append(make_mount, faulty, mem)
    node = await m.vfs.lookup(ROOT, "log")
    await m.vfs.setattr(node.ino, None, size=4)
    await append(m.vfs, "log", b"!")
    fh, _ = await open_path(m.vfs, "log", os.O_RDWR)
    await m.vfs.write(fh, 9, b"x")  # past the end: the gap is zeros
    await close(m.vfs, fh)
    faulty.heal()
    assert await m.drain() == []
    assert mem.files() == {"log": b"line!\0\0\0\0x"}


async def test_edits_over_a_version_changed_meanwhile_are_kept_aside(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote, tmp_path
) -> None:
    m = await _offline_append(make_mount, faulty, mem)
    mem.put("log", b"someone else's\n")
    faulty.heal()
    await m.drain()
    assert mem.files() == {"log": b"someone else's\n"}  # never laid over another version
    [saved] = list((m.vfs.config.state_dir / "conflicts").rglob("log"))
    assert saved.read_bytes()[7:] == b"line 2\n"
    ranges = saved.with_name("log.edited-ranges").read_text().splitlines()
    assert ranges[1:] == ["7 14"]
    assert await read_file(m.vfs, "log") == b"someone else's\n"
    assert (await m.vfs.status())["conflicts"]


async def test_a_create_in_a_directory_never_listed(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    mem.put("old.txt", b"remote")
    mem.put("taken.txt", b"theirs")
    m = await make_mount(faulty)
    faulty.fail_rate(1.0)  # away before anything was listed
    await write_file(m.vfs, "new.txt", b"made offline")
    await write_file(m.vfs, "taken.txt", b"mine")  # the remote has it: unknown here
    with pytest.raises(FsError) as e:
        await listdir(m.vfs, "")  # what it holds is unknown: EIO, not a partial list
    assert e.value.errno == errno.EIO
    assert await read_file(m.vfs, "new.txt") == b"made offline"
    faulty.heal()
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("new.txt") == b"made offline"
    assert files.pop("old.txt") == b"remote"
    assert files.pop("taken.txt") == b"theirs"
    [(copy, mine)] = files.items()  # a conflict, both kept
    assert "conflict" in copy and mine == b"mine"
    m.vfs.expire(ROOT)
    assert sorted(await listdir(m.vfs, "")) == sorted(["new.txt", "old.txt", "taken.txt", copy])


async def test_listings_known_when_the_remote_went_away_are_kept_until_it_is_back(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    """The sweep forgets clean, unreferenced listings once they expired (memory follows
    use), and a directory forgotten is, while the remote is away, one never listed:
    `ls` EIO, each name in it ENOENT, a file in the cache out of reach. Found running
    fsx on a mount whose remote went away: within a minute its root failed `ls`. The
    sweep now waits for the remote to answer again."""
    mem.put("docs/a.txt", b"A")
    mem.put("docs/b.txt", b"B")
    m = await make_mount(faulty, metadata_ttl=0.0)
    vfs = m.vfs
    assert sorted(await listdir(vfs, "docs")) == ["a.txt", "b.txt"]
    assert await read_file(vfs, "docs/a.txt") == b"A"  # (now in the cache)
    faulty.fail_rate(1.0)  # the remote goes away
    assert sorted(await listdir(vfs, "docs")) == ["a.txt", "b.txt"]  # (found away)
    assert not vfs.health.usable
    vfs.forget([(n.ino, n.lookups) for n in vfs.inodes.nodes() if n.ino != ROOT])
    assert vfs.sweep() == 0
    assert sorted(await listdir(vfs, "docs")) == ["a.txt", "b.txt"]
    assert await read_file(vfs, "docs/a.txt") == b"A"
    faulty.heal()
    vfs.health.ok()  # the remote answers again (the watcher's next poll, in a mount)
    vfs.forget([(n.ino, n.lookups) for n in vfs.inodes.nodes() if n.ino != ROOT])
    assert vfs.sweep() > 0  # forgotten as before, listed again when next used
    assert await read_file(vfs, "docs/b.txt") == b"B"
