"""Retries per change (Retry-After honoured, fsync skips the batching delay but not the
backoff) and fsyncdir (durable, then acknowledged)."""

from __future__ import annotations

import errno

import pytest
import trio

from repomount.vfs.errors import FsError
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import ROOT, MakeMount, listdir, open_path, write_file


async def test_retry_after_is_a_floor_even_for_fsync(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    m = await make_mount(faulty)
    faulty.fail_next(1, methods=("apply",), retry_after=20.0)
    await write_file(m.vfs, "f", b"x\n")
    await wait_until_async(
        lambda: m.vfs.journal.records()[0].tries, 30, "the first try", interval=0.01
    )
    (rec,) = m.vfs.journal.records()
    assert rec.next_try - m.vfs.flusher._now() > 15  # (virtual time: hashing runs in a thread)
    fh, _ = await open_path(m.vfs, "f", 0)
    await m.vfs.fsync(fh)  # waits for the retry time, then succeeds
    assert m.vfs.flusher._now() >= rec.next_try
    assert faulty.calls["apply"] == 2 and mem.files() == {"f": b"x\n"}
    await m.vfs.release(fh)
    assert m.vfs.journal.records() == []


async def test_tries_and_retry_time_are_kept_in_the_row(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    m = await make_mount(faulty)
    faulty.fail_next(3, methods=("apply",))
    await write_file(m.vfs, "f", b"x\n")
    await wait_until_async(lambda: faulty.calls["apply"] >= 2, 30, "a second try", interval=0.1)
    (rec,) = m.vfs.journal.records()
    assert rec.tries >= 1 and rec.next_try > 0 and rec.last_error
    assert await m.drain(120) == []
    assert mem.files() == {"f": b"x\n"}


async def test_fsyncdir_waits_for_the_directory_changes(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(flush_delay=3600.0, max_flush_window=3600.0)
    d = await m.vfs.mkdir(ROOT, "d", 0o755)
    await write_file(m.vfs, "d/a", b"a\n")
    await m.vfs.rename(d.ino, "a", d.ino, "b", 0)
    assert mem.files() == {}
    await m.vfs.fsyncdir(d.ino)
    assert mem.files() == {"d/b": b"a\n"}


async def test_fsyncdir_fails_when_the_remote_does_not_take_it(
    make_mount: MakeMount, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    m = await make_mount(faulty, flush_delay=3600.0, max_flush_window=3600.0, fsync_timeout=30.0)
    faulty.fail_rate(1.0, methods=("apply",))
    d = await m.vfs.mkdir(ROOT, "d", 0o755)
    await write_file(m.vfs, "d/a", b"a\n")
    with pytest.raises(FsError) as e:
        await m.vfs.fsyncdir(d.ino)
    assert e.value.errno == errno.EIO
    assert len(m.vfs.journal.records()) == 2  # kept, to be sent later
    faulty.heal()


async def test_changes_go_as_soon_as_the_remote_answers_again(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    """While the remote was away a change backed off further at each try; once any
    request gets an answer again (a listing, the change feed), it goes at once rather
    than at the end of its last backoff (up to --backoff-max later)."""
    m = await make_mount(faulty)
    await listdir(m.vfs, "")  # (the root is listed: offline, writes go on)
    faulty.fail_rate(1.0, methods=("apply", "list_tree"))
    await write_file(m.vfs, "f", b"x\n")
    await wait_until_async(lambda: faulty.calls["apply"] >= 6, 600, "six tries", interval=1)
    (rec,) = m.vfs.journal.records()
    assert rec.next_try - m.vfs.flusher._now() > 5  # backing off
    faulty.heal()
    await m.vfs.refresh_dirs([""])  # an answer
    with trio.fail_after(2):  # (virtual time; the backoff would take > 5 s)
        await wait_until_async(lambda: mem.files() == {"f": b"x\n"}, 2, "the upload")
