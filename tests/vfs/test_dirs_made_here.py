"""A directory made through the mount, on a remote where directories exist only
through their files (Relace, Terminal Use, Oxen, Sentry: no mkdir is sent). Once a file
of it landed, it is the remote's like any listed one: what others add or change in it
shows. (The fsx exerciser: it stayed the mount's own for good, never listed again, on
all four: a file changed elsewhere read its old content after 90 s, a new one never
appeared, a directory renamed elsewhere left a ghost.)"""

from __future__ import annotations

from dataclasses import replace

import trio

from support.memremote import MemRemote
from support.vfsutil import MakeMount, listdir, mkdirs, read_file, write_file


class FilesOnly(MemRemote):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, empty_dirs=False)


async def test_changes_elsewhere_in_a_directory_made_here_show(make_mount: MakeMount) -> None:
    remote = FilesOnly()
    m = await make_mount(remote, metadata_ttl=0.0)
    await mkdirs(m.vfs, "d/e")
    await write_file(m.vfs, "d/e/f", b"v1\n")
    with trio.fail_after(20):
        assert await m.drain() == []
    assert remote.files() == {"d/e/f": b"v1\n"}
    remote.put("d/e/f", b"v2\n")  # someone else, meanwhile
    remote.put("d/e/h", b"new\n")
    remote.put("d/g", b"beside\n")
    assert await read_file(m.vfs, "d/e/f") == b"v2\n"
    assert await listdir(m.vfs, "d/e") == ["f", "h"]
    assert await listdir(m.vfs, "d") == ["e", "g"]


async def test_a_directory_made_here_with_no_file_yet_stays(make_mount: MakeMount) -> None:
    """(Still the mount's own until a file of it lands: a listing does not drop it.)"""
    remote = FilesOnly()
    m = await make_mount(remote, metadata_ttl=0.0)
    await mkdirs(m.vfs, "empty")
    remote.put("other", b"x\n")
    assert await listdir(m.vfs, "") == ["empty", "other"]
