"""A listing that leaves out a directory holding a file still in use here (open, or
with a change not yet sent) must not drop the directory: where directories exist only
through their files, a remote lists none while it has no file below it, which on
Sentry is the case for a moment during every replace of a file (its old file is
deleted, then the new one uploaded). A poll in that moment dropped the directory with
the open file in it: `ls d` said ENOENT until the next listing, and what the program
wrote after that went to a file with no name, discarded at its close, with nothing
pending, no conflict and no error (LTP's fsx-linux in a subdirectory of a Sentry
mount: the release kept an older content)."""

from __future__ import annotations

import os
from dataclasses import replace

from repomount.remotes.base import Listing
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    MakeMount,
    close,
    listdir,
    mkdirs,
    open_path,
    read_file,
    write_file,
)


class FilesOnly(MemRemote):
    """Directories only through their files; `hidden` paths are left out of listings
    (a listing taken while the remote has no file there for a moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, empty_dirs=False)
        self.hidden: set[str] = set()

    def listing(self, path: str, *, recursive: bool = False) -> Listing:
        listing = super().listing(path, recursive=recursive)
        files = [p for p, it in self.items.items() if it.kind == "file" and p not in self.hidden]
        entries = [
            e
            for e in listing.entries
            if e.path not in self.hidden
            and (e.kind != "dir" or any(f.startswith(e.path + "/") for f in files))
        ]
        return replace(listing, entries=entries)


async def test_a_directory_left_out_while_a_file_in_it_is_open_stays(
    make_mount: MakeMount,
) -> None:
    remote = FilesOnly()
    m = await make_mount(remote, metadata_ttl=0.0)
    await mkdirs(m.vfs, "d/e")
    await write_file(m.vfs, "d/e/f", b"v1\n")
    assert await m.drain() == []
    fh, _ = await open_path(m.vfs, "d/e/f", os.O_RDWR)
    await m.vfs.write(fh, 0, b"v2\n")
    remote.hidden = {"d/e/f"}  # listed in the moment it is not there
    assert await listdir(m.vfs, "") == ["d"]
    assert await listdir(m.vfs, "d") == ["e"]
    assert await listdir(m.vfs, "d/e") == ["f"]
    remote.hidden = set()
    await m.vfs.write(fh, 0, b"v3\n")
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert remote.files() == {"d/e/f": b"v3\n"}
    assert await read_file(m.vfs, "d/e/f") == b"v3\n"


async def test_a_directory_left_out_with_a_pending_file_in_it_stays(
    make_mount: MakeMount,
) -> None:
    """(A closed file whose change waits: the directory and the file stay shown.)"""
    remote = FilesOnly()
    m = await make_mount(remote, metadata_ttl=0.0, **HELD)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"v1\n")
    await write_file(m.vfs, "g", b"g\n")
    assert await m.drain() == []
    await write_file(m.vfs, "d/f", b"v2\n")
    assert m.vfs.journal.touches("d/f")  # (held: not sent yet)
    remote.hidden = {"d/f"}
    assert await listdir(m.vfs, "") == ["d", "g"]
    assert await read_file(m.vfs, "d/f") == b"v2\n"
    remote.hidden = set()
    assert await m.drain() == []
    assert remote.files() == {"d/f": b"v2\n", "g": b"g\n"}


async def test_a_directory_emptied_elsewhere_with_nothing_in_use_still_goes(
    make_mount: MakeMount,
) -> None:
    remote = FilesOnly()
    m = await make_mount(remote, metadata_ttl=0.0)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"x\n")
    assert await m.drain() == []
    remote.remove("d/f")
    assert await listdir(m.vfs, "") == []
