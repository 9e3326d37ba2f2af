"""An open of a file changed elsewhere waits until the kernel was told of the change.

The kernel keeps a file's size for as long as the mount lets it cache attributes; a
listing or the change feed that brings a new version queues its invalidation, sent by
a background task. An open in between was served the new content, but the kernel
stopped reading at the old size: the new content cut to the old length, which no
version ever held (about one read in 30,000 under a writer appending elsewhere, on a
real mount). A program that read the file, changed it and wrote it back (an editor,
`sed`, a read-modify-write) then replaced the new version without a conflict, since
its precondition was the new version: found by two mounts and a writer on the
server's API, on a Terminal Use mount polling every second."""

from __future__ import annotations

import os

import trio

from repomount.vfs.state import Invalidator
from support.memremote import MemRemote
from support.vfsutil import ROOT, MakeMount, listdir, open_path, read_file


class SlowKernel:
    """Takes invalidations, and tells the kernel only when released."""

    def __init__(self) -> None:
        self.queued: set[int] = set()
        self.released = trio.Event()

    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None:
        pass

    def inode(self, ino: int, attr_only: bool = False) -> None:
        self.queued.add(ino)

    async def told(self, ino: int) -> None:
        if ino in self.queued:
            await self.released.wait()


async def test_an_open_waits_until_the_kernel_heard_of_the_new_version(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("f", b"one\n")
    m = await make_mount()
    assert await read_file(m.vfs, "f") == b"one\n"  # (the kernel holds its size, 4)
    kernel = SlowKernel()
    slow: Invalidator = kernel
    m.vfs.invalidator = slow
    mem.put("f", b"one\ntheirs\n")  # another writer appends
    m.vfs.expire(ROOT)
    await listdir(m.vfs, "")  # the mount hears of it (a poll, the change feed)
    opened = trio.Event()

    async def open_it() -> None:
        fh, _ = await open_path(m.vfs, "f", os.O_RDWR)
        opened.set()
        await m.vfs.release(fh)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_it)
        await trio.sleep(0.2)
        assert kernel.queued, "the listing queued no invalidation"
        assert not opened.is_set()  # (was: served while the kernel had the old size)
        kernel.released.set()
    assert opened.is_set()
