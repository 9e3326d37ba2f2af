"""fsync while the remote is unreachable: a mount offline for a while tries the change
once, at once, and answers EIO as soon as that fails (the change stays journaled and
goes once the remote is back), instead of after the 60 s bound: vim saved each file
in a minute while offline. A short outage is still waited out."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

import pytest
import trio

from repomount.remotes.base import ApplyResult, Change, Unavailable
from repomount.vfs.errors import FsError
from repomount.vfs.fileio import LOCAL_SYNC_AFTER
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import (
    MakeMount,
    VfsMount,
    close,
    listdir,
    mkdirs,
    open_path,
    write_file,
)


async def _offline_for_an_hour(make_mount: MakeMount, faulty: FaultyRemote) -> VfsMount:
    m = await make_mount(faulty, fsync_timeout=60.0)
    await listdir(m.vfs, "")
    faulty.fail_rate(1.0)  # (every request: connection refused)
    await write_file(m.vfs, "g", b"g\n")  # its upload finds the remote away
    await wait_until_async(lambda: not m.vfs.health.online, 10, "offline", interval=0.01)
    m.vfs.health.since -= 3600  # (went away an hour ago)
    return m


async def _save(m: VfsMount, data: bytes) -> int:
    """vim's save: write the file and fsync it; the descriptor stays open."""
    fh, _ = await open_path(m.vfs, "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, data)
    return fh


async def test_fsync_offline_answers_after_one_try(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    m = await _offline_for_an_hour(make_mount, faulty)
    for n in range(2):  # the second save's change was backing off: tried at once too
        fh = await _save(m, b"v%d\n" % n)
        tries = faulty.calls["apply"]
        with trio.fail_after(10), pytest.raises(FsError) as e:  # (real time; not 60 s)
            await m.vfs.fsync(fh)
        assert e.value.errno == errno.EIO
        assert "unreachable" in str(e.value)
        assert faulty.calls["apply"] > tries  # it did try
        await close(m.vfs, fh)
    assert m.vfs.journal.records()  # kept
    faulty.heal()
    assert await m.drain() == []
    assert mem.files() == {"f": b"v1\n", "g": b"g\n"}


async def test_a_short_outage_is_waited_out(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    """The remote was there when fsync began and fails a few tries (a server
    restarting): fsync waits and succeeds. (The virtual clock jumps through the
    backoffs; the time the remote has been unreachable, counted on the wall clock, stays
    below the bound.)"""
    m = await make_mount(faulty, fsync_timeout=60.0)
    faulty.fail_next(3, methods=("apply",))
    fh = await _save(m, b"x\n")
    await m.vfs.fsync(fh)
    assert faulty.calls["apply"] == 4 and mem.files() == {"f": b"x\n"}
    await close(m.vfs, fh)


async def test_an_outage_that_lasts_ends_the_wait(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online when fsync began; the remote stays away: EIO once it has been unreachable
    for UNREACHABLE_FOR (made short here), long before the 60 s bound."""
    monkeypatch.setattr("repomount.vfs.waiting.UNREACHABLE_FOR", 1.0)
    m = await make_mount(faulty, fsync_timeout=60.0)
    faulty.fail_rate(1.0, methods=("apply",))
    fh = await _save(m, b"x\n")
    with trio.fail_after(15), pytest.raises(FsError) as e:  # (backoffs 0.5-1, 1-2 s)
        await m.vfs.fsync(fh)
    assert e.value.errno == errno.EIO and faulty.calls["apply"] >= 2
    await close(m.vfs, fh)
    assert [r.path for r in m.vfs.journal.records()] == ["f"]  # kept, to go later
    faulty.heal()


def _backing_off_long(m: VfsMount) -> None:
    """Every change has been retried for an hour: each waits the longest backoff."""
    for r in m.vfs.journal.records():
        m.vfs.journal.update(r, tries=20, next_try=m.vfs.flusher._now() + 25)


async def test_fsync_offline_tries_the_changes_its_file_waits_behind(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """A file in a directory made while offline: its write waits behind the mkdir,
    backing off too; both are tried at once (the fsync waited out the mkdir's backoff,
    up to 30 s)."""
    m = await _offline_for_an_hour(make_mount, faulty)
    await mkdirs(m.vfs, "d")
    await wait_until_async(
        lambda: all(r.tries for r in m.vfs.journal.records()), 10, "tried", interval=0.01
    )
    _backing_off_long(m)
    fh, _ = await open_path(m.vfs, "d/f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"x\n")
    tries = faulty.calls["apply"]
    with trio.fail_after(10), pytest.raises(FsError) as e:  # (real time)
        await m.vfs.fsync(fh)
    assert e.value.errno == errno.EIO and "unreachable" in str(e.value)
    assert faulty.calls["apply"] > tries
    await close(m.vfs, fh)
    faulty.heal()
    m.vfs.journal.retry_now()  # (as when the remote answers again)
    assert await m.drain() == []
    assert mem.files() == {"d/f": b"x\n", "g": b"g\n"}


async def test_a_failure_at_the_local_sync_split_is_not_missed(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    """The try fails just as acknowledged() stops its first wait (LOCAL_SYNC_AFTER) to
    start the local syncs: that wake came to no one, and the fsync waited for the next
    round, a backoff later (up to 30 s), instead of answering at once."""
    m = await make_mount(faulty, fsync_timeout=60.0)
    await listdir(m.vfs, "")
    faulty.fail_rate(1.0, kind="timeout", delay=LOCAL_SYNC_AFTER)  # (virtual time)
    await write_file(m.vfs, "f", b"x\n")
    await wait_until_async(lambda: not m.vfs.health.online, 10, "offline", interval=0.01)
    await wait_until_async(
        lambda: all(r.tries for r in m.vfs.journal.records()), 10, "tried", interval=0.01
    )
    m.vfs.health.since -= 3600

    async def no_sync(blob: object) -> None:  # (no worker thread: the clock jumps not)
        await trio.lowlevel.checkpoint()

    m.vfs._sync_here = no_sync  # type: ignore[method-assign]
    fh, _ = await open_path(m.vfs, "f", os.O_WRONLY)
    await m.vfs.write(fh, 0, b"y\n")
    # (No try on its way when fsync begins: its failure would answer for this one.)
    await m.vfs.flusher.outcomes_applied(60.0)
    _backing_off_long(m)
    tries = faulty.calls["apply"]
    with pytest.raises(FsError) as e:
        await m.vfs.fsync(fh)
    assert e.value.errno == errno.EIO and "unreachable" in str(e.value)
    assert faulty.calls["apply"] - tries == 1  # (was 2: the next round's failure)
    await close(m.vfs, fh)


async def test_a_remote_back_but_busy_is_waited_for(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline for an hour, then the remote answers the fsync's try "busy" (423, locked
    by another operation): it is there, and the change waits for it, as it does while
    the mount is online (the fsync answered EIO at once, "remote unreachable")."""
    m = await _offline_for_an_hour(make_mount, faulty)
    faulty.heal()

    async def busy(changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        raise Unavailable("locked by another operation", status=423)

    monkeypatch.setattr(faulty, "apply", busy)
    m.vfs.config.fsync_timeout = 2.0
    fh = await _save(m, b"x\n")
    with trio.fail_after(10), pytest.raises(FsError) as e:
        await m.vfs.fsync(fh)
    assert e.value.errno == errno.EIO
    assert "not uploaded within" in str(e.value) and "unreachable" not in str(e.value)
    await close(m.vfs, fh)
