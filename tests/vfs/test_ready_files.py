"""Empty spools are made ahead, in a worker thread (readyfiles.py): a create() or an
open(O_TRUNC) takes a ready one instead of making a file on the trio thread; a spool
that could not be filled is deleted, not left behind."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio

from repomount.vfs import readyfiles, sources
from repomount.vfs.errors import FsError
from repomount.vfs.readyfiles import ReadyFiles
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import HELD, MakeMount, open_path, write_file


def made_on_the_trio_thread(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every file readyfiles makes on the main (trio) thread."""
    made: list[Path] = []
    make = readyfiles.make_file

    def recording(directory: Path) -> Path:
        path = make(directory)
        if threading.current_thread() is threading.main_thread():
            made.append(path)
        return path

    monkeypatch.setattr(readyfiles, "make_file", recording)
    return made


async def filled(ready: ReadyFiles) -> None:
    await wait_until_async(lambda: len(ready.paths()) == ready.size, 5, "the ready files made")


async def test_creates_take_spools_made_in_a_worker_thread(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = made_on_the_trio_thread(monkeypatch)
    m = await make_mount(**HELD)
    ready = m.vfs.files.ready
    await filled(ready)
    # Each round takes fewer than half: from above half (as they are kept) they never
    # run out, yet they pass below half, so they are made again in between.
    batch = ready.size // 2 - 1
    for round_ in range(3):
        for i in range(batch):
            await write_file(m.vfs, f"r{round_}-{i}", b"x")
        await wait_until_async(lambda: len(ready.paths()) > ready.size // 2, 5, "more made")
    assert inline == []
    assert await m.drain() == []
    assert len(mem.files()) == 3 * batch


async def test_a_spool_that_cannot_be_filled_is_deleted(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await make_mount(**HELD)
    spool_dir = m.vfs.files.spool_dir
    ready = m.vfs.files.ready
    await filled(ready)
    await write_file(m.vfs, "f", b"before")  # (takes one: above half, none made)

    def no_space(fd: int, src: int | None, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources, "fill_spool", no_space)
    fh, _ = await open_path(m.vfs, "f", os.O_WRONLY)
    with pytest.raises((OSError, FsError)) as raised:
        await m.vfs.write(fh, 0, b"after")  # (the write copies the content first)
    assert raised.value.errno == errno.ENOSPC
    await m.vfs.release(fh)
    left = {p.name for p in spool_dir.iterdir()}
    assert left == {p.name for p in ready.paths()}  # the ready ones only: none half-made
    assert len(left) == ready.size - 2


async def test_the_files_not_taken_are_deleted_when_the_task_stops(tmp_path: Path) -> None:
    ready = ReadyFiles(tmp_path, size=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ready.run)
        await filled(ready)
        taken = ready.take()
        nursery.cancel_scope.cancel()
    assert [p.name for p in tmp_path.iterdir()] == [taken.name]


async def test_a_file_is_made_on_the_spot_when_none_can_be_made_ahead(tmp_path: Path) -> None:
    """Making them ahead stops at the first error (the directory is gone, the disk is
    full), and take() meets that error itself, where it can be reported."""
    ready = ReadyFiles(tmp_path / "gone", size=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ready.run)
        await trio.sleep(0.05)
        assert ready.paths() == []
        with pytest.raises(FileNotFoundError):
            ready.take()
        (tmp_path / "gone").mkdir()
        path = ready.take()
        assert path.parent == tmp_path / "gone" and path.stat().st_size == 0
        await filled(ready)
        nursery.cancel_scope.cancel()


async def test_a_ready_spool_deleted_behind_our_back_is_made_again(make_mount: MakeMount) -> None:
    m = await make_mount(**HELD)
    ready = m.vfs.files.ready
    await filled(ready)
    for path in ready.paths():
        path.unlink()
    await write_file(m.vfs, "f", b"written all the same")
    assert await m.drain() == []
