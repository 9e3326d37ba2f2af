"""Large files are read while they arrive (vfs/partial.py): the first byte does not
wait for the whole file, a seek starts a stream where it lands, writing waits for every
byte, and a complete file becomes a cache entry."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio

from repomount.remotes.limits import Stalled
from repomount.vfs import partial
from support.streamingremote import Streaming
from support.util import wait_until_async
from support.vfsutil import MakeMount, close, open_path, read_all

MiB = 1 << 20
SIZE = 64 * MiB


def content() -> bytes:
    block = hashlib.sha256(b"big").digest() * (MiB // 32)
    return b"".join(bytes([i]) + block[1:] for i in range(SIZE // MiB))


async def test_first_byte_before_5_percent_and_seek_while_arriving(
    make_mount: MakeMount,
) -> None:
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 4096) == data[:4096]
    assert remote.delivered <= SIZE // 20  # the rest is still on its way
    # A seek far ahead does not wait behind the stream from the start.
    far = 60 * MiB
    assert await m.vfs.read(fh, far, 4096) == data[far : far + 4096]
    assert remote.delivered <= SIZE // 5
    remote.gate.set()
    assert await read_all(m.vfs, fh) == data
    await close(m.vfs, fh)
    # Complete: checked and moved into the cache; the next open reads it there.
    await wait_until_async(lambda: m.vfs.cache.has("big.bin", node.version), 10, "the cache entry")
    reads = len(remote.offsets)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == data
    await close(m.vfs, fh)
    assert len(remote.offsets) == reads


async def test_writing_a_file_still_arriving_starts_from_all_of_it(
    make_mount: MakeMount,
) -> None:
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDWR)
    assert await m.vfs.read(fh, 0, 10) == data[:10]

    async def open_gate() -> None:
        await trio.sleep(0.2)
        remote.gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_gate)
        await m.vfs.write(fh, 5, b"HELLO")  # copies the whole content first
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert remote.files()["big.bin"] == data[:5] + b"HELLO" + data[10:]


async def test_closing_before_the_end_cancels_and_leaves_nothing(make_mount: MakeMount) -> None:
    remote = Streaming()
    remote.put("big.bin", content())
    m = await make_mount(remote)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    await m.vfs.read(fh, 0, 10)
    await close(m.vfs, fh)
    await trio.sleep(0.1)
    assert list(m.vfs.cache.tmp_dir.iterdir()) == []
    assert m.vfs.cache.usage() == 0


async def test_a_server_that_stops_every_answer_fails_reads_instead_of_crawling(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer stops after 100,000 bytes. The kernel retries a failed read-ahead
    page by page, so if each read could start a stream of its own, `cat` would crawl on,
    100,000 bytes per timeout, forever. A read fails instead, and for RETRY_AFTER no read
    starts another stream; after that one may (the server may be well again)."""
    monkeypatch.setattr(partial, "RETRY_AFTER", 0.3)
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    remote.stop_after = 100_000
    m = await make_mount(remote)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    with pytest.raises(Stalled):  # (EIO, through the FUSE layer)
        await m.vfs.read(fh, 0, MiB)  # its stream brought 100,000 bytes, then failed
    assert await m.vfs.read(fh, 0, 4096) == data[:4096]  # what came is served
    streams = len(remote.offsets)
    with pytest.raises(Stalled):
        await m.vfs.read(fh, 96 * 1024, 8192)  # past what came: no new stream
    assert len(remote.offsets) == streams
    remote.stop_after = None
    await trio.sleep(0.4)
    assert await m.vfs.read(fh, 96 * 1024, 8192) == data[96 * 1024 : 104 * 1024]
    assert len(remote.offsets) == streams + 1
    await close(m.vfs, fh)


@pytest.mark.parametrize("seek", [False, True], ids=["one stream", "a seek: two streams"])
async def test_a_file_checked_as_it_came_is_not_read_again_to_check_it(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch, seek: bool
) -> None:
    """The native remote hashes a whole answer as it streams it: a file one stream
    wrote whole is cached without a second reading. A file two streams wrote is read
    once more (each checked only its own part, or nothing)."""
    reread: list[object] = []
    sha256_of = partial._sha256_of
    monkeypatch.setattr(partial, "_sha256_of", lambda f: reread.append(f) or sha256_of(f))
    monkeypatch.setattr(partial, "SLOW_LINK", 1)  # (held at the gate it looks slow)
    remote = Streaming(checks=True)
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    if seek:
        assert await m.vfs.read(fh, 60 * MiB, 4096) == data[60 * MiB : 60 * MiB + 4096]
    remote.gate.set()
    assert await read_all(m.vfs, fh) == data
    await close(m.vfs, fh)
    await wait_until_async(lambda: m.vfs.cache.has("big.bin", node.version), 10, "the cache entry")
    assert len(reread) == (1 if seek else 0)


@pytest.fixture
def ahead_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams ahead start after 4 MiB, with 16 MiB or more to come, below 100 MiB/s."""
    monkeypatch.setattr(partial, "AHEAD_AFTER", 4 * MiB)
    monkeypatch.setattr(partial, "AHEAD_MIN", 16 * MiB)
    monkeypatch.setattr(partial, "SLOW_LINK", 100 * MiB)


async def read_in_order(make_mount: MakeMount, remote: Streaming) -> str | None:
    """`big.bin` read from start to end over a 50 MiB/s link; its version."""
    remote.piece_delay = 0.02
    remote.gate.set()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == data
    await close(m.vfs, fh)
    await wait_until_async(lambda: m.vfs.cache.has("big.bin", node.version), 10, "the cache entry")
    return node.version


@pytest.mark.parametrize("slow", [True, False])
async def test_a_slow_link_gets_more_streams_for_the_rest(
    make_mount: MakeMount, monkeypatch: pytest.MonkeyPatch, ahead_early: None, slow: bool
) -> None:
    """Read in order over a slow link, a large file gets two more streams, each for a
    third of what is left, and each stream ends where it meets the next one's bytes:
    nothing is fetched twice but a piece in flight. Over a fast link it keeps one."""
    if not slow:
        monkeypatch.setattr(partial, "SLOW_LINK", 1)
    remote = Streaming()
    await read_in_order(make_mount, remote)
    if slow:
        first, *ahead = remote.offsets
        assert first == 0 and len(ahead) == 2
        assert 4 * MiB < min(ahead) < max(ahead) < SIZE
        assert all(offset % MiB == 0 for offset in ahead)
        assert remote.delivered <= SIZE + 2 * MiB
    else:
        assert remote.offsets == [0] and remote.delivered == SIZE


async def test_a_stream_ahead_that_fails_fails_no_reader(
    make_mount: MakeMount, ahead_early: None
) -> None:
    """The streams started ahead on a slow link fail (a hosted service refusing more
    connections, say): the reader in order never sees it; where it gets to bytes that
    did not come, its own stream fetches them."""

    class AheadRefused(Streaming):
        async def read(self, path, dest, *, version=None, offset=0, length=None):  # type: ignore[no-untyped-def]
            if offset > 0 and len(self.offsets) < 3:  # (the two streams ahead)
                self.offsets.append(offset)
                raise Stalled(f"{path}: refused")
            return await super().read(path, dest, version=version, offset=offset, length=length)

    remote = AheadRefused()
    await read_in_order(make_mount, remote)
    assert len(remote.offsets) == 3  # the first, and the two ahead that failed
