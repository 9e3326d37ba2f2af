"""Second reading of fsync's local syncs: nothing of theirs may stay open, whether or
not the thread of _sync_here ever starts (it opens the content file by its name)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
import trio

from repomount.vfs import fileio
from support.memremote import MemRemote
from support.vfsutil import MakeMount, VfsMount, close, open_path

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _links() -> list[str]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return out


async def _written(m: VfsMount) -> int:
    """A descriptor of `f`, just written (`saved`), to fsync."""
    fh, _ = await open_path(m.vfs, "f", FLAGS)
    await m.vfs.write(fh, 0, b"saved\n")
    return fh


async def _closed_leaving_no_blob_open(m: VfsMount, fh: int) -> None:
    """Close `fh`; then (the worker threads done) no descriptor of ours is open on a
    content file of the journal."""
    await close(m.vfs, fh)
    await trio.sleep(0.2)
    blobs = str(m.vfs.journal.blob_dir) + "/"
    assert [p for p in _links() if p.startswith(blobs)] == []


async def test_an_answer_at_the_deadline_leaks_no_descriptor(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote's answer is applied in the same scheduling batch as the 3 ms
    deadline: the first wait is cancelled, the second returns at once (no checkpoint)
    and cancels the sync task before its thread started."""
    m = await make_mount()
    real = m.vfs.flusher.wait_for
    calls: list[int] = []

    async def wait_for(ids: Sequence[int], timeout: float, **kw: float | None) -> None:
        calls.append(1)
        await real(ids, timeout, **kw)
        if len(calls) == 1:
            await trio.sleep_forever()  # (acknowledged, but the deadline won)

    monkeypatch.setattr(m.vfs.flusher, "wait_for", wait_for)
    fh = await _written(m)
    await m.vfs.fsync(fh)
    assert mem.files() == {"f": b"saved\n"}
    await _closed_leaving_no_blob_open(m, fh)


async def test_syncs_waiting_for_a_thread_leak_no_descriptor(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker thread busy (a slow disk, other syncs): the sync task waits for
    one, and the remote's acknowledgement cancels it there."""
    m = await make_mount()
    real_apply = mem.apply

    async def slow(changes, *, base=None):  # type: ignore[no-untyped-def]
        await trio.sleep(0.05)
        return await real_apply(changes, base=base)

    monkeypatch.setattr(mem, "apply", slow)
    fh = await _written(m)
    # The default limiter's 40 tokens all taken (abandoned syncs keep theirs until
    # their fsync(2) returns): only the fsync's own thread call is given a full one.
    real_run = fileio.trio.to_thread.run_sync
    busy = trio.CapacityLimiter(1)
    await busy.acquire_on_behalf_of("someone else")

    async def run_sync(fn, *args, **kw):  # type: ignore[no-untyped-def]
        if fn is fileio._sync_blob:
            kw["limiter"] = busy
        return await real_run(fn, *args, **kw)

    monkeypatch.setattr(fileio.trio.to_thread, "run_sync", run_sync)
    try:
        await m.vfs.fsync(fh)
    finally:
        monkeypatch.undo()
        busy.release_on_behalf_of("someone else")
    assert mem.files() == {"f": b"saved\n"}
    await _closed_leaving_no_blob_open(m, fh)


async def test_control_a_plain_fsync_leaves_no_descriptor(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount()
    fh = await _written(m)
    await m.vfs.fsync(fh)
    await _closed_leaving_no_blob_open(m, fh)
