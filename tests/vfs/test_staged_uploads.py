"""A large file written from empty in order starts uploading while it is written
(staging.py); its change then names the staged content and sends none. Written any
other way, or unstaged for any reason, it is uploaded with its change as before. The
in-memory remote refuses a staged write whose content it was not sent, and any write
whose content does not match its digest: what lands is always the file's content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from repomount.remotes.base import Unavailable, Write
from repomount.vfs import inorder, staging
from repomount.vfs.core import Vfs
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, blobs_hashed_from_disk, close, open_path, resolve

PIECE = 64 << 10
AFTER = 256 << 10  # (staged past this in these tests)


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inorder, "STAGE_AFTER", AFTER)
    monkeypatch.setattr(staging, "PIECE", 32 << 10)


@pytest.fixture
def mem() -> MemRemote:
    return MemRemote(staged_upload=True)


def writes(remote: MemRemote) -> list[Write]:
    return [c for batch in remote.commits for c in batch if isinstance(c, Write)]


async def _write(vfs: Vfs, fh: int, data: bytes, start: int = 0) -> None:
    for off in range(0, len(data), PIECE):
        piece = data[off : off + PIECE]
        assert await vfs.write(fh, start + off, piece) == len(piece)
        await trio.sleep(0)  # (the upload follows)


async def _create(vfs: Vfs, path: str) -> int:
    fh, _ = await open_path(vfs, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    return fh


async def test_a_large_file_written_in_order_is_uploaded_as_it_is_written(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    data = os.urandom(1 << 20)
    fh = await _create(m.vfs, "big")
    await _write(m.vfs, fh, data[: 3 * AFTER])
    assert mem.requests["stage"] == 1  # (under way, before the close)
    await _write(m.vfs, fh, data[3 * AFTER :], 3 * AFTER)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"big": data}
    assert [(w.path, w.staged) for w in writes(mem)] == [("big", True)]
    assert m.vfs.flusher.stager.used == 1


async def test_a_small_file_is_not_staged(make_mount: MakeMount, mem: MemRemote) -> None:
    m = await make_mount(**HELD)
    data = os.urandom(AFTER - 1)
    fh = await _create(m.vfs, "small")
    await _write(m.vfs, fh, data)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"small": data}
    assert mem.requests["stage"] == 0 and not writes(mem)[0].staged


@pytest.mark.parametrize("how", ["rewrite", "hole", "truncate"])
async def test_another_change_cancels_the_staged_upload(
    make_mount: MakeMount, mem: MemRemote, how: str
) -> None:
    m = await make_mount(**HELD)
    data = bytearray(os.urandom(2 * AFTER))
    fh = await _create(m.vfs, "big")
    await _write(m.vfs, fh, bytes(data))
    assert mem.requests["stage"] == 1
    if how == "rewrite":
        await m.vfs.write(fh, 10, b"XYZ")
        data[10:13] = b"XYZ"
    elif how == "hole":
        await m.vfs.write(fh, len(data) + 100, b"end")
        data += bytes(100) + b"end"
    else:
        node = await resolve(m.vfs, "big")
        await m.vfs.setattr(node.ino, fh, size=1000)
        del data[1000:]
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"big": bytes(data)}
    assert [w.staged for w in writes(mem)] == [False]


async def test_fsync_midway_uses_the_upload_then_more_writes_go_as_usual(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    data = os.urandom(2 * AFTER)
    fh = await _create(m.vfs, "log")
    await _write(m.vfs, fh, data)
    await m.vfs.fsync(fh)
    assert mem.files() == {"log": data}
    more = os.urandom(AFTER)
    await _write(m.vfs, fh, more, len(data))
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"log": data + more}
    assert [w.staged for w in writes(mem)] == [True, False]


class Misnaming(MemRemote):
    """Stages a content but names it wrongly (as a broken server might)."""

    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        await super().stage(body)
        return "0" * 64


class Failing(MemRemote):
    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        self.requests["stage"] += 1
        async for _ in body():
            raise Unavailable("connection reset")
        raise AssertionError


class Broken(MemRemote):
    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        self.requests["stage"] += 1
        raise ValueError("a bug in an adapter")


@pytest.mark.parametrize("kind", [Misnaming, Failing, Broken])
async def test_an_upload_that_failed_or_differs_is_not_used(
    make_mount: MakeMount, kind: type[MemRemote]
) -> None:
    """... and an unexpected error in it (Broken) is logged: the mount goes on."""
    remote = kind(staged_upload=True)
    m = await make_mount(remote, **HELD)
    data = os.urandom(2 * AFTER)
    fh = await _create(m.vfs, "big")
    await _write(m.vfs, fh, data)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert remote.files() == {"big": data}
    assert remote.requests["stage"] == 1
    assert [w.staged for w in writes(remote)] == [False]


async def test_a_file_deleted_while_written_is_never_sent(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    fh = await _create(m.vfs, "tmp")
    await _write(m.vfs, fh, os.urandom(2 * AFTER))
    root = await resolve(m.vfs, "")
    await m.vfs.unlink(root.ino, "tmp")
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {}
    assert m.vfs.flusher.stager.blobs() == []


async def test_a_local_only_file_is_not_staged(make_mount: MakeMount, mem: MemRemote) -> None:
    m = await make_mount(local_only=("*.tmp",), **HELD)
    fh = await _create(m.vfs, "scratch.tmp")
    await _write(m.vfs, fh, os.urandom(2 * AFTER))
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.requests["stage"] == 0 and mem.files() == {}


async def test_a_file_closed_empty_then_written_is_staged(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """dd opens its output, dup2()s and closes it (a commit point: an empty file), then
    writes through the copy: that content starts empty too, so it is counted in order."""
    m = await make_mount(**HELD)
    fh = await _create(m.vfs, "out")
    await close(m.vfs, fh)
    fh, _ = await open_path(m.vfs, "out", os.O_WRONLY)
    data = os.urandom(2 * AFTER)
    await _write(m.vfs, fh, data)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"out": data}
    assert [w.staged for w in writes(mem)][-1:] == [True]


@pytest.mark.parametrize("kind", [MemRemote, Failing])
async def test_a_staged_file_is_hashed_by_its_upload_not_read_again(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch, kind: type[MemRemote]
) -> None:
    """The upload hashes what it reads to send it: the blob's digest needs no reading of
    its own. An upload that ended early leaves the blob to be hashed from disk."""
    read = blobs_hashed_from_disk(monkeypatch)
    remote = kind(staged_upload=True)
    m = await make_mount(remote, **HELD)
    data = os.urandom(3 * AFTER + 1000)
    fh = await _create(m.vfs, "big")
    await _write(m.vfs, fh, data)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert remote.files() == {"big": data}
    assert len(read) == (0 if kind is MemRemote else 1)


async def test_a_body_read_ahead_and_dropped_midway_starts_over_whole(tmp_path: Path) -> None:
    """The next piece is read while this one is sent. A body abandoned midway (its
    read-ahead still in a worker thread) and asked for again (a retry) gives the whole
    content from its start, and the digest is of exactly that content."""
    data = os.urandom(5 * staging.PIECE + 123)
    spool = tmp_path / "spool"
    spool.write_bytes(data)
    fd = os.open(spool, os.O_RDONLY)
    try:
        staged = staging.Staging(fd, len(data))
    finally:
        os.close(fd)
    staged.finish(len(data))
    first = staged.body()
    assert await first.__anext__() == data[: staging.PIECE]
    await first.aclose()  # (the second piece was being read meanwhile)
    again = b"".join([piece async for piece in staged.body()])
    assert again == data
    await staged.settled()
    staged.done.set()
    os.close(staged.fd)
    assert await staged.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_body_waits_for_the_writer_and_ends_at_the_final_size(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    fd = os.open(spool, os.O_RDWR | os.O_CREAT)
    try:
        staged = staging.Staging(fd, 0)
        pieces: list[bytes] = []

        async def send() -> None:
            async for piece in staged.body():
                pieces.append(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            written = b""
            for part in (os.urandom(staging.PIECE // 2), os.urandom(staging.PIECE * 2)):
                os.pwrite(fd, part, len(written))
                written += part
                staged.wrote(len(written))
                await trio.sleep(0.01)
            assert b"".join(pieces) == written[: 2 * staging.PIECE]  # (whole pieces only)
            tail = os.urandom(7)
            os.pwrite(fd, tail, len(written))
            written += tail
            staged.finish(len(written))
        assert b"".join(pieces) == written
    finally:
        os.close(fd)
        os.close(staged.fd)
