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
from support.gatedremote import HELD, GatedRemote
from support.vfsutil import MakeMount, exists, listdir, read_file, resolve, write_file


class NoDeleteRemote(GatedRemote):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(
            self.capabilities, delete=False, rename=False, atomic_batch=False
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
