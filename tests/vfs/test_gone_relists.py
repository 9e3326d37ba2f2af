"""A file we listed that the remote no longer has (another client replaced it; the
change feed or the poll has not told us yet): its open fails with ENOENT, and its
directory is listed again at once, so that a program that looks again sees what is
there. git in a second mount, after a `git gc` in the first replaced the packs,
re-reads objects/pack/ and found the same stale names (`fatal: unable to read`)."""

from __future__ import annotations

import pytest

from repomount.remotes.base import NotFound
from support.memremote import MemRemote
from support.vfsutil import MakeMount, listdir, read_file


async def test_a_file_gone_from_the_remote_relists_its_directory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("pack/old.pack", b"old\n")
    m = await make_mount(mem)  # (no change feed; listings trusted for an hour)
    assert await listdir(m.vfs, "pack") == ["old.pack"]
    mem.put("pack/new.pack", b"new\n")  # elsewhere: gc writes the new pack,
    mem.remove("pack/old.pack")  # and removes the old one
    with pytest.raises(NotFound):
        await read_file(m.vfs, "pack/old.pack")
    assert await listdir(m.vfs, "pack") == ["new.pack"]  # was: ["old.pack"], for an hour
    assert await read_file(m.vfs, "pack/new.pack") == b"new\n"
