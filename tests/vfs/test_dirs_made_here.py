"""A directory made through the mount, on a remote where directories exist only
through their files (Relace, Terminal Use, Oxen, Sentry: no mkdir is sent). Once a file
of it landed, it is the remote's like any listed one: what others add or change in it
shows. (The fsx exerciser: it stayed the mount's own for good, never listed again, on
all four: a file changed elsewhere read its old content after 90 s, a new one never
appeared, a directory renamed elsewhere left a ghost.)"""

from __future__ import annotations

from dataclasses import replace

import trio

from repomount.remotes.base import Listing
from support.memremote import MemRemote
from support.vfsutil import (
    ROOT,
    MakeMount,
    VfsMount,
    listdir,
    mkdirs,
    read_file,
    resolve,
    write_file,
)


class FilesOnly(MemRemote):
    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, empty_dirs=False)

    def listing(self, path: str, *, recursive: bool = False) -> Listing:
        """A directory is listed only while a file lies below it, as on those remotes."""
        listing = super().listing(path, recursive=recursive)
        files = [p for p, it in self.items.items() if it.kind == "file"]
        entries = [
            e
            for e in listing.entries
            if e.kind != "dir" or any(f.startswith(e.path + "/") for f in files)
        ]
        return replace(listing, entries=entries)


async def _mounted(make_mount: MakeMount) -> tuple[FilesOnly, VfsMount]:
    """A mount of a new FilesOnly remote, its listings never trusted (metadata TTL 0)."""
    remote = FilesOnly()
    return remote, await make_mount(remote, metadata_ttl=0.0)


async def _drained(m: VfsMount) -> None:
    with trio.fail_after(20):
        assert await m.drain() == []


async def test_changes_elsewhere_in_a_directory_made_here_show(make_mount: MakeMount) -> None:
    remote, m = await _mounted(make_mount)
    await mkdirs(m.vfs, "d/e")
    await write_file(m.vfs, "d/e/f", b"v1\n")
    await _drained(m)
    assert remote.files() == {"d/e/f": b"v1\n"}
    remote.put("d/e/f", b"v2\n")  # someone else, meanwhile
    remote.put("d/e/h", b"new\n")
    remote.put("d/g", b"beside\n")
    assert await read_file(m.vfs, "d/e/f") == b"v2\n"
    assert await listdir(m.vfs, "d/e") == ["f", "h"]
    assert await listdir(m.vfs, "d") == ["e", "g"]


async def test_a_directory_made_here_with_no_file_yet_stays(make_mount: MakeMount) -> None:
    """(Still the mount's own until a file of it lands: a listing does not drop it.)"""
    remote, m = await _mounted(make_mount)
    await mkdirs(m.vfs, "empty")
    remote.put("other", b"x\n")
    assert await listdir(m.vfs, "") == ["empty", "other"]


async def test_a_directory_emptied_here_stays_until_removed(make_mount: MakeMount) -> None:
    """The remote has nothing below a directory whose last file was deleted here, so its
    next listing left it out: it vanished ~5 s after `rm d/f` (then `ls d` and a create
    in it by a process working there were ENOENT; pjdfstest's final `rmdir` of its own
    emptied test directory too). So did a directory above it holding nothing else. They
    stay, as new ones do, until a file lands in them or they are removed."""
    remote, m = await _mounted(make_mount)
    await mkdirs(m.vfs, "a/b")
    await write_file(m.vfs, "a/b/f", b"x\n")
    await write_file(m.vfs, "top", b"t\n")
    await _drained(m)
    b = await resolve(m.vfs, "a/b")
    await m.vfs.unlink(b.ino, "f")
    await _drained(m)
    assert remote.files() == {"top": b"t\n"}
    remote.put("other", b"o\n")  # a change elsewhere: the root is listed again
    assert await listdir(m.vfs, "") == ["a", "other", "top"]
    assert await listdir(m.vfs, "a") == ["b"]
    assert await listdir(m.vfs, "a/b") == []
    await write_file(m.vfs, "a/b/g", b"y\n")  # a process working in it goes on
    await _drained(m)
    assert remote.files() == {"a/b/g": b"y\n", "other": b"o\n", "top": b"t\n"}
    remote.put("a/b/h", b"elsewhere\n")  # the remote's again once a file of it landed
    assert await listdir(m.vfs, "a/b") == ["g", "h"]


async def test_a_directory_emptied_by_a_rename_away_stays(make_mount: MakeMount) -> None:
    remote, m = await _mounted(make_mount)
    await mkdirs(m.vfs, "src")
    await write_file(m.vfs, "src/f", b"x\n")
    await _drained(m)
    src = await resolve(m.vfs, "src")
    await m.vfs.rename(src.ino, "f", ROOT, "f", 0)
    await _drained(m)
    assert remote.files() == {"f": b"x\n"}
    assert await listdir(m.vfs, "") == ["f", "src"]
    await m.vfs.rmdir(ROOT, "src")  # (local only: the remote never had it alone)
    assert await listdir(m.vfs, "") == ["f"]


async def test_a_directory_emptied_elsewhere_goes(make_mount: MakeMount) -> None:
    """(What others empty on the remote goes from the mount, as before.)"""
    remote, m = await _mounted(make_mount)
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"x\n")
    await _drained(m)
    remote.remove("d/f")
    assert await listdir(m.vfs, "") == []
