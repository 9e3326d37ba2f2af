"""A burst of writes sends its content while it goes on (ahead.py): once AHEAD_MIN
bytes of journaled content wait, they are uploaded ahead of the commit, which then
names them and sends only the rest. Whatever happens to an upload ahead (it fails, is
still on its way, the remote loses it, the file changes again), what lands is each
file's last content, and nothing is lost."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest
import trio

from repomount.remotes.base import Content, Unavailable, Write
from repomount.vfs import ahead
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, write_file

KiB = 1 << 10


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "AHEAD_MIN", 64 * KiB)


@pytest.fixture
def mem() -> MemRemote:
    return MemRemote(upload_ahead=True)


def writes(remote: MemRemote) -> list[Write]:
    return [c for batch in remote.commits for c in batch if isinstance(c, Write)]


async def until(cond: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not cond():
            await trio.sleep(0.005)


async def burst(m_vfs: object, names: Sequence[str], size: int = 8 * KiB) -> dict[str, bytes]:
    files = {name: os.urandom(size) for name in names}
    for name, data in files.items():
        await write_file(m_vfs, name, data)  # type: ignore[arg-type]
    return files


async def test_a_burst_uploads_its_content_before_its_commit(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    files = await burst(m.vfs, [f"f{i}" for i in range(20)])  # 160 KiB
    await until(lambda: mem.requests["upload_ahead"] >= 2)
    assert mem.requests["apply"] == 0  # (nothing committed ahead)
    assert len(mem.staged) >= 16
    assert await m.drain() == []
    assert mem.files() == files
    assert mem.requests["apply"] == 1
    staged = {w.path for w in writes(mem) if w.staged}
    assert len(staged) >= 16 and {w.sha256 for w in writes(mem) if w.staged} <= set(mem.staged)


async def test_a_few_small_writes_send_nothing_ahead(make_mount: MakeMount, mem: MemRemote) -> None:
    m = await make_mount(**HELD)
    files = await burst(m.vfs, ["a", "b", "c"])
    await trio.sleep(0.05)
    assert await m.drain() == []
    assert mem.files() == files
    assert mem.requests["upload_ahead"] == 0 and not any(w.staged for w in writes(mem))


async def test_a_file_written_again_or_deleted_after_its_upload_lands_as_last_written(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    files = await burst(m.vfs, [f"f{i}" for i in range(10)])
    await until(lambda: mem.requests["upload_ahead"] >= 1)
    files["f1"] = b"written again"
    await write_file(m.vfs, "f1", files["f1"])
    node = await m.vfs.lookup(1, "f2")
    await m.vfs.unlink(1, "f2")
    del files["f2"]
    assert node is not None
    assert await m.drain() == []
    assert mem.files() == files


class FailingAhead(MemRemote):
    def __init__(self) -> None:
        super().__init__(upload_ahead=True)
        self.failures = 1

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        if self.failures:
            self.failures -= 1
            self.requests["upload_ahead"] += 1
            raise Unavailable("connection reset")
        return await super().upload_ahead(contents)


async def test_a_failed_upload_ahead_is_not_used_and_pauses_them_until_a_commit(
    make_mount: MakeMount,
) -> None:
    remote = FailingAhead()
    m = await make_mount(remote, **HELD)
    files = await burst(m.vfs, [f"f{i}" for i in range(10)])
    await until(lambda: remote.requests["upload_ahead"] == 1)
    files |= await burst(m.vfs, [f"g{i}" for i in range(10)])
    await trio.sleep(0.05)
    assert remote.requests["upload_ahead"] == 1  # (paused after the failure)
    assert await m.drain() == []
    assert remote.files() == files and not any(w.staged for w in writes(remote))
    files |= await burst(m.vfs, [f"h{i}" for i in range(10)])  # (the commit resumed them)
    await until(lambda: remote.requests["upload_ahead"] == 2)
    assert await m.drain() == []
    assert remote.files() == files
    staged = {w.path for w in writes(remote) if w.staged}
    assert len(staged) >= 8 and staged <= {f"h{i}" for i in range(10)}  # (8 make AHEAD_MIN)


class GatedAhead(MemRemote):
    def __init__(self) -> None:
        super().__init__(upload_ahead=True)
        self.entered = trio.Event()
        self.gate = trio.Event()

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        self.entered.set()
        await self.gate.wait()
        return await super().upload_ahead(contents)


async def test_a_commit_waits_for_an_upload_ahead_on_its_way_and_uploads_nothing_twice(
    make_mount: MakeMount,
) -> None:
    remote = GatedAhead()
    m = await make_mount(remote, **HELD)
    files = await burst(m.vfs, [f"f{i}" for i in range(10)])
    with trio.fail_after(10):
        await remote.entered.wait()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.drain)
        await trio.sleep(0.05)
        assert remote.requests["apply"] == 0  # (the commit waits for the upload)
        remote.gate.set()
    assert remote.files() == files
    staged = {w.path for w in writes(remote) if w.staged}
    assert staged == {f"f{i}" for i in range(8)}  # (8 make AHEAD_MIN; the rest go with it)
    assert remote.requests["upload_ahead"] == 1


async def test_content_the_remote_lost_after_its_upload_ahead_is_uploaded_again(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(**HELD)
    m.vfs.flusher.config.backoff_base = m.vfs.flusher.config.backoff_max = 0.01
    files = await burst(m.vfs, [f"f{i}" for i in range(10)])
    await until(lambda: mem.requests["upload_ahead"] >= 1)
    await until(lambda: len(mem.staged) == 8)
    mem.staged.clear()  # (collected by the server before the commit came)
    assert await m.drain() == []
    assert mem.files() == files
    assert mem.requests["apply"] >= 2  # (refused as a whole once; then sent again)
    assert not any(w.staged for w in writes(mem))  # (only applied commits are kept)
