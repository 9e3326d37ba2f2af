"""SideHash: a SHA-256 hashed in a worker thread while the bytes still come, in order,
with the bytes it holds bounded, equal to hashlib's over the same bytes."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import trio

from repomount import sidehash
from repomount.sidehash import SideHash


def _chunks(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[i : i + size] for i in range(0, total, size)]


async def test_a_short_stream_is_hashed_on_the_loop() -> None:
    side = SideHash()
    chunks = _chunks(100_000, 7_000)
    for c in chunks:
        await side.feed(c)
    assert not side.started  # (too short for a batch: no thread)
    assert await side.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert side.size == 100_000


@pytest.mark.parametrize("chunk", [1, 4096, 1 << 20, 3 << 20])
async def test_a_long_stream_goes_to_the_thread_in_order(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 64 << 10)
    monkeypatch.setattr(sidehash, "HERE_MAX", 16 << 10)
    total = 10 << 20 if chunk > 1 else 300_000
    chunks = _chunks(total, chunk)
    side = SideHash()
    for c in chunks:
        await side.feed(c)
    assert side.started
    assert await side.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


async def test_the_feeder_waits_once_the_thread_is_lag_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 1000)
    monkeypatch.setattr(sidehash, "LAG", 5000)
    gate = threading.Event()
    real = sidehash._update

    def held(digest: hashlib._Hash, chunks: list[bytes]) -> None:
        gate.wait(10)
        real(digest, chunks)

    monkeypatch.setattr(sidehash, "_update", held)
    side = SideHash()
    fed: list[bytes] = []
    with trio.move_on_after(0.5) as waited:
        for _ in range(100):
            chunk = os.urandom(1000)
            fed.append(chunk)
            await side.feed(chunk)
    assert waited.cancelled_caught  # the thread is held: the feeder had to stop
    assert side.size <= 5000 + 1000  # ... within LAG (plus the chunk it was feeding)
    gate.set()
    monkeypatch.setattr(sidehash, "_update", real)
    assert await side.hexdigest() == hashlib.sha256(b"".join(fed)).hexdigest()


async def test_finish_soon_sends_the_rest_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 64 << 10)
    monkeypatch.setattr(sidehash, "HERE_MAX", 1 << 10)
    side = SideHash()
    chunks = _chunks(200 << 10, 30 << 10)
    for c in chunks:
        await side.feed(c)
    side.finish_soon()
    with trio.fail_after(5):
        while side._queued_bytes or side._batch is not None:  # the thread drains it all
            await trio.sleep(0.001)
    assert await side.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


async def test_drop_lets_go_of_what_is_queued() -> None:
    side = SideHash()
    await side.feed(b"x" * 1000)
    side.drop()
    assert side._queued == [] and side._queued_bytes == 0


async def test_a_failure_in_the_thread_is_raised_by_hexdigest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sidehash, "BATCH", 1000)

    def broken(digest: hashlib._Hash, chunks: list[bytes]) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(sidehash, "_update", broken)
    side = SideHash()
    await side.feed(b"y" * 2000)
    with pytest.raises(MemoryError):
        await side.hexdigest()
