"""truncate(2) by path while the file is open only to read (the fsx exerciser): it was
journaled when the last reader let go, so a `tail -f` kept it from the remote, a crash
after close() lost it, and an fsync of the reader's descriptor answered 0 with nothing
sent."""

from __future__ import annotations

import os

import trio

from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, close, open_path


async def test_a_truncate_with_only_readers_open_is_journaled_at_once(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("f", b"x" * 1000)
    m = await make_mount(**HELD)
    fh, node = await open_path(m.vfs, "f", os.O_RDONLY)
    await m.vfs.setattr(node.ino, None, size=4096)  # (no descriptor: by path)
    assert [r.op for r in m.vfs.journal.records()] == ["write"]
    with trio.fail_after(20):
        assert await m.drain() == []
    assert mem.files() == {"f": b"x" * 1000 + bytes(3096)}
    assert await m.vfs.read(fh, 990, 20) == b"x" * 10 + bytes(10)
    await close(m.vfs, fh)


async def test_fsync_of_a_reader_makes_a_truncate_by_path_durable(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("f", b"y" * 100)
    m = await make_mount(**HELD)
    fh, node = await open_path(m.vfs, "f", os.O_RDONLY)
    other, _ = await open_path(m.vfs, "f", os.O_RDONLY)
    await m.vfs.setattr(node.ino, None, size=10)
    with trio.fail_after(20):
        await m.vfs.fsync(fh)
    assert mem.files() == {"f": b"y" * 10}
    await close(m.vfs, fh)
    await close(m.vfs, other)
    assert await m.drain() == []
    assert mem.files() == {"f": b"y" * 10}


async def test_a_truncate_while_a_writer_is_open_goes_with_its_close(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """(As before: the writer's close journals the content, truncate included.)"""
    mem.put("f", b"z" * 100)
    m = await make_mount(**HELD)
    fh, node = await open_path(m.vfs, "f", os.O_WRONLY)
    await m.vfs.setattr(node.ino, None, size=50)
    assert m.vfs.journal.records() == []
    await m.vfs.write(fh, 50, b"end")
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"f": b"z" * 50 + b"end"}
