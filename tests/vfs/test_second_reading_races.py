"""Races found by a second reading of large-file streaming (partial.py) and read-ahead
(prefetch.py): each test asserts what docs/semantics.md promises, and each failed
before its fix. (Change-feed trust: test_second_reading_feed_races.py.)"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO

import pytest
import trio

from repomount.remotes.base import Fetched
from repomount.vfs.errors import FsError
from repomount.vfs.prefetch import Candidate
from support.memremote import MemRemote
from support.streamingremote import Streaming
from support.util import sha, wait_until_async
from support.vfsutil import MakeMount, close, open_path, read_all, read_file, resolve

MiB = 1 << 20
SIZE = 64 * MiB


def content() -> bytes:
    return b"".join(bytes([i]) * MiB for i in range(SIZE // MiB))


# ---------------------------------------------------------------------- partial.py


async def test_partial_release_while_a_copy_waits_writes_through_a_closed_fd(
    make_mount: MakeMount, tmp_path: os.PathLike[str]
) -> None:
    """rename of an open, still-arriving large file to a local-only name copies its
    content (_own_blob -> open_content -> partial.finished(), no node lock). If the last
    handle closes meanwhile, Partial.close() closes wfd and unlinks the file, but the
    waiting finished() starts a new stream on the closed Partial: it pwrite()s into
    whatever file now has that descriptor number, and the copy dup()s the closed
    OpenFile.fd. Wrong bytes in someone else's file and in the renamed file."""
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    root = await resolve(m.vfs, "")
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    freed = {f.fd, f.partial.wfd}
    renamed: list[BaseException | None] = []

    async def rename() -> None:
        try:
            await m.vfs.rename(root.ino, "big.bin", root.ino, "big.bin~", 0)
            renamed.append(None)
        except BaseException as e:
            renamed.append(e)
            raise

    victims: dict[int, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rename)
        await wait_until_async(lambda: len(remote.offsets) >= 1, 5, "the stream")
        await trio.sleep(0.05)  # the rename waits in partial.finished()
        await close(m.vfs, fh)  # the last handle goes while the copy waits
        # Other files opened now get the descriptor numbers just freed.
        spare = []
        while len(victims) < len(freed) and len(spare) < 64:
            p = os.path.join(tmp_path, f"victim{len(spare)}")
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
            spare.append(fd)
            if fd in freed:
                victims[fd] = p
        remote.gate.set()
        with trio.move_on_after(10):
            while not renamed:
                await trio.sleep(0.05)
        for fd in spare:
            os.close(fd)
    assert renamed == [None]
    copy = await read_file(m.vfs, "big.bin~")
    sizes = {p: os.path.getsize(p) for p in victims.values()}
    assert (sizes, len(copy), copy == data) == (dict.fromkeys(sizes, 0), SIZE, True)


async def test_partial_mismatch_is_not_served_nor_copied(make_mount: MakeMount) -> None:
    """semantics.md: 'a mismatch is logged, never cached, and fails later reads with
    EIO'. But Streams.completed() sets partial.error while partial.complete stays True,
    and read() only consults the Partial when not complete: later reads serve the bad
    bytes. Worse, a write copies them (finished() returns when the bytes are there,
    before the check even ran) and the flusher uploads them over the good file."""
    remote = Streaming(corrupt=True)
    data = content()
    remote.put("big.bin", data)
    remote.gate.set()
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDWR)
    first = await read_all(m.vfs, fh)  # arriving: served unchecked (documented)
    assert first != data
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    await wait_until_async(lambda: f.partial is None or f.partial.error, 5, "the check")
    later: object
    try:
        later = await m.vfs.read(fh, 3 * MiB, 10)  # 'fails later reads with EIO'
    except (FsError, OSError) as e:
        later = e
    try:
        await m.vfs.write(fh, 0, b"x")  # a copy of known-bad bytes
    except (FsError, OSError):
        pass
    await close(m.vfs, fh)
    await m.drain()
    uploaded_ok = remote.files()["big.bin"][1:] == data[1:]
    assert (isinstance(later, bytes), uploaded_ok) == (False, True), (
        f"later read served: {later!r}; remote now holds the corrupt bytes: {not uploaded_ok}"
    )


async def test_partial_four_readers_far_apart_make_progress(make_mount: MakeMount) -> None:
    """MAX_STREAMS = 3: a 4th reader's _start cancels the oldest stream; its reader wakes
    (no stream near its gap) and starts again, cancelling the next oldest, and so on.
    With any latency before a stream's first byte no stream ever delivers: a livelock
    that opens and cancels requests as fast as the loop runs."""
    remote = Streaming(latency=0.02)
    data = content()
    remote.put("big.bin", data)
    remote.gate.set()
    m = await make_mount(remote)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    got: dict[int, bytes] = {}

    async def reader(off: int) -> None:
        got[off] = await m.vfs.read(fh, off, 4096)

    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            for off in (0, 20 * MiB, 40 * MiB, 60 * MiB):
                nursery.start_soon(reader, off)
    requests = len(remote.offsets)
    await close(m.vfs, fh)
    assert got == {off: data[off : off + 4096] for off in (0, 20 * MiB, 40 * MiB, 60 * MiB)}, (
        f"{requests} stream requests, reads done: {sorted(got)}"
    )


async def test_partial_stream_oserror_fails_the_read_not_the_mount(
    make_mount: MakeMount,
) -> None:
    """A stream's pwrite() into the sparse file failing (ENOSPC on the cache disk) is an
    OSError, not a RemoteError: _run does not catch it, it ends Streams.run's nursery
    (in a real mount: the mount's main nursery, so the whole mount), and the reader
    waiting for those bytes is never woken."""
    remote = Streaming()
    remote.fail_with = OSError(errno.ENOSPC, "No space left on device")
    remote.put("big.bin", content())
    m = await make_mount(remote, flusher=False)
    crashed: list[BaseException] = []

    async def host() -> None:
        try:
            await m.vfs.streams.run()
        except Exception as e:
            crashed.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(host)
        await wait_until_async(lambda: m.vfs.streams.running, 5, "the streams task")
        fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
        outcome: list[object] = []
        with trio.move_on_after(3):
            try:
                await m.vfs.read(fh, 0, 10)
                outcome.append("read")
            except (FsError, OSError) as e:
                outcome.append(e)
        await m.vfs.release(fh)
        nursery.cancel_scope.cancel()
    assert (crashed, bool(outcome)) == ([], True), f"streams task died: {crashed!r}; read hung"


async def test_partial_error_on_one_stream_leaks_the_completed_temp_file(
    make_mount: MakeMount,
) -> None:
    """Two streams; the far one fails (partial.error set, its reader gets EIO), the
    near one completes the file. _run commits only when `self.error is None`, so the
    complete file is never handed to the cache; release() keeps complete files (for
    the commit that never comes): a 64 MiB file left in cache/tmp, outside the limit."""

    class FarFails(Streaming):
        async def read(self, path: str, dest: BinaryIO, **kw: object) -> Fetched:  # type: ignore[override]
            if kw.get("offset"):
                self.offsets.append(int(kw["offset"]))  # type: ignore[call-overload]
                await trio.lowlevel.checkpoint()
                from repomount.remotes.base import Unavailable

                raise Unavailable("reset by peer")
            return await super().read(path, dest, **kw)  # type: ignore[arg-type]

    remote = FarFails()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    with pytest.raises(Exception):  # noqa: B017
        await m.vfs.read(fh, 40 * MiB, 10)
    remote.gate.set()
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    partial = f.partial
    await wait_until_async(lambda: partial.complete, 10, "the stream from 0 to complete")
    await close(m.vfs, fh)
    # (waited for, not slept on: under a loaded CI host the clean-up took over 0.5 s)
    await wait_until_async(
        lambda: list(m.vfs.cache.tmp_dir.iterdir()) == [],
        10,
        "a complete download cached or removed, not left in the cache's tmp",
    )


async def test_partial_truncating_open_while_a_read_waits_writes_through_a_closed_fd(
    make_mount: MakeMount, tmp_path: os.PathLike[str]
) -> None:
    """The plain version of the first finding: process A reads a large file still
    arriving (read() waits in partial.ready()); process B opens it with O_TRUNC
    (`> big.bin`). adopt_spool -> _drop_file releases the Partial (its only user is the
    shared OpenFile): wfd closed, file unlinked, streams cancelled. A's ready() wakes,
    sees its gap with no stream and starts one on the closed Partial: the remote's
    bytes are pwrite()n into whatever file reuses wfd's number."""
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    freed = f.partial.wfd
    victim = os.path.join(tmp_path, "victim")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.vfs.read, fh, 5 * MiB, 10)  # waits behind the gated stream
        await trio.sleep(0.05)
        wfh, _ = await open_path(m.vfs, "big.bin", os.O_WRONLY | os.O_TRUNC)
        spare = []
        while True:  # another file gets the number just freed
            fd = os.open(f"{victim}{len(spare)}", os.O_RDWR | os.O_CREAT, 0o600)
            spare.append(fd)
            if fd == freed or len(spare) > 64:
                break
        await trio.sleep(0.5)
        sizes = [os.fstat(fd).st_size for fd in spare]
        for fd in spare:
            os.close(fd)
        await close(m.vfs, wfh)
    await close(m.vfs, fh)
    assert sizes == [0] * len(sizes), "remote bytes written into an unrelated file"


# ---------------------------------------------------------------------- prefetch.py


async def test_prefetch_oserror_does_not_end_the_prefetch_task(make_mount: MakeMount) -> None:
    """_read catches RemoteError only; an OSError (ENOSPC writing a cache temp file) or
    the ExceptionGroup read_many's nursery wraps it in ends Prefetcher.run, which in a
    real mount is a child of the mount's main nursery: the whole mount goes down."""

    class DiskFull(MemRemote):
        async def read_many(self, paths, new_file, got, *, transfers=4):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            raise OSError(errno.ENOSPC, "No space left on device")

    remote = DiskFull()
    remote.put("a", b"a")
    m = await make_mount(remote, flusher=False)
    crashed: list[BaseException] = []

    async def host() -> None:
        try:
            await m.vfs.prefetch.run()
        except Exception as e:
            crashed.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(host)
        m.vfs.prefetch.queue(1, [Candidate("a", sha(b"a"), 1)])
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert not crashed, f"the prefetch task died: {crashed!r}"
