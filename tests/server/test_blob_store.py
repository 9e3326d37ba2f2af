"""BlobDir.add: a group of blobs made durable by two syncfs, or by fsyncs where it cannot;
its spools; the groups a request's inline contents are stored in."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from repomount.server import blobs, inline, writeout
from repomount.server.blobs import SYNCFS_FROM, BlobDir
from repomount.server.inline import store_contents
from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import WRITE_OUT_EVERY, BlobSpool
from support.blobkinds import files_only
from support.blobsyncs import BlobSyncs
from support.util import sha


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlobDir]:
    yield BlobDir(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []  # every spool consumed


def spools(store: BlobDir, contents: list[bytes], *, closed: bool) -> list[BlobSpool]:
    made = []
    for content in contents:
        spool = store.new_spool()
        spool.write(content)
        if closed:
            spool.close()
        made.append(spool)
    return made


def contents(n: int) -> list[bytes]:
    return [f"blob {i}".encode() * (i + 1) for i in range(n)]


def assert_stored(store: BlobDir, data: list[bytes]) -> None:
    for content in data:
        assert store.path(sha(content)).read_bytes() == content


@pytest.mark.parametrize("closed", [True, False])
def test_a_group_costs_two_syncfs_and_no_fsync(
    store: BlobDir, monkeypatch: pytest.MonkeyPatch, closed: bool
) -> None:
    syncs = BlobSyncs(monkeypatch, syncfs_fails=False)
    data = contents(40)
    assert store.add(spools(store, data, closed=closed)) == [True] * 40
    assert_stored(store, data)
    assert (syncs.syncfs, syncs.fsync) == (2, 0)
    # Those already stored are dropped; the new ones still count as a group.
    more = contents(40 + SYNCFS_FROM)
    assert store.add(spools(store, more, closed=closed)) == [False] * 40 + [True] * SYNCFS_FROM
    assert_stored(store, more)
    assert (syncs.syncfs, syncs.fsync) == (4, 0)


@pytest.mark.parametrize("closed", [True, False])
def test_a_few_blobs_are_fsynced_one_by_one(
    store: BlobDir, monkeypatch: pytest.MonkeyPatch, closed: bool
) -> None:
    syncs = BlobSyncs(monkeypatch, syncfs_fails=False)
    data = [b"one", b"two"]
    assert store.add(spools(store, data, closed=closed)) == [True, True]
    assert_stored(store, data)
    directories = len({sha(d)[:2] for d in data}) + 1  # and blobs/, for the new ones
    assert (syncs.syncfs, syncs.fsync) == (0, len(data) + directories)


@pytest.mark.parametrize("unavailable", [True, False], ids=["no-syncfs", "syncfs-fails"])
def test_without_syncfs_a_group_falls_back_to_fsyncs(
    store: BlobDir, monkeypatch: pytest.MonkeyPatch, unavailable: bool
) -> None:
    syncs = BlobSyncs(monkeypatch, syncfs_fails=True)
    if unavailable:
        monkeypatch.setattr(blobs, "SYNCFS", None)
    data = contents(3 * SYNCFS_FROM)
    assert store.add(spools(store, data, closed=True)) == [True] * len(data)
    assert_stored(store, data)
    directories = len({sha(d)[:2] for d in data}) + 1
    assert syncs.fsync == len(data) + directories  # each file, each directory touched
    assert syncs.syncfs == (0 if unavailable else 1)  # (it failed: not tried again)


def test_syncfs_is_found_here() -> None:
    # repomount runs on Linux (FUSE), which has it: os.syncfs from Python 3.12 on,
    # else the C library's through ctypes. Missing, packs would lose their speed.
    assert blobs.SYNCFS is not None
    fd = os.open(Path.cwd(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        blobs.SYNCFS(fd)
        with pytest.raises(OSError):
            blobs.SYNCFS(-1)  # EBADF, reported as an OSError
    finally:
        os.close(fd)


def test_a_spool_buffers_no_more_than_its_known_size(store: BlobDir) -> None:
    """A pack member's spool is given a buffer of its size, not 1 MiB each (a buffered
    writer's size counts its buffer); a spool of unknown size keeps 1 MiB."""
    small, unknown, large, empty = (store.new_spool(s) for s in (15_000, None, 50 << 20, 0))
    assert sys.getsizeof(small.file) < 15_000 + 1024
    assert blobs.SPOOL_BUFFER <= sys.getsizeof(unknown.file) < blobs.SPOOL_BUFFER + 1024
    assert blobs.SPOOL_BUFFER <= sys.getsizeof(large.file) < blobs.SPOOL_BUFFER + 1024
    for spool, content in ((small, b"s" * 15_000), (unknown, b"u" * 3), (empty, b"")):
        spool.write(content[:7])
        spool.write(content[7:])
        spool.close()
    assert store.add([small, unknown, empty]) == [True] * 3
    assert_stored(store, [b"s" * 15_000, b"u" * 3, b""])
    store.discard(large)


def test_a_spool_never_takes_a_file_already_in_tmp(store: BlobDir) -> None:
    """Spools are named by a counter; a name already taken is skipped, not reused."""
    first = store.new_spool()
    assert Path(first.name) == store.tmp / "upload-0"
    taken = store.tmp / "upload-1"
    taken.write_bytes(b"not a spool")
    second = store.new_spool()
    assert second.name not in (first.name, str(taken))
    assert taken.read_bytes() == b"not a spool"
    taken.unlink()
    for spool in (first, second):
        store.discard(spool)


def test_inline_contents_are_stored_in_few_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's inline contents go into the store GROUP_MEMBERS (or GROUP_BYTES) at a
    time, two syncfs per group when they are files: 300 cost two, not ten. (Small ones
    are rows now, test_small_blobs.py: files here, as large contents are.)"""
    files_only(monkeypatch)
    syncs = BlobSyncs(monkeypatch, syncfs_fails=False)
    store = SqliteStore(tmp_path / "data")
    try:
        data = contents(300)
        assert store_contents(store, data) == [sha(d) for d in data]
        assert (syncs.syncfs, syncs.fsync) == (2, 0)
        monkeypatch.setattr(inline, "GROUP_MEMBERS", 100)
        data = [b"member %d" % i for i in range(250)]
        assert store_contents(store, data) == [sha(d) for d in data]
        assert syncs.syncfs == 2 + 3 * 2  # 100 + 100 + 50
        monkeypatch.setattr(inline, "GROUP_BYTES", 1500)
        data = [bytes([i]) * 400 for i in range(12)]
        assert store_contents(store, data) == [sha(d) for d in data]
        assert syncs.syncfs == 8 + 3 * 2  # 4 + 4 + 4: a group ends once past 1500 bytes
        for content in data:
            assert store.blobs.path(sha(content)).read_bytes() == content
        assert list((tmp_path / "data" / "tmp").iterdir()) == []
    finally:
        store.close()


def test_a_large_spool_has_the_disk_start_writing_it_as_it_comes(
    store: BlobDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITE_OUT_EVERY bytes the spool's file is asked to start going to the disk
    (writeout.py), from where the last request ended; the content is unchanged."""
    asked: list[tuple[int, int]] = []
    real = writeout.start_write_out

    def recording(fd: int, offset: int, length: int) -> None:
        assert os.fstat(fd).st_size >= offset + length  # (flushed to the file first)
        asked.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(writeout, "start_write_out", recording)
    spool = store.new_spool()
    assert spool.write_out is recording  # (a spool on disk is given it)
    content = os.urandom(3 * WRITE_OUT_EVERY + 12345)
    for at in range(0, len(content), 1 << 20):
        spool.write(content[at : at + (1 << 20)])
    assert asked == [(i * WRITE_OUT_EVERY, WRITE_OUT_EVERY) for i in range(3)]
    assert store.add([spool]) == [True]
    assert store.path(sha(content)).read_bytes() == content


def test_starting_the_write_out_works_here(tmp_path: Path) -> None:
    """sync_file_range(2) is found and accepted on this machine (Linux), through a
    descriptor of the call's own: the caller's may close at once."""
    assert writeout._SYNC_FILE_RANGE is not None
    path = tmp_path / "f"
    path.write_bytes(b"x" * (1 << 20))
    fd = os.open(path, os.O_RDWR)
    assert writeout._SYNC_FILE_RANGE(fd, 0, 1 << 20) == 0
    writeout.start_write_out(fd, 0, 1 << 20)
    os.close(fd)
