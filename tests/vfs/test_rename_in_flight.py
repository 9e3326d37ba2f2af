"""A temp file saved, its upload on the wire, then its times or mode set and renamed to
its final name (a WAN probe: rsync, editors' atomic saves): the content goes again as a
write at the new name plus a delete of the old one. The file must stay readable under
its new name once both landed; it was ENOENT (its content was still fetched from the
temp name, which the delete had removed) until it was forgotten and listed again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from repomount.vfs.core import Vfs
from repomount.vfs.nodes import Node
from support.gatedremote import GatedRemote
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, append, listdir, mkdirs, read_file, resolve, write_file


async def _utime(vfs: Vfs, node: Node) -> None:
    await vfs.setattr(node.ino, None, mtime_ns=10**18)


async def _chmod(vfs: Vfs, node: Node) -> None:
    await vfs.setattr(node.ino, None, mode=0o640)


async def _nothing(vfs: Vfs, node: Node) -> None:
    pass


@pytest.mark.parametrize("meanwhile", [_utime, _chmod, _nothing])
async def test_a_file_renamed_while_its_upload_is_in_flight_stays_readable(
    make_mount: MakeMount, meanwhile: Callable[[Vfs, Node], Awaitable[None]]
) -> None:
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    node = await write_file(m.vfs, ".t.tmp", b"hello\n")
    async with gated.holding(m.drain):  # (the write of .t.tmp is on the wire)
        await meanwhile(m.vfs, node)
        root = await resolve(m.vfs, "")
        await m.vfs.rename(root.ino, ".t.tmp", root.ino, "t", 0)
    assert await m.drain() == []
    assert gated.files() == {"t": b"hello\n"}
    node = await resolve(m.vfs, "t")
    assert node.source == "t"  # (where its content is fetched from, once not cached)
    assert await read_file(m.vfs, "t") == b"hello\n"
    vfs = await m.restart()
    assert await read_file(vfs, "t") == b"hello\n"


@pytest.mark.parametrize("in_flight", [False, True])
@pytest.mark.parametrize("attrs", ["mtime", "mode"])
async def test_times_and_mode_set_after_an_atomic_save_reach_the_remote(
    make_mount: MakeMount, in_flight: bool, attrs: str
) -> None:
    """Write a temp file, rename it over its final name, then utime or chmod it (with
    the save's upload on the wire, or not sent yet): the remote keeps the new time or
    mode. The file counted as never uploaded, so nothing was journaled, and the time
    (or mode) was the one it had when closed."""
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    await write_file(m.vfs, ".tmp", b"x" * 119)
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, ".tmp", root.ino, "f", 0)
    new = {"mtime": {"mtime_ns": 1_317_957_834_893_987_507}, "mode": {"mode": 0o600}}[attrs]
    async with trio.open_nursery() as nursery:
        if in_flight:
            gated.armed = True
            nursery.start_soon(m.drain)
            await gated.entered.wait()
        node = await resolve(m.vfs, "f")
        await m.vfs.setattr(node.ino, None, **new)
        gated.gate.set()
    assert await m.drain() == []
    item = gated.items["f"]
    if attrs == "mtime":
        assert item.mtime_ns == 1_317_957_834_893_987_507
    else:
        assert item.mode is not None and item.mode & 0o777 == 0o600
    assert gated.files() == {"f": b"x" * 119}
    vfs = await m.restart()
    got = await resolve(vfs, "f")
    assert (got.mtime_ns if attrs == "mtime" else got.mode & 0o777) == (
        1_317_957_834_893_987_507 if attrs == "mtime" else 0o600
    )


async def test_utime_after_a_rename_over_a_pending_file_keeps_the_new_content(
    make_mount: MakeMount,
) -> None:
    """The exerciser again: f1 written (not sent yet), f2 written and renamed over it,
    then utime f1. The time went on a new row with f1's *old* pending content (the
    newest pending write at that name, the replaced file's): the remote got the old
    bytes, and the mount read them back after the next append."""
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    await mkdirs(m.vfs, "a")
    await write_file(m.vfs, "a/f1", b"replaced\n")
    await write_file(m.vfs, "f2", b"the new content\n")
    root, a = await resolve(m.vfs, ""), await resolve(m.vfs, "a")
    await m.vfs.rename(root.ino, "f2", a.ino, "f1", 0)
    node = await resolve(m.vfs, "a/f1")
    await m.vfs.setattr(node.ino, None, mtime_ns=1_656_199_914_541_706_914)
    await append(m.vfs, "a/f1", b"appended\n")
    assert await read_file(m.vfs, "a/f1") == b"the new content\nappended\n"
    assert await m.drain() == []
    assert gated.files() == {"a/f1": b"the new content\nappended\n"}
    vfs = await m.restart()
    assert await read_file(vfs, "a/f1") == b"the new content\nappended\n"


@pytest.mark.parametrize("attrs", [{"mode": 0o700}, {"mtime_ns": 1_000_000_000_123_456_789}])
async def test_chmod_after_renaming_over_an_unsent_file_keeps_the_new_content(
    make_mount: MakeMount, mem: MemRemote, attrs: dict[str, int]
) -> None:
    """The exerciser's minimal case: f written, g written, g renamed over f, then
    chmod (or utime) f, none of it sent yet. The remote got f's old bytes with the new
    mode, and the mount read them back (at the new size)."""
    m = await make_mount(**HELD)
    await write_file(m.vfs, "f", b"old content\n")
    await write_file(m.vfs, "g", b"NEW CONTENT, longer\n")
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "g", root.ino, "f", 0)
    node = await resolve(m.vfs, "f")
    await m.vfs.setattr(node.ino, None, **attrs)
    assert await read_file(m.vfs, "f") == b"NEW CONTENT, longer\n"
    assert await m.drain() == []
    assert mem.files() == {"f": b"NEW CONTENT, longer\n"}
    assert await read_file(m.vfs, "f") == b"NEW CONTENT, longer\n"
    vfs = await m.restart()
    assert await read_file(vfs, "f") == b"NEW CONTENT, longer\n"


async def test_chmod_after_a_directory_rename_of_unsent_files_reaches_the_remote(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """mkdir a; write a/f; mv a c; chmod 755 c/f; utime c/f (none sent yet): the remote
    and a remount showed 0644 and the upload time."""
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "a")
    await write_file(m.vfs, "a/f", b"hello\n")
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "a", root.ino, "c", 0)
    node = await resolve(m.vfs, "c/f")
    await m.vfs.setattr(node.ino, None, mode=0o755, mtime_ns=1_000_000_000_123_456_789)
    assert await m.drain() == []
    item = mem.items["c/f"]
    assert item.mode is not None and item.mode & 0o777 == 0o755
    assert item.mtime_ns == 1_000_000_000_123_456_789
    vfs = await m.restart()
    got = await resolve(vfs, "c/f")
    assert got.mode & 0o777 == 0o755 and got.mtime_ns == 1_000_000_000_123_456_789


@pytest.mark.parametrize("edit", ["utime", "append"])
async def test_no_conflict_with_itself_after_a_file_replaces_a_name_just_made(
    make_mount: MakeMount, mem: MemRemote, edit: str
) -> None:
    """The exerciser (a self-conflict, then a file unlinked while open that came back):
    on the remote, f3 and a symlink c/f2. In one batch: c/f2 renamed to c/f3, then f3,
    edited, renamed over c/f3 (sent as a write of c/f3 after the symlink's rename, then
    a delete of f3). The file kept the symlink's version as its base, so deleting it
    next met its own write as a conflict, and the remote kept it."""
    m = await make_mount(**HELD)
    await write_file(m.vfs, "f3", b"")
    c = await mkdirs(m.vfs, "c")
    await m.vfs.symlink(c.ino, "f2", "f0", owner=(0, 0))
    assert await m.drain() == []
    root = await resolve(m.vfs, "")
    await m.vfs.rename(c.ino, "f2", c.ino, "f3", 0)
    f3 = await resolve(m.vfs, "f3")
    if edit == "utime":
        await m.vfs.setattr(f3.ino, None, mtime_ns=1_084_503_933_970_093_780)
    else:
        await append(m.vfs, "f3", b"more\n")
    await m.vfs.rename(root.ino, "f3", c.ino, "f3", 0)
    assert await m.drain() == []
    await m.vfs.unlink(c.ino, "f3")
    assert await m.drain() == []
    assert m.vfs.flusher.conflicts == []
    assert await listdir(m.vfs, "c") == [] and mem.files() == {}
