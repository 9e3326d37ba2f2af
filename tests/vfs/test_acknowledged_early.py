"""Waiters answer when the remote has their changes, not when the mount's bookkeeping
of them is done: `repomount sync` after `cp -r` of 2,000 files waited 0.3 s more at
20 ms RTT for the journal rows, cache links and versions of what had landed already.
The bookkeeping still runs to the end, and until then nothing counts them as pending."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

from repomount.remotes.base import ApplyResult, Change
from repomount.vfs.errors import FsError
from repomount.vfs.flusher import Flusher
from repomount.vfs.outcomes import Landing
from support.gatedremote import GatedRemote
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    MakeMount,
    VfsMount,
    close,
    mkdirs,
    open_path,
    resolve,
    write_file,
)


@pytest.fixture
async def gate(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[trio.Event]:
    """The bookkeeping of a landed batch waits for this event (opened at teardown)."""
    opened = trio.Event()
    original = Flusher._apply_landed

    async def gated(self: Flusher, landed: list, at: Landing) -> None:  # type: ignore[type-arg]
        await opened.wait()
        await original(self, landed, at)

    monkeypatch.setattr(Flusher, "_apply_landed", gated)
    yield opened
    opened.set()


async def _written(m: VfsMount, count: int) -> None:
    for i in range(count):
        await write_file(m.vfs, f"d/f{i:02}", b"%d\n" % i)


async def test_sync_answers_once_the_remote_has_everything(
    make_mount: MakeMount, mem: MemRemote, gate: trio.Event
) -> None:
    m = await make_mount(**HELD)
    await mkdirs(m.vfs, "d")
    await _written(m, 40)  # more than one chunk of bookkeeping
    with trio.fail_after(20):
        assert await m.vfs.drain(20.0) == []
    assert len(mem.files()) == 40
    # Not booked yet, and not pending either.
    assert m.vfs.journal.records()
    status = await m.vfs.status()
    assert status["pending"] == [] and status["pending_changes"] == 0
    gate.set()
    with trio.fail_after(20):
        await m.vfs.flusher.settled()
    assert m.vfs.journal.records() == []
    assert (await resolve(m.vfs, "d/f07")).version == mem.items["d/f07"].version


async def test_fsync_answers_before_the_bookkeeping(
    make_mount: MakeMount, mem: MemRemote, gate: trio.Event
) -> None:
    m = await make_mount(**HELD)
    fh, _ = await open_path(m.vfs, "doc", os.O_WRONLY | os.O_CREAT)
    await m.vfs.write(fh, 0, b"saved\n")
    with trio.fail_after(20):
        await m.vfs.fsync(fh)
    assert mem.files() == {"doc": b"saved\n"}
    await close(m.vfs, fh)
    # A save made before the bookkeeping is done goes over the version that landed.
    await write_file(m.vfs, "doc", b"saved again\n")
    gate.set()
    with trio.fail_after(20):
        assert await m.drain() == []
    assert mem.files() == {"doc": b"saved again\n"}
    assert m.vfs.flusher.conflicts == []


async def test_fsync_answers_before_the_bookkeeping_begins(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only when the bookkeeping is slow: trio runs the tasks it wakes together in
    either order, and a saved file's fsync waited for the landed batch's journal rows
    and cache link (0.3 ms of a 3.5 ms save on loopback) about every other time."""
    order: list[str] = []
    original = Flusher._apply_landed

    async def traced(self: Flusher, landed: list, at: Landing) -> None:  # type: ignore[type-arg]
        order.append("bookkeeping")
        await original(self, landed, at)

    monkeypatch.setattr(Flusher, "_apply_landed", traced)
    wire = _OnTheWire()
    m = await make_mount(wire, **HELD)
    for i in range(SAVES):  # (every time, not by the luck of one draw)
        fh, _ = await open_path(m.vfs, "doc", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        await m.vfs.write(fh, 0, b"%d\n" % i)
        with trio.fail_after(20):
            await m.vfs.fsync(fh)
        order.append("fsync")
        await close(m.vfs, fh)
    assert order[:-1] == ["fsync", "bookkeeping"] * (SAVES - 1) + ["fsync"]
    with trio.fail_after(20):
        assert await m.drain() == []
    assert wire.files() == {"doc": b"%d\n" % (SAVES - 1)}
    assert m.vfs.flusher.conflicts == []


SAVES = 12  # (a wrong order shows about every other save: 1 in 2^11 would pass)


class _OnTheWire(MemRemote):
    """A commit takes a moment, as it does on a network: the fsync's local syncs (a
    worker thread's) are done when its answer comes. (50 ms was not always enough on a
    loaded 2-core machine: a worker thread's first job came later than the answer.)"""

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        await trio.sleep(0.2)
        return await super().apply(changes, base=base)


async def test_a_conflicted_save_waits_for_its_outcome(
    make_mount: MakeMount, mem: MemRemote, gate: trio.Event
) -> None:
    """Only what the remote applied answers early: a save that met someone else's
    change is not acknowledged, and its fsync reports the conflict (ESTALE)."""
    mem.put("doc", b"base\n")
    m = await make_mount(**HELD)
    fh, _ = await open_path(m.vfs, "doc", os.O_WRONLY | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"mine\n")
    mem.put("doc", b"changed elsewhere\n")
    answer: list[BaseException | None] = []

    async def fsync() -> None:
        try:
            await m.vfs.fsync(fh)
            answer.append(None)
        except FsError as e:
            answer.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fsync)
        with trio.fail_after(20):
            while mem.requests["apply"] == 0:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert answer == []  # (its batch's bookkeeping is held at the gate)
        gate.set()
    assert len(answer) == 1 and isinstance(answer[0], FsError)
    assert answer[0].errno == errno.ESTALE
    await close(m.vfs, fh)


async def test_a_sync_answers_for_what_was_written_before_it(make_mount: MakeMount) -> None:
    """`repomount sync` while another program goes on writing (the exerciser, with two
    processes): it answered "not everything is uploaded" at once, naming a file the
    other program had just written. It waits for what was written before it began."""
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    await write_file(m.vfs, "before", b"1\n")
    gated.armed = True
    left: list[list[str]] = []

    async def sync() -> None:
        left.append(await m.vfs.drain(20.0, later_too=False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync)
        await gated.entered.wait()  # ("before" on the wire)
        await write_file(m.vfs, "meanwhile", b"2\n")
        gated.gate.set()
    assert left == [[]]
    assert "before" in gated.files()
    assert await m.vfs.drain(20.0) == []  # (everything, as `unmount` asks)
    assert gated.files() == {"before": b"1\n", "meanwhile": b"2\n"}
