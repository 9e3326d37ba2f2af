"""The content cache emptied (someone clearing ~/.cache) just as a landed write is
booked: keeping the sent content as a cache entry fails, and that must not matter.

Before, the failure was taken for one of the state directory: the booking stopped
part-way and the batch went again; with an fsync waiting on it, the file's next save
came back as a conflict with our own landed version (under keep-both a conflict copy
of our own content, the name showing an older version, the fsync ESTALE)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from repomount.vfs.content import ContentCache
from support.memremote import MemRemote
from support.vfsutil import MakeMount, close, listdir, mkdirs, open_path, read_file, write_file


def failing_link_in(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> list[str]:
    """ContentCache.link_in fails as when its shard directory was just removed, once, at
    its call number `fail_at`; the paths it was called for."""
    plain = ContentCache.link_in
    calls: list[str] = []

    def link_in(self: ContentCache, src: Path, path: str, version: str) -> Any:
        calls.append(path)
        if len(calls) == fail_at + 1:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src))
        return plain(self, src, path, version)

    monkeypatch.setattr(ContentCache, "link_in", link_in)
    return calls


async def test_a_landed_write_whose_cache_entry_cannot_be_made_is_landed(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await make_mount()
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"one\n")
    assert await m.drain() == []
    calls = failing_link_in(monkeypatch, 0)
    await write_file(m.vfs, "d/f", b"two\n")
    assert await m.drain() == []
    assert calls == ["d/f"]
    assert await read_file(m.vfs, "d/f") == b"two\n"
    assert mem.items["d/f"].data == b"two\n"
    assert (await m.vfs.status())["conflicts"] == []


@pytest.mark.parametrize("fail_at", [0, 1])
@pytest.mark.parametrize("fsync", [False, True])
async def test_saves_after_a_landed_write_whose_cache_entry_failed_are_no_conflict(
    make_mount: MakeMount,
    mem: MemRemote,
    monkeypatch: pytest.MonkeyPatch,
    fail_at: int,
    fsync: bool,
) -> None:
    m = await make_mount()
    await mkdirs(m.vfs, "d")
    await write_file(m.vfs, "d/f", b"one\n")
    assert await m.drain() == []
    calls = failing_link_in(monkeypatch, fail_at)
    for i in range(6):
        fh, _ = await open_path(m.vfs, "d/f", os.O_WRONLY | os.O_TRUNC)
        await m.vfs.write(fh, 0, b"v%d\n" % i)
        if fsync and i % 2:
            await m.vfs.fsync(fh)  # (was ESTALE)
        await close(m.vfs, fh)
        await trio.sleep(0.05)
    assert await m.drain() == []
    assert len(calls) > fail_at
    assert (await m.vfs.status())["conflicts"] == []
    assert await listdir(m.vfs, "d") == ["f"]
    assert await read_file(m.vfs, "d/f") == b"v5\n"
    assert mem.items["d/f"].data == b"v5\n"
