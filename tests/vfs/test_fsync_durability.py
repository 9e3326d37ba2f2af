"""fsync makes a file's content durable: the remote's acknowledgement does, and where
the remote is slow or refuses, the local disk does (the blob, the journal's WAL and the
blobs' directory, synced). A remote that answers within fileio.LOCAL_SYNC_AFTER saves
the local syncs (on ext4 about 1 ms for a new file, as long as a save to a server on
loopback). A file the remote never sees is synced at once."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio

from repomount.remotes.base import ApplyResult, Change
from repomount.vfs import fileio
from repomount.vfs.conflicts import Policy
from repomount.vfs.errors import FsError
from repomount.vfs.journal import Journal
from support.memremote import MemRemote
from support.vfsutil import MakeMount, close, open_path, write_file

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def local_syncs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per run of the local syncs (the real ones run too)."""
    runs: list[bool] = []
    for name in ("_sync_file", "_sync_blob"):
        real = getattr(fileio, name)

        def counted(what: object, journal: Journal, real: Callable[..., None] = real) -> None:
            real(what, journal)
            runs.append(True)

        monkeypatch.setattr(fileio, name, counted)
    return runs


def _remote_answers_after(monkeypatch: pytest.MonkeyPatch, mem: MemRemote, delay: float) -> None:
    real = mem.apply

    async def slow(changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        await trio.sleep(delay)
        return await real(changes, base=base)

    monkeypatch.setattr(mem, "apply", slow)


async def test_a_remote_that_acknowledges_in_time_saves_the_local_syncs(
    make_mount: MakeMount, mem: MemRemote, local_syncs: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "LOCAL_SYNC_AFTER", 30.0)  # (in time, on any machine)
    m = await make_mount()
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"saved\n")
    await m.vfs.fsync(fh)
    assert mem.files() == {"f": b"saved\n"}
    assert local_syncs == []
    await close(m.vfs, fh)


async def test_a_slow_remote_gets_the_content_synced_locally_meanwhile(
    make_mount: MakeMount, mem: MemRemote, local_syncs: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await make_mount()
    _remote_answers_after(monkeypatch, mem, 0.3)
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"saved\n")
    with trio.fail_after(0.29 + 10):  # (one wait: the syncs ran during the upload)
        await m.vfs.fsync(fh)
    assert local_syncs == [True]
    assert mem.files() == {"f": b"saved\n"}
    await close(m.vfs, fh)


async def test_an_acknowledgement_does_not_wait_for_local_syncs_under_way(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote answering just after the syncs began (a disk slow to sync, a remote at
    3 to 4 ms) answers the fsync: their thread goes on, on a descriptor of its own."""
    monkeypatch.setattr(fileio, "LOCAL_SYNC_AFTER", 0.0)
    began, go_on, done = threading.Event(), threading.Event(), threading.Event()
    real = fileio._sync_blob

    def slow_disk(blob: Path | None, journal: Journal) -> None:
        began.set()
        go_on.wait(5)
        real(blob, journal)
        done.set()

    monkeypatch.setattr(fileio, "_sync_blob", slow_disk)
    m = await make_mount()
    _remote_answers_after(monkeypatch, mem, 0.2)
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"saved\n")
    await m.vfs.fsync(fh)
    assert began.is_set() and not done.is_set()  # (answered while they went on)
    assert mem.files() == {"f": b"saved\n"}
    go_on.set()
    assert await trio.to_thread.run_sync(done.wait, 10)  # (and they end)
    await close(m.vfs, fh)


async def test_a_change_the_remote_refuses_is_synced_locally_before_the_error(
    make_mount: MakeMount, mem: MemRemote, local_syncs: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "LOCAL_SYNC_AFTER", 30.0)
    m = await make_mount(on_conflict=Policy.FAIL)
    await write_file(m.vfs, "f", b"base\n")
    assert await m.drain() == []
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"mine\n")
    mem.put("f", b"theirs\n")  # another client, meanwhile: held under `fail`
    with trio.fail_after(10), pytest.raises(FsError) as e:  # (not 30 s: at once)
        await m.vfs.fsync(fh)
    assert e.value.errno == errno.ESTALE
    assert local_syncs == [True]  # the held change is on the local disk
    await close(m.vfs, fh)


async def test_a_file_the_remote_never_sees_is_synced_at_once(
    make_mount: MakeMount, mem: MemRemote, local_syncs: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "LOCAL_SYNC_AFTER", 30.0)
    m = await make_mount(local_only=("*.swp",))
    fh, _ = await open_path(m.vfs, ".f.swp", FLAGS)
    await m.vfs.write(fh, 0, b"swap\n")
    with trio.fail_after(10):
        await m.vfs.fsync(fh)
    assert local_syncs == [True] and mem.files() == {}
    await close(m.vfs, fh)


async def test_the_local_syncs_reach_the_disk(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What they sync: the blob being sent, the WAL and the blobs' directory."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    m = await make_mount()
    _remote_answers_after(monkeypatch, mem, 0.3)
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"saved\n")
    await m.vfs.fsync(fh)
    journal = m.vfs.journal
    wal = journal._db_path.with_name(journal._db_path.name + "-wal")
    assert {wal.stat().st_ino, journal.blob_dir.stat().st_ino} <= set(synced)
    assert len(synced) == 3  # and the blob
    await close(m.vfs, fh)
