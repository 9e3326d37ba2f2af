"""RelaceRemote when the repo stays locked (423) longer than its retry budget."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes.base import Applied, Expect, Unavailable, Write
from repomount.remotes.http import RetryPolicy
from repomount.remotes.relace import RelaceRemote
from support.util import sha


async def test_a_repo_locked_for_too_long_raises_unavailable(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "GET":  # the precondition check: no such file yet
            return httpx.Response(404, json={"detail": "File not found: a.txt"})
        return httpx.Response(423, json={"detail": "Repository is locked"})

    spool = tmp_path / "spool"
    spool.write_bytes(b"a")
    change = Write("a.txt", spool, 1, sha(b"a"), Expect.ABSENT)
    remote = RelaceRemote(
        "r",
        token="k",
        endpoint="http://relace.test/v1",
        retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001),
        transport=httpx.MockTransport(handler),
    )
    try:
        with pytest.raises(Unavailable) as caught:
            await remote.apply([change])
    finally:
        await remote.aclose()
    assert caught.value.status == 423 and caught.value.retryable
    assert seen == ["GET", "PUT", "PUT", "PUT"]  # nothing applied: the vfs tries later


async def test_its_own_writes_go_one_at_a_time(tmp_path: Path) -> None:
    """The service locks the repo for each write and refuses another meanwhile (423):
    writes sent in parallel (the flusher's `--transfers` for files that each need their
    own PUT) would refuse each other, be retried with backoff, and say the remote is
    busy. One adapter sends its writes in turn instead."""
    writing = 0
    refused = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal writing, refused
        if request.method == "GET":  # the precondition checks: no such files yet
            return httpx.Response(404, json={"detail": "File not found"})
        if writing:
            refused += 1
            return httpx.Response(423, json={"detail": "Repository is locked"})
        writing += 1
        try:
            await trio.sleep(0.02)  # (the upload, the lock held)
        finally:
            writing -= 1
        return httpx.Response(201, json={"repo_id": "r", "repo_head": "h"})

    remote = RelaceRemote(
        "r",
        token="k",
        endpoint="http://relace.test/v1",
        retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001),
        transport=httpx.MockTransport(handler),
    )
    outcomes: list[object] = []

    async def write(i: int) -> None:
        spool = tmp_path / f"spool{i}"
        spool.write_bytes(b"\xff%d" % i)  # (not UTF-8: each its own PUT)
        data = spool.read_bytes()
        change = Write(f"f{i}.bin", spool, len(data), sha(data), Expect.ABSENT)
        outcomes.extend((await remote.apply([change])).outcomes)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(write, i)
    finally:
        await remote.aclose()
    assert refused == 0
    assert len(outcomes) == 6 and all(isinstance(o, Applied) for o in outcomes)
