"""A file saved again and again keeps one version in the content cache: the one its
last save made. Every earlier one was kept until the cache was full (a SQLite
database's 4 MiB WAL, saved at each transaction, filled 9.4 GB), though nothing reads
a version the mount no longer shows."""

from __future__ import annotations

import os

from repomount.vfs.content import content_key
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import MakeMount, open_path, read_all, resolve, write_file


def _cached(m_vfs: object) -> list[str]:
    root = m_vfs.cache.content_dir  # type: ignore[attr-defined]
    return sorted(p.name for p in root.glob("*/*"))


async def test_a_file_saved_again_keeps_only_its_latest_version(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount()
    await write_file(m.vfs, "db-wal", b"first\n")
    assert await m.drain() == []
    first = (await resolve(m.vfs, "db-wal")).version
    assert first is not None
    assert _cached(m.vfs) == [content_key("db-wal", first)]
    for i in range(5):
        await write_file(m.vfs, "db-wal", b"save %d\n" % i)
        assert await m.drain() == []
    last = (await resolve(m.vfs, "db-wal")).version
    assert last is not None and mem.files() == {"db-wal": b"save 4\n"}
    # (deleted in a worker thread)
    await wait_until_async(lambda: len(_cached(m.vfs)) == 1, 10, "the old versions deleted")
    assert _cached(m.vfs) == [content_key("db-wal", last)]
    assert m.vfs.cache.usage() == len(b"save 4\n")
    fh, _ = await open_path(m.vfs, "db-wal", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == b"save 4\n"
    await m.vfs.release(fh)
