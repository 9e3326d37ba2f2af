"""A change of ours lost a conflict while more of the same file was written here (issue
17 #2, at the vfs tier): the remote's version is never written by the side that lost,
and the local lineage ends up in one conflict copy, not two."""

from __future__ import annotations

import os

from support.gatedremote import GatedRemote
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    MakeMount,
    append,
    close,
    listdir,
    open_path,
    read_all,
    read_file,
    write_file,
)


async def test_a_close_journaled_while_the_losing_write_was_in_flight_joins_the_copy(
    make_mount: MakeMount,
) -> None:
    gated = GatedRemote()
    gated.put("log", b"base\n")
    m = await make_mount(gated, **HELD)
    await write_file(m.vfs, "log", b"mine 1\n")
    async with gated.holding(m.drain):  # "mine 1" is on the wire
        gated.put("log", b"theirs\n")  # another writer gets there first
        await append(m.vfs, "log", b"mine 2\n")  # a second close, same lineage
    assert await m.drain() == []
    files = gated.files()
    assert files.pop("log") == b"theirs\n"
    [(copy, content)] = files.items()
    assert "conflict" in copy and content == b"mine 1\nmine 2\n"
    assert await read_file(m.vfs, "log") == b"theirs\n"
    assert sorted(await listdir(m.vfs, "")) == sorted(["log", copy])


async def test_a_descriptor_open_across_the_conflict_writes_into_the_copy(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("log", b"base\n")
    m = await make_mount(flusher=False, **HELD)
    fh, node = await open_path(m.vfs, "log", os.O_RDWR | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"mine 1\n")
    await m.vfs.flush(fh)  # (a close of a dup: a commit point, the handle stays)
    mem.put("log", b"theirs\n")
    await m.vfs.flusher.round()  # lost: keep-both
    await m.vfs.write(fh, 7, b"mine 2\n")
    assert await read_all(m.vfs, fh) == b"mine 1\nmine 2\n"
    await close(m.vfs, fh)
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("log") == b"theirs\n"
    assert list(files.values()) == [b"mine 1\nmine 2\n"]
    assert node.name != "log" and node.attached  # the inode went with the copy
