"""A directory renamed here onto a name another client took meanwhile: the rename loses
its conflict, but the files it carried may hold content never sent (made in the
directory before the rename). That content was sent at the old name, where it merged
with a file made there since (`mkdir build; ...; mv build old; mkdir build; ...`): the
earlier file's content was silently dropped. Found by a random-operations run of two
mounts and the server's API; the policies that settle a conflict keep the directory
next to the remote's, as keep-both keeps a file."""

from __future__ import annotations

import pytest

from repomount.vfs.conflicts import Policy
from repomount.vfs.core import Vfs
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, listdir, mkdirs, read_file, resolve, walk, write_file


async def _mv(vfs: Vfs, src: str, dst: str) -> None:
    root = await resolve(vfs, "")
    await vfs.rename(root.ino, src, root.ino, dst, 0)


@pytest.mark.parametrize("policy", [Policy.KEEP_BOTH, Policy.THEIRS, Policy.MINE])
async def test_a_directory_renamed_onto_a_name_taken_elsewhere_keeps_what_it_carried(
    make_mount: MakeMount, mem: MemRemote, policy: Policy
) -> None:
    m = await make_mount(on_conflict=policy, **HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"one\n")
    await _mv(m.vfs, "d", "e")
    mem.put("e/x", b"theirs\n")  # another client makes `e` first
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"two\n")  # a new file at the old name
    await write_file(m.vfs, "e/g", b"three\n")  # more written in the moved directory
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("e/x") == b"theirs\n"
    assert files.pop("d/f") == b"two\n"
    [(copy_f, one), (copy_g, three)] = sorted(files.items())
    assert (one, three) == (b"one\n", b"three\n")
    copy = copy_f.rsplit("/", 1)[0]
    assert copy.startswith("e.conflict-") and copy_g == f"{copy}/g"
    # The mount shows what the remote has: theirs at `e`, ours beside it.
    shown, _ = await walk(m.vfs)
    assert shown == mem.files()
    assert sorted(await listdir(m.vfs, "e")) == ["x"]
    assert await read_file(m.vfs, f"{copy}/f") == b"one\n"
    vfs = await m.restart()
    assert await read_file(vfs, f"{copy}/g") == b"three\n"


async def test_a_directory_moved_on_after_the_rename_that_lost_goes_along(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Later changes naming the renamed directory follow it to its conflict name, until
    it moves away from that name; what is made at the name afterwards stays there."""
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"one\n")
    await _mv(m.vfs, "d", "e")
    mem.put("e/x", b"theirs\n")
    await write_file(m.vfs, "e/f", b"one, edited\n")
    await _mv(m.vfs, "e", "z")
    await mkdirs(m.vfs, "e")  # (the local `e` was free again: merges with theirs)
    await write_file(m.vfs, "e/y", b"mine\n")
    assert await m.drain() == []
    files = mem.files()
    assert files == {"e/x": b"theirs\n", "e/y": b"mine\n", "z/f": b"one, edited\n"}


@pytest.mark.parametrize("policy", [Policy.KEEP_BOTH, Policy.THEIRS, Policy.MINE])
async def test_a_directory_emptied_here_and_written_into_elsewhere_is_theirs(
    make_mount: MakeMount, mem: MemRemote, policy: Policy
) -> None:
    """`rmdir d` (or a directory renamed over the empty `d`) while another client writes
    `d/x`: the remote refuses to delete a directory that is not empty. That is a change
    made elsewhere, so a conflict: the delete is dropped (theirs stays and shows), the
    renamed directory goes beside it. It was held as refused, for ever, with every later
    change at or below `d` behind it. Found by a random-operations run of two mounts."""
    m = await make_mount(on_conflict=policy, **HELD)
    await mkdirs(m.vfs, "d")
    await mkdirs(m.vfs, "e")
    await mkdirs(m.vfs, "a")
    await write_file(m.vfs, "a/mine", b"mine\n")
    assert await m.drain() == []
    root = await resolve(m.vfs, "")
    await m.vfs.rmdir(root.ino, "d")
    await _mv(m.vfs, "a", "e")  # over the empty `e`: a delete of `e`, then the rename
    mem.put("d/x", b"theirs\n")  # another client writes into both meanwhile
    mem.put("e/y", b"theirs too\n")
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("d/x") == b"theirs\n"
    assert files.pop("e/y") == b"theirs too\n"
    [(copy, mine)] = files.items()
    assert copy.startswith("e.conflict-") and copy.endswith("/mine") and mine == b"mine\n"
    shown, _ = await walk(m.vfs)
    assert shown == mem.files()
    await write_file(m.vfs, "d/later", b"later\n")  # nothing held back behind it
    assert await m.drain() == []
    assert mem.files()["d/later"] == b"later\n"
