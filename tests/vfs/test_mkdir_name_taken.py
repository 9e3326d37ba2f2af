"""A directory of ours whose name another client took with a file meanwhile (made here
while they made the file, or removed and replaced by them while we wrote in it): the
change was refused ("cannot mkdir: it is a file", "'d' is a file") and held, every file
made in the directory waited behind it forever (`repomount unmount` gave up after its
drain timeout), and their content showed nowhere in the mount. It is a conflict like a
directory renamed onto a name taken elsewhere: the directory goes beside the remote's
file, with what it holds, and the file shows."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from repomount.remotes.base import ApplyResult, Change, Outcome
from repomount.vfs.conflicts import Policy
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, listdir, mkdirs, read_file, resolve, walk, write_file


@pytest.mark.parametrize("policy", [Policy.KEEP_BOTH, Policy.THEIRS, Policy.MINE])
async def test_a_directory_made_where_a_file_was_made_elsewhere_goes_beside_it(
    make_mount: MakeMount, mem: MemRemote, policy: Policy
) -> None:
    m = await make_mount(on_conflict=policy, **HELD)
    await mkdirs(m.vfs, "d/sub")
    await write_file(m.vfs, "d/f", b"ours\n")
    await write_file(m.vfs, "d/sub/g", b"deeper\n")
    mem.put("d", b"theirs\n")  # another client makes a file `d` first
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("d") == b"theirs\n"
    [(copy_f, ours), (copy_g, deeper)] = sorted(files.items())
    copy = copy_f.rsplit("/", 1)[0]
    assert copy.startswith("d.conflict-")
    assert (copy_f, copy_g) == (f"{copy}/f", f"{copy}/sub/g")
    assert (ours, deeper) == (b"ours\n", b"deeper\n")
    # The mount shows what the remote has: their file at `d`, our directory beside it.
    shown, _ = await walk(m.vfs)
    assert shown == mem.files()
    assert await read_file(m.vfs, "d") == b"theirs\n"
    assert sorted(await listdir(m.vfs, copy)) == ["f", "sub"]
    [note] = m.vfs.flusher.conflicts
    assert note.copy == copy
    vfs = await m.restart()
    assert await read_file(vfs, f"{copy}/sub/g") == b"deeper\n"


async def test_under_fail_the_directory_is_held_as_a_conflict(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(on_conflict=Policy.FAIL, **HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"ours\n")
    mem.put("d", b"theirs\n")
    held = await m.drain()
    assert held, "the mkdir is held, not dropped"
    assert mem.files() == {"d": b"theirs\n"}
    assert await read_file(m.vfs, "d/f") == b"ours\n"  # kept, still pending


async def test_a_mkdir_below_a_directory_replaced_by_a_file_elsewhere_goes_beside_it(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Refused for its parent, the mkdir moves with the directory that lost its name
    (renaming it beside itself would meet the same parent again, round after round)."""
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "a")
    assert await m.drain() == []
    mem.remove("a")
    mem.put("a", b"theirs\n")
    await mkdirs(m.vfs, "a/b")
    assert await m.drain() == []
    assert mem.files() == {"a": b"theirs\n"}
    [copy] = [d for d in mem.dirs() if "/" not in d and d != "a"]
    assert copy.startswith("a.conflict-") and f"{copy}/b" in mem.dirs()
    assert await listdir(m.vfs, copy) == ["b"]


async def test_files_written_in_a_directory_another_client_replaced_by_a_file_go_beside_it(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """No mkdir of ours is pending: the directory was there, and another client removed
    it and made a file of its name. The files written in it since go beside it too."""
    mem.put("d/old", b"listed\n")
    m = await make_mount(**HELD)
    assert await listdir(m.vfs, "d") == ["old"]
    await write_file(m.vfs, "d/f", b"ours\n")
    mem.remove("d")
    mem.put("d", b"theirs\n")
    assert await m.drain() == []
    files = mem.files()
    assert files.pop("d") == b"theirs\n"
    [(copy_f, ours)] = files.items()
    assert copy_f.startswith("d.conflict-") and copy_f.endswith("/f") and ours == b"ours\n"
    assert await read_file(m.vfs, "d") == b"theirs\n"
    assert await read_file(m.vfs, copy_f) == b"ours\n"


class _EachAlone(MemRemote):
    """A remote that answers each change of a batch alone (Relace, Terminal Use): one
    refused does not stop the others."""

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        outcomes: list[Outcome] = []
        for c in changes:
            outcomes += (await super().apply([c], base=base)).outcomes
        return ApplyResult(self.head, outcomes)


async def test_several_files_refused_alone_in_a_directory_that_lost_its_name_all_go_beside_it(
    make_mount: MakeMount,
) -> None:
    """The first refusal moves the directory aside with every file in it; the others,
    refused in the same round for the same file in the way, are not held (held under
    their new names, they would never go) but go again there."""
    remote = _EachAlone()
    m = await make_mount(remote, **HELD)
    await mkdirs(m.vfs, "d")
    for name in ("a", "b", "c"):
        await write_file(m.vfs, f"d/{name}", name.encode())
    remote.put("d", b"theirs\n")
    assert await m.drain() == []
    files = remote.files()
    assert files.pop("d") == b"theirs\n"
    assert sorted(p.rsplit("/", 1)[1] for p in files) == ["a", "b", "c"]
    assert len({p.rsplit("/", 1)[0] for p in files}) == 1


async def test_a_directory_made_written_into_and_moved_on_goes_to_its_new_name(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`mkdir d; echo > d/x; mv d e` (a build in a temporary directory, renamed into
    place), all pending, while another client makes a file `d`: the refused changes lie
    before the move, and were left where they were, sent again for ever; the files end
    at `e`, where the directory went."""
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/x", b"ours\n")
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "d", root.ino, "e", 0)
    mem.put("d", b"theirs\n")
    assert await m.drain() == []
    assert mem.files() == {"d": b"theirs\n", "e/x": b"ours\n"}
    assert await read_file(m.vfs, "e/x") == b"ours\n"
    assert await read_file(m.vfs, "d") == b"theirs\n"
