"""A remote that can neither delete nor rename files (Terminal Use): unlink and rename
of a file it has are EPERM, and change nothing. A file whose first upload is on its way
counts as one it has (it was taken for a local-only file: unlink answered 0, and the
delete could never be sent, so every sync and unmount failed from then on). One whose
upload has not begun is still the mount's own: removing or renaming it sends nothing."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from repomount.vfs.core import Vfs
from repomount.vfs.errors import FsError
from support.gatedremote import GatedRemote
from support.vfsutil import HELD, MakeMount, exists, listdir, read_file, resolve, write_file


class NoDeleteRemote(GatedRemote):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(
            self.capabilities, delete=False, rename=False, atomic_batch=False, empty_dirs=False
        )


async def _remove(vfs: Vfs, how: str) -> None:
    """f goes from its name: unlinked, or renamed to g."""
    root = await resolve(vfs, "")
    if how == "unlink":
        await vfs.unlink(root.ino, "f")
    else:
        await vfs.rename(root.ino, "f", root.ino, "g", 0)


@pytest.mark.parametrize("how", ["unlink", "rename"])
async def test_a_file_whose_upload_is_on_its_way_cannot_be_removed(
    make_mount: MakeMount, how: str
) -> None:
    remote = NoDeleteRemote()
    m = await make_mount(remote, **HELD)
    await write_file(m.vfs, "f", b"hi\n")
    async with remote.holding(m.drain):  # (f's upload is on the wire)
        with pytest.raises(FsError) as refused:
            await _remove(m.vfs, how)
        assert refused.value.errno == errno.EPERM
    assert await m.drain() == []  # (nothing held)
    assert remote.files() == {"f": b"hi\n"}
    assert await listdir(m.vfs, "") == ["f"] and await read_file(m.vfs, "f") == b"hi\n"


@pytest.mark.parametrize("how", ["unlink", "rename"])
async def test_a_file_not_sent_yet_is_removed_and_nothing_goes(
    make_mount: MakeMount, how: str
) -> None:
    remote = NoDeleteRemote()
    m = await make_mount(remote, **HELD)
    await write_file(m.vfs, "f", b"hi\n")
    await _remove(m.vfs, how)
    assert await m.drain() == []
    assert remote.files() == ({} if how == "unlink" else {"g": b"hi\n"})
    assert not await exists(m.vfs, "f")


async def test_a_directory_holding_a_file_not_sent_yet_is_not_renamed(
    make_mount: MakeMount,
) -> None:
    """Documented (docs/semantics.md, Terminal Use): a directory rename is not folded
    into the pending uploads below it, so it is refused before anything is sent, and
    changes nothing; an empty directory made here is renamed."""
    remote = NoDeleteRemote()
    m = await make_mount(remote, **HELD)
    root = await resolve(m.vfs, "")
    await m.vfs.mkdir(root.ino, "d", 0o755)
    await write_file(m.vfs, "d/f", b"hi\n")
    with pytest.raises(FsError) as refused:
        await m.vfs.rename(root.ino, "d", root.ino, "e", 0)
    assert refused.value.errno == errno.EPERM
    await m.vfs.mkdir(root.ino, "empty", 0o755)
    await m.vfs.rename(root.ino, "empty", root.ino, "moved", 0)
    assert await listdir(m.vfs, "") == ["d", "moved"]
    assert await m.drain() == []
    assert remote.files() == {"d/f": b"hi\n"}
