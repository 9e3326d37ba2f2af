"""Where a file's clean content is read from while the names above it change here: a
listed file reads from its own path (kept as HERE, not a second copy of the path) until
a rename here moves it, and from then on from where the remote still keeps it."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio

from repomount.remotes.base import ApplyResult, Change, Fetched
from repomount.vfs.content import ContentCache
from repomount.vfs.nodes import HERE
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    ROOT,
    MakeMount,
    close,
    open_path,
    read_all,
    read_file,
    resolve,
)


async def test_a_file_below_a_directory_renamed_here_reads_from_the_old_name(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("d/sub/x", b"remote x\n")
    m = await make_mount(**HELD)
    node = await resolve(m.vfs, "d/sub/x")
    assert node.fetch_path == HERE and node.source == "d/sub/x"
    await m.vfs.rename(ROOT, "d", ROOT, "e", 0)
    # Not fetched yet, and the remote has no e/ until the rename lands.
    assert node.source == "d/sub/x"
    assert await read_file(m.vfs, "e/sub/x") == b"remote x\n"
    assert await m.drain() == []
    assert mem.files() == {"e/sub/x": b"remote x\n"}
    assert node.source == "e/sub/x" and node.fetch_path == HERE


class _AnswerLate(MemRemote):
    """The remote applies a commit at once; its answer is held until the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.applied, self.gate = trio.Event(), trio.Event()

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        result = await super().apply(changes, base=base)
        self.applied.set()
        await self.gate.wait()
        return result


async def test_a_file_read_while_the_rename_above_it_is_on_its_way_back_is_read(
    make_mount: MakeMount,
) -> None:
    """`mv d e; cat e/sub/x` while the rename's answer is on its way: the remote has no
    d/sub/x any more, and the read failed (NotFound) instead of waiting for the answer
    that says where the content went (a vfs test caught it, one run in three)."""
    late = _AnswerLate()
    late.put("d/sub/x", b"remote x\n")
    m = await make_mount(late, **HELD)
    await resolve(m.vfs, "d/sub/x")
    await m.vfs.rename(ROOT, "d", ROOT, "e", 0)
    got: list[bytes] = []

    async def cat() -> None:
        got.append(await read_file(m.vfs, "e/sub/x"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.drain)
        await late.applied.wait()
        assert late.files() == {"e/sub/x": b"remote x\n"}
        nursery.start_soon(cat)
        await trio.sleep(0.05)
        assert got == []  # (waits for the answer)
        late.gate.set()
    assert got == [b"remote x\n"]


async def test_a_file_kept_without_its_name_does_not_follow_its_old_directory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """An unlinked file the kernel still holds (looked up, or open) reads the version it
    had from where it was, even when the directory it was in is renamed afterwards."""
    mem.put("d/x", b"x\n")
    mem.put("d/y", b"y\n")
    m = await make_mount(**HELD)
    node = await resolve(m.vfs, "d/x")
    d = await resolve(m.vfs, "d")
    await m.vfs.unlink(d.ino, "x")
    assert not node.attached and m.vfs.inodes.get(node.ino) is node  # (its lookup)
    await m.vfs.rename(ROOT, "d", ROOT, "e", 0)
    assert node.path == "e/x"  # (its parent's name)
    assert node.source == "d/x"
    assert (await resolve(m.vfs, "e/y")).source == "d/y"


async def test_a_landed_rename_does_not_make_a_nameless_file_follow_its_old_directory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """d/f open; mv d e; rm e/f; both land; mv e g: the open file's source stays where
    the remote kept it, not its old parent's new name (a second reading found it
    switched back to "its own path", which then followed g)."""
    mem.put("d/f", b"f\n")
    m = await make_mount(**HELD)
    fh, node = await open_path(m.vfs, "d/f", os.O_RDONLY)
    await m.vfs.rename(ROOT, "d", ROOT, "e", 0)
    await m.vfs.unlink((await resolve(m.vfs, "e")).ino, "f")
    assert await m.drain() == []
    assert not node.attached and node.source == "e/f"
    await m.vfs.rename(ROOT, "e", ROOT, "g", 0)
    assert node.path == "g/f" and node.source == "e/f"
    await close(m.vfs, fh)


async def test_reads_go_on_after_the_cache_is_removed_behind_the_mount(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Someone clears ~/.cache while mounted: what was cached is fetched again, and new
    downloads (one by one, and a tree walk's read-ahead) find their directory again."""
    for i in range(20):
        mem.put(f"d/f{i:02}", b"%d\n" % i)
    m = await make_mount()
    assert await read_file(m.vfs, "d/f00") == b"0\n"
    shutil.rmtree(m.vfs.config.cache_dir)
    assert await read_file(m.vfs, "d/f00") == b"0\n"
    for i in range(20):
        assert await read_file(m.vfs, f"d/f{i:02}") == b"%d\n" % i
    shutil.rmtree(m.vfs.config.cache_dir)
    assert await read_file(m.vfs, "d/f07") == b"7\n"


async def test_a_download_whose_cache_directory_is_emptied_meanwhile_is_read(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone clears ~/.cache while a file's content is arriving into it: the open that
    fetched it reads what arrived (it was ENOENT, "No such file or directory", for a file
    that is there: the downloaded file was opened again by its name), and the next open
    fetches it again."""
    mem.put("d/f", b"content\n")
    m = await make_mount()
    plain_read = mem.read

    async def read(path: str, dest: BinaryIO, **options: Any) -> Fetched:
        got = await plain_read(path, dest, **options)
        shutil.rmtree(m.vfs.config.cache_dir)  # (while the answer is still arriving)
        return got

    monkeypatch.setattr(mem, "read", read)
    assert await read_file(m.vfs, "d/f") == b"content\n"
    monkeypatch.setattr(mem, "read", plain_read)
    assert await read_file(m.vfs, "d/f") == b"content\n"


def _open_files() -> set[str]:
    """What this process's descriptors name ("PATH (deleted)" once unlinked)."""
    named = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            named.add(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
        except OSError:  # (closed meanwhile)
            pass
    return named


def _temp_paths(monkeypatch: pytest.MonkeyPatch, wrap: Any = Path) -> list[Path]:
    """The downloads' temporary files from now on (each made a `wrap`)."""
    plain = ContentCache.temp_path
    made: list[Path] = []

    def temp_path(self: ContentCache) -> Path:
        made.append(wrap(plain(self)))
        return made[-1]

    monkeypatch.setattr(ContentCache, "temp_path", temp_path)
    return made


async def test_a_download_that_fails_as_it_is_closed_leaves_no_descriptor(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download's last bytes are written as its file closes: a full disk fails that
    (ENOSPC). The read fails, and the descriptor opened to read it back is closed (it
    stayed open, and kept the deleted file's blocks taken on the full disk)."""
    mem.put("d/f", b"content\n")
    m = await make_mount()

    class ClosingFails:
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            return self.f.write(data)

        def __enter__(self) -> ClosingFails:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    class TempPath(type(Path())):  # type: ignore[misc]
        def open(self, *args: Any, **kwargs: Any) -> Any:
            return ClosingFails(super().open(*args, **kwargs))

    await resolve(m.vfs, "d/f")
    with monkeypatch.context() as patch:
        made = _temp_paths(patch, TempPath)
        with pytest.raises(OSError):
            await read_file(m.vfs, "d/f")
    assert made and not {str(p) for p in made} & _open_files()
    assert await read_file(m.vfs, "d/f") == b"content\n"


async def test_a_download_the_cache_cannot_keep_is_read(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache failing to keep a downloaded file (EACCES, EIO as it moves in) does
    not fail the read that fetched it, nor leave its descriptor open."""
    mem.put("d/f", b"content\n")
    m = await make_mount()

    def commit(self: ContentCache, tmp: Path, path: str, version: str) -> Path | None:
        raise PermissionError(errno.EACCES, "Permission denied")

    await resolve(m.vfs, "d/f")
    made = _temp_paths(monkeypatch)
    monkeypatch.setattr(ContentCache, "commit", commit)
    fh, _ = await open_path(m.vfs, "d/f", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == b"content\n"
    assert made and {str(p) for p in made} <= _open_files()  # (read through it) ...
    await close(m.vfs, fh)
    assert not {str(p) for p in made} & _open_files()  # ... and closed with the file
    assert not any(p.exists() for p in made)
