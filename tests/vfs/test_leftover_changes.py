"""Changes the replay at a mount's start could not send stay pending, and stay visible:
a file's local version, a new file, a new directory with files in it, a symlink, a
delete. Before, every name such a change touched vanished from the tree after a
remount (a held conflict under --on-conflict fail: the local version unreachable)."""

from __future__ import annotations

from collections.abc import Sequence

from repomount.remotes.base import ApplyResult, Change, Unauthorized
from repomount.vfs.conflicts import Policy
from support.memremote import MemRemote
from support.vfsutil import HELD, ROOT, MakeMount, exists, listdir, read_file, write_file


class RefusingRemote(MemRemote):
    """Refuses every change while `refusing` (a revoked token, say)."""

    refusing = False

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if self.refusing:
            raise Unauthorized("token revoked")
        return await super().apply(changes, base=base)


async def test_a_conflict_held_under_fail_is_shown_after_a_remount(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("d/doc.txt", b"base")
    m = await make_mount(flusher=False, on_conflict=Policy.FAIL, **HELD)
    await write_file(m.vfs, "d/doc.txt", b"mine")
    mem.put("d/doc.txt", b"theirs")
    assert await m.drain() == ["d/doc.txt"]
    await m.restart()
    assert await listdir(m.vfs, "d") == ["doc.txt"]  # was: []
    assert await read_file(m.vfs, "d/doc.txt") == b"mine"


async def test_every_kind_of_change_left_by_a_refused_replay_is_shown(
    make_mount: MakeMount,
) -> None:
    remote = RefusingRemote()
    remote.put("d/old.txt", b"remote")
    remote.put("d/rm.txt", b"remove me")
    m = await make_mount(remote, flusher=False, **HELD)
    await write_file(m.vfs, "d/old.txt", b"edited")
    await write_file(m.vfs, "d/new.txt", b"new")
    await m.vfs.mkdir(ROOT, "e", 0o755)
    e = await m.vfs.lookup(ROOT, "e")
    await m.vfs.mkdir(e.ino, "f", 0o755)
    await write_file(m.vfs, "e/f/deep.txt", b"deep")
    await m.vfs.symlink(ROOT, "link", "d/new.txt")
    d = await m.vfs.lookup(ROOT, "d")
    await m.vfs.unlink(d.ino, "rm.txt")
    remote.refusing = True
    await m.restart()
    assert sorted(await listdir(m.vfs, "")) == ["d", "e", "link"]
    assert sorted(await listdir(m.vfs, "d")) == ["new.txt", "old.txt"]
    assert await read_file(m.vfs, "d/old.txt") == b"edited"
    assert await read_file(m.vfs, "d/new.txt") == b"new"
    assert await read_file(m.vfs, "e/f/deep.txt") == b"deep"
    assert (await m.vfs.lookup(ROOT, "link")).target == "d/new.txt"
    assert not await exists(m.vfs, "d/rm.txt")
    # ... and once the remote takes them, they go as journaled.
    remote.refusing = False
    assert await m.drain() == []
    assert remote.files() == {
        "d/old.txt": b"edited",
        "d/new.txt": b"new",
        "e/f/deep.txt": b"deep",
    }
    assert await read_file(m.vfs, "d/old.txt") == b"edited"
