"""A file we listed that the remote no longer has (another client replaced it; the
change feed or the poll has not told us yet): its open fails with ENOENT, and its
directory is listed again when next used, so that a program that looks again sees
what is there. git in a second mount, after a `git gc` in the first replaced the packs,
re-reads objects/pack/ and found the same stale names (`fatal: unable to read`)."""

from __future__ import annotations

import os

import pytest
import trio

from repomount.remotes.base import Conflict, NotFound
from repomount.vfs.nodes import Node
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import MakeMount, listdir, read_file, resolve


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


async def test_many_files_gone_at_once_cost_one_listing(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """Fifty opens failing together (a gc removed every pack) list the directory once,
    when it is next used, not once each under the file's lock (fifty listings, one
    after the other, each holding up its open's ENOENT)."""
    for i in range(50):
        mem.put(f"pack/p{i}.pack", b"old\n")
    m = await make_mount(faulty)
    assert len(await listdir(m.vfs, "pack")) == 50
    nodes = [await resolve(m.vfs, f"pack/p{i}.pack") for i in range(50)]
    for i in range(50):
        mem.remove(f"pack/p{i}.pack")
    mem.put("pack/new.pack", b"new\n")
    before = faulty.calls["list_tree"]

    async def gone(node: Node) -> None:
        with pytest.raises(NotFound):
            await m.vfs.open(node.ino, os.O_RDONLY)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(gone, node)
    assert await listdir(m.vfs, "pack") == ["new.pack"]
    assert faulty.calls["list_tree"] - before == 1  # (was 50)


async def test_a_file_changed_on_the_remote_relists_its_directory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """The same for a file another client rewrote: the read of the listed version is
    refused (ESTALE), and was again at every open for as long as the listing was
    trusted (the metadata TTL; an hour here). Found by a random-operations run of two
    mounts, where opens failed so until the change feed's news arrived."""
    mem.put("doc.txt", b"first\n")
    m = await make_mount(mem)  # (no change feed; listings trusted for an hour)
    assert await listdir(m.vfs, "") == ["doc.txt"]
    mem.put("doc.txt", b"second, longer\n")  # elsewhere
    with pytest.raises(Conflict):
        await read_file(m.vfs, "doc.txt")
    assert await read_file(m.vfs, "doc.txt") == b"second, longer\n"
