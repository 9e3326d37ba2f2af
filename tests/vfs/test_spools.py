"""Spools are made ahead, in a worker thread (spoolpool.py): a create() or an
open(O_TRUNC) takes one ready-made instead of making a file on the trio thread, and a
spool that could not be filled is deleted, not left behind."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio

from repomount.vfs import fileio, spoolpool
from repomount.vfs.errors import FsError
from repomount.vfs.spoolpool import SpoolPool
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import MakeMount, open_path, write_file

HELD = {"flush_delay": 3600.0, "max_flush_window": 3600.0}


def spools_on_the_trio_thread(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every spool made on the main (trio) thread."""
    made: list[Path] = []
    make = spoolpool.make_spool

    def recording(directory: Path) -> tuple[Path, int]:
        path, fd = make(directory)
        if threading.current_thread() is threading.main_thread():
            made.append(path)
        return path, fd

    monkeypatch.setattr(spoolpool, "make_spool", recording)
    return made


async def test_creates_take_spools_made_in_a_worker_thread(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = spools_on_the_trio_thread(monkeypatch)
    m = await make_mount(**HELD)
    pool = m.vfs.files.pool
    await wait_until_async(lambda: pool.ready == pool.size, 5, "the pool filled")
    # Each round takes fewer than half: from above half (as the pool keeps itself) it
    # never runs out, yet it passes below half, so it is refilled in between.
    batch = pool.size // 2 - 1
    for round_ in range(3):
        for i in range(batch):
            await write_file(m.vfs, f"r{round_}-{i}", b"x")
        await wait_until_async(lambda: pool.ready > pool.size // 2, 5, "the pool refilled")
    assert inline == []
    assert await m.drain() == []
    assert len(mem.files()) == 3 * batch


async def test_a_spool_that_cannot_be_filled_is_deleted(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await make_mount(**HELD)
    await write_file(m.vfs, "f", b"before")
    spool_dir = m.vfs.files.spool_dir
    pool = m.vfs.files.pool
    await wait_until_async(lambda: pool.ready == pool.size, 5, "the pool filled")

    def no_space(fd: int, src: int | None, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "fill_spool", no_space)
    fh, _ = await open_path(m.vfs, "f", os.O_WRONLY)
    with pytest.raises((OSError, FsError)) as raised:
        await m.vfs.write(fh, 0, b"after")  # (the write copies the content first)
    assert raised.value.errno == errno.ENOSPC
    await m.vfs.release(fh)
    left = {p.name for p in spool_dir.iterdir()}
    assert left == {p.name for p in pool.paths()}  # the pool's only: none half-made
    assert len(left) == pool.size - 1


async def test_the_pool_deletes_what_it_kept_when_it_stops(tmp_path: Path) -> None:
    pool = SpoolPool(tmp_path, size=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run)
        await wait_until_async(lambda: pool.ready == 8, 5, "the pool filled")
        taken, fd = pool.take()
        os.close(fd)
        nursery.cancel_scope.cancel()
    assert [p.name for p in tmp_path.iterdir()] == [taken.name]


async def test_a_spool_is_made_on_the_spot_when_the_pool_cannot_make_them(
    tmp_path: Path,
) -> None:
    """The refill stops at the first error (the directory is gone, the disk is full)
    and take() meets that error itself, where it can be reported."""
    pool = SpoolPool(tmp_path / "gone", size=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run)
        await trio.sleep(0.05)
        assert pool.ready == 0
        with pytest.raises(FileNotFoundError):
            pool.take()
        (tmp_path / "gone").mkdir()
        path, fd = pool.take()
        os.close(fd)
        assert path.parent == tmp_path / "gone" and path.stat().st_size == 0
        await wait_until_async(lambda: pool.ready == 4, 5, "the pool filled again")
        nursery.cancel_scope.cancel()
