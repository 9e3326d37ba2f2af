"""What a large file read while it arrives (vfs/partial.py) vouches for: bytes are
cached as a version only once every one of them was checked against it, and a stream
that fails after bringing the last byte does not fail the file (each failed before its
fix: a second reading of the "checked as it came" change found them)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, BinaryIO

import pytest
import trio

from repomount.remotes.base import Entry, Fetched
from repomount.remotes.limits import Stalled
from repomount.vfs import partial
from support.streamingremote import Streaming
from support.vfsutil import MakeMount, close, open_path, read_all

MiB = 1 << 20
DATA = bytes(range(1, 256)) * (16 * MiB // 255)  # 16 MiB: read while it arrives


def _cached(m: Any, version: str | None) -> bytes | None:
    assert version is not None
    file = m.vfs.cache.cached_path("big.bin", version)
    return file.read_bytes() if file.exists() else None


class ShortContent(Streaming):
    """Lists the file a MiB longer than its content, and answers a ranged read past the
    content with filler (that no one checks)."""

    def _entry(self, path: str) -> Entry:
        e = super()._entry(path)
        if e.kind != "file":
            return e
        return Entry(e.path, e.kind, e.size + MiB, e.version, e.mtime, e.mode, e.target, e.mtime_ns)

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        n = len(self.items[path].data)
        if offset < n:
            return await super().read(path, dest, version=version, offset=offset, length=length)
        self.offsets.append(offset)
        await trio.lowlevel.checkpoint()
        dest.write(b"\xaa" * (n + MiB - offset))
        return Fetched(self.items[path].version, n + MiB, n + MiB - offset)


async def test_a_whole_answer_that_ends_short_does_not_vouch_for_what_came_later(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stream brings (and checks) all the content there is, which is shorter
    than listed; a later ranged stream fills the rest unchecked. The file must not be
    cached as that version (it was, with the filler)."""
    monkeypatch.setattr(partial, "RETRY_AFTER", 0.3)
    remote = ShortContent(checks=True)
    remote.gate.set()
    remote.put("big.bin", DATA)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 4096) == DATA[:4096]
    with pytest.raises(Exception, match="ended at byte"):
        await m.vfs.read(fh, len(DATA), 4096)
    await trio.sleep(0.4)
    assert await m.vfs.read(fh, len(DATA), 4096) == b"\xaa" * 4096  # (the second stream)
    await close(m.vfs, fh)
    await trio.sleep(0.3)
    assert _cached(m, node.version) is None


async def test_a_short_write_to_the_download_leaves_no_hole(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    calls = 0

    def short_once(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 5:  # half of one piece reaches the disk (a disk nearly full, say)
            return real(fd, bytes(data)[: len(data) // 2], offset)
        return real(fd, data, offset)

    monkeypatch.setattr(partial.os, "pwrite", short_once)
    remote = Streaming(checks=True)
    remote.gate.set()
    remote.put("big.bin", DATA)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == DATA
    await close(m.vfs, fh)
    assert calls > 5
    await trio.sleep(0.3)
    assert _cached(m, node.version) == DATA


class FailsAfterTheLastByte(Streaming):
    """Every byte comes, then the answer stalls instead of ending."""

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        data = self.items[path].data
        for pos in range(offset, len(data), MiB):
            dest.write(data[pos : pos + MiB])
            await trio.lowlevel.checkpoint()
        await trio.sleep(0.05)
        raise Stalled(f"{path}: the answer stopped after its last byte")


async def test_an_answer_failing_after_its_last_byte_does_not_fail_the_file(
    make_mount: MakeMount,
) -> None:
    remote = FailsAfterTheLastByte()
    big = DATA * 4
    remote.put("big.bin", big)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    for _ in range(100):  # (before, while and after the file completes and is checked)
        assert await m.vfs.read(fh, 0, 10) == big[:10]
        await trio.sleep(0.005)
    await close(m.vfs, fh)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDWR)
    await m.vfs.write(fh, 5, b"HELLO")  # (copies every byte first: `finished()`)
    assert await m.vfs.read(fh, 0, 12) == big[:5] + b"HELLO" + big[10:12]
    await close(m.vfs, fh)
    assert hashlib.sha256(_cached(m, node.version) or b"").hexdigest() == node.version
