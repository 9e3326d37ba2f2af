"""A file written from empty in order is hashed as it is written (sidehash.py), so its
upload does not read it again; written any other way, it is hashed from its blob as
before. Either way the digest sent is the content's (the in-memory remote refuses a
write whose digest does not match its content)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from repomount import sidehash
from repomount.vfs.core import Vfs
from repomount.vfs.inorder import SMALL_HASHED
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    MakeMount,
    blobs_hashed_from_disk,
    close,
    listdir,
    open_path,
    resolve,
)

PIECE = 64 << 10


@pytest.fixture
def hashed_again(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Small batches (so a test's MiB goes to the thread), and every blob the digests
    read again to hash."""
    monkeypatch.setattr(sidehash, "BATCH", 128 << 10)
    return blobs_hashed_from_disk(monkeypatch)


async def _write_in_pieces(vfs: Vfs, fh: int, data: bytes, start: int = 0) -> None:
    for off in range(0, len(data), PIECE):
        piece = data[off : off + PIECE]
        assert await vfs.write(fh, start + off, piece) == len(piece)


async def _write_new(vfs: Vfs, path: str, data: bytes) -> None:
    """Create (or truncate) `path`, write `data` in order in pieces, close it."""
    fh, _ = await open_path(vfs, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await _write_in_pieces(vfs, fh, data)
    await close(vfs, fh)


async def test_a_file_written_in_order_is_not_read_again(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    m = await make_mount(**HELD)
    data = os.urandom(1 << 20)
    await _write_new(m.vfs, "big", data)
    assert await m.drain() == []
    assert mem.files() == {"big": data}
    assert hashed_again == []


async def test_a_rewrite_inside_it_hashes_the_blob_instead(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    m = await make_mount(**HELD)
    data = bytearray(os.urandom(1 << 20))
    fh, _ = await open_path(m.vfs, "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh, bytes(data))
    await m.vfs.write(fh, 1000, b"XYZ")
    data[1000:1003] = b"XYZ"
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"big": bytes(data)}
    assert len(hashed_again) == 1


async def test_a_hole_or_a_truncate_hashes_the_blob_instead(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    m = await make_mount(**HELD)
    data = os.urandom(1 << 20)
    fh, node = await open_path(m.vfs, "holes", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh, data[:PIECE])
    await _write_in_pieces(m.vfs, fh, data[2 * PIECE :], start=2 * PIECE)  # (a hole)
    await close(m.vfs, fh)
    fh, node = await open_path(m.vfs, "cut", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh, data)
    await m.vfs.resize(node, 5000, None)
    await m.vfs.write(fh, 5000, b"tail")
    await close(m.vfs, fh)
    assert await m.drain() == []
    holed = data[:PIECE] + bytes(PIECE) + data[2 * PIECE :]
    assert mem.files() == {"holes": holed, "cut": data[:5000] + b"tail"}
    assert len(hashed_again) == 2


async def test_a_truncating_open_starts_the_hash_again(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """A second open with O_TRUNC while the first is still writing: the spool is emptied
    and the hash starts over with it."""
    m = await make_mount(**HELD)
    first, second = os.urandom(1 << 20), os.urandom(600 << 10)
    fh1, _ = await open_path(m.vfs, "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh1, first)
    fh2, _ = await open_path(m.vfs, "f", os.O_WRONLY | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh2, second)
    await close(m.vfs, fh2)
    await close(m.vfs, fh1)
    assert await m.drain() == []
    assert mem.files() == {"f": second}
    assert hashed_again == []


async def test_an_append_after_close_reads_the_new_blob_to_hash_it(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """`>>` to a closed file copies its content into a new spool: that spool was not
    written from empty, so it is hashed from its blob (and the first close's is not)."""
    m = await make_mount(**HELD)
    data = os.urandom(1 << 20)
    await _write_new(m.vfs, "log", data)
    fh, _ = await open_path(m.vfs, "log", os.O_WRONLY | os.O_APPEND)
    await m.vfs.write(fh, len(data), b"more")
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"log": data + b"more"}
    assert (await resolve(m.vfs, "log")).size == len(data) + 4
    assert len(hashed_again) == 1


async def test_a_closed_file_is_hashed_at_once_and_lets_go_of_it(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """Its close sends the rest to the thread at once, not when the upload asks (which
    may be seconds away), and the hash's own descriptor of it goes."""
    m = await make_mount(**HELD)
    data = os.urandom((1 << 20) + 100)
    await _write_new(m.vfs, "f", data)
    coming = list(m.vfs.flusher.digests._coming.values())
    assert len(coming) == 1
    with trio.fail_after(5):
        while coming[0]._batch is not None or coming[0]._fd is not None:
            await trio.sleep(0.001)
    assert await m.drain() == []
    assert mem.files() == {"f": data}
    assert hashed_again == []


async def test_a_file_edited_offline_then_truncated_and_rewritten_sends_its_content(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """Edits made offline (over bytes never fetched) are laid over their base before
    they are sent, as a new blob (journal.materialized): a truncating open that
    rewrites the file in order meanwhile hashes a blob name that is then not sent, so
    its digest never names the laid-over content."""
    mem.put("log", b"line 1\n")
    m = await make_mount(faulty, **HELD)
    assert await listdir(m.vfs, "") == ["log"]  # listed, never read
    faulty.fail_rate(1.0)  # the remote is away
    fh1, _ = await open_path(m.vfs, "log", os.O_WRONLY)
    await m.vfs.write(fh1, 2, b"NE")
    data = os.urandom(1 << 20)
    fh2, _ = await open_path(m.vfs, "log", os.O_WRONLY | os.O_TRUNC)
    await _write_in_pieces(m.vfs, fh2, data)
    await close(m.vfs, fh2)
    await close(m.vfs, fh1)
    faulty.heal()
    assert await m.drain() == []
    assert mem.files() == {"log": data}


async def test_a_file_closed_empty_then_written_in_order_is_not_read_again(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """dd opens its output, dup2()s and closes it (a commit point: an empty file), then
    writes through the copy: a spool made from an empty content starts empty too."""
    m = await make_mount(**HELD)
    fh, _ = await open_path(m.vfs, "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await close(m.vfs, fh)
    fh, _ = await open_path(m.vfs, "out", os.O_WRONLY)
    data = os.urandom(1 << 20)
    await _write_in_pieces(m.vfs, fh, data)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"out": data}
    assert hashed_again == []


async def test_small_files_written_in_order_are_hashed_from_their_bytes(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    """A save of a small file (an editor's, a shell's `>`) is hashed from the bytes
    written, up to inorder.SMALL_HASHED: its upload reads it only to send it."""
    m = await make_mount(**HELD)
    files = {
        "empty": b"",
        "one": b"x",
        "save": os.urandom(1000),
        "pieces": os.urandom(SMALL_HASHED),  # (in pieces, up to the limit exactly)
    }
    for path, data in files.items():
        await _write_new(m.vfs, path, data)
    assert await m.drain() == []
    assert mem.files() == files
    assert hashed_again == []


async def test_a_small_file_written_any_other_way_is_hashed_from_its_blob(
    make_mount: MakeMount, mem: MemRemote, hashed_again: list[Path]
) -> None:
    m = await make_mount(**HELD)
    fh, node = await open_path(m.vfs, "rewritten", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"hello world")
    await m.vfs.write(fh, 0, b"HELLO")  # (a rewrite)
    await close(m.vfs, fh)
    fh, node = await open_path(m.vfs, "cut", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"hello world")
    await m.vfs.resize(node, 5, None)  # (ftruncate: shorter than what was hashed)
    await close(m.vfs, fh)
    past = os.urandom(SMALL_HASHED + 1000)  # (past the limit, below sidehash.BATCH)
    await _write_new(m.vfs, "past", past)
    assert await m.drain() == []
    assert mem.files() == {"rewritten": b"HELLO world", "cut": b"hello", "past": past}
    assert len(hashed_again) == 3
