"""SideHash: the SHA-256 of a file being written in order, read back and hashed in a
worker thread as it grows, equal to hashlib's over the same bytes, holding none of them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from repomount import sidehash
from repomount.sidehash import SideHash


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _write(side: SideHash, fd: int, data: bytes, piece: int) -> None:
    for at in range(0, len(data), piece):
        os.pwrite(fd, data[at : at + piece], at)
        side.wrote(min(at + piece, len(data)))
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("piece", [4096, 1 << 20, 3 << 20])
async def test_it_is_the_digest_of_what_was_written(
    monkeypatch: pytest.MonkeyPatch, spool: int, piece: int
) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 64 << 10)
    data = os.urandom((3 << 20) + 123)
    side = SideHash(spool)
    await _write(side, spool, data, piece)
    assert side.size == len(data)
    assert await side.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_batches_go_to_the_thread_while_it_is_written(
    monkeypatch: pytest.MonkeyPatch, spool: int
) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 64 << 10)
    side = SideHash(spool)
    await _write(side, spool, os.urandom(1 << 20), 16 << 10)
    with trio.fail_after(5):
        while side._batch is not None:
            await trio.sleep(0.001)
    assert side._hashed >= (1 << 20) - (64 << 10)  # (all but the last batch's worth)


async def test_finish_soon_hashes_the_rest_and_lets_go_of_the_descriptor(
    spool: int,
) -> None:
    before = _open_fds()
    side = SideHash(spool)
    assert _open_fds() == before + 1  # (its own: the spool's may close meanwhile)
    data = os.urandom(300_000)
    await _write(side, spool, data, 100_000)
    side.finish_soon()
    with trio.fail_after(5):
        while side._batch is not None or side._fd is not None:
            await trio.sleep(0.001)
    assert _open_fds() == before
    assert await side.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_drop_lets_go_of_the_descriptor(spool: int) -> None:
    before = _open_fds()
    side = SideHash(spool)
    os.pwrite(spool, b"x" * 1000, 0)
    side.wrote(1000)
    side.drop()
    assert _open_fds() == before


async def test_a_file_shorter_than_written_is_an_error(
    monkeypatch: pytest.MonkeyPatch, spool: int
) -> None:
    """(The caller drops the hash on a truncate; were it not to, the digest fails
    rather than naming bytes that are not there.)"""
    side = SideHash(spool)
    os.pwrite(spool, b"y" * 2000, 0)
    side.wrote(5000)
    with pytest.raises(OSError, match="ended at byte 2000"):
        await side.hexdigest()
