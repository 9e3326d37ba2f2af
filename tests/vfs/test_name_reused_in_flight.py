"""A name whose old file's change is on the wire, taken by a new file made here.

The random-operations test (seed 15838): while a round carried a change of `a`, `a`
was deleted, made again (a new file, still being written) and renamed to `c`. The
mount took the new `a` for one the remote may have, since a change of that *path* was
on its way, and journaled a rename of `a` after the delete of `a`: the remote refused
the batch (404: no `a` to rename), so fsync failed with EIO, and every later round
with it. The new file is the mount's own: the rename journals nothing, and its
content goes out under its new name at close."""

from __future__ import annotations

import os

from support.gatedremote import GatedRemote
from support.vfsutil import HELD, MakeMount, close, open_path, read_file, resolve, write_file


async def test_a_file_made_again_while_its_names_change_is_on_the_wire_is_renamed_locally(
    make_mount: MakeMount,
) -> None:
    remote = GatedRemote()
    m = await make_mount(remote, **HELD)
    await write_file(m.vfs, "a", b"old\n")
    assert await m.drain() == []
    root = await resolve(m.vfs, "")
    await write_file(m.vfs, "a", b"old, changed\n")
    async with remote.holding(m.drain):  # (that change of `a` is on the wire)
        await m.vfs.unlink(root.ino, "a")
        fh, _ = await open_path(m.vfs, "a", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        await m.vfs.write(fh, 0, b"new\n")
        await m.vfs.rename(root.ino, "a", root.ino, "c", 0)
    await m.vfs.fsync(fh)  # (sends what is pending: the old `a`'s delete, and `c`)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert remote.files() == {"c": b"new\n"}
    assert await read_file(m.vfs, "c") == b"new\n"
