"""`mv a b; edit b` while another client changes, moves or removes `a`: the rename
loses its conflict and is dropped, but the write made at `b` after it is ours and goes
out. The mount showed `b` with the renamed file's old content (the write's content was
dropped from the view when the rename was), while the remote had ours: a later edit
of `b` in the mount then replaced ours with an edit of the old content. Found by a
random-operations run of two mounts and the server's API."""

from __future__ import annotations

import os

import pytest

from repomount.vfs.conflicts import Policy
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, close, listdir, open_path, read_all, resolve, walk


@pytest.mark.parametrize("policy", [Policy.KEEP_BOTH, Policy.THEIRS, Policy.MINE])
@pytest.mark.parametrize("elsewhere", ["move", "change", "remove"])
@pytest.mark.parametrize("over", [False, True], ids=["new-name", "over-a-file"])
async def test_a_write_after_a_rename_that_lost_shows_as_it_landed(
    make_mount: MakeMount, mem: MemRemote, policy: Policy, elsewhere: str, over: bool
) -> None:
    mem.put("a", b"base base base\n")
    if over:
        mem.put("b", b"old b\n")
    m = await make_mount(on_conflict=policy, **HELD)
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "a", root.ino, "b", 0)
    fh, node = await open_path(m.vfs, "b", os.O_RDWR)  # an edit in place: read, rewrite
    assert await read_all(m.vfs, fh) == b"base base base\n"
    await m.vfs.setattr(node.ino, fh, size=0)
    await m.vfs.write(fh, 0, b"ours\n")
    await close(m.vfs, fh)
    if elsewhere == "move":  # another client, meanwhile
        mem.move("a", "c")
    elif elsewhere == "change":
        mem.put("a", b"theirs\n")
    else:
        mem.remove("a")
    await listdir(m.vfs, "")  # (its listing seen before the batch goes)
    assert await m.drain() == []
    files = mem.files()
    assert files["b"] == b"ours\n"
    shown, _ = await walk(m.vfs)
    assert shown == files
