"""RelaceRemote when the repo stays locked (423) longer than its retry budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    change = _new_file(tmp_path, "a.txt", b"a")
    remote = _relace(handler, attempts=3)
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

    remote = _relace(handler, attempts=2)
    outcomes: list[object] = []

    async def write(i: int) -> None:
        change = _new_file(tmp_path, f"f{i}.bin", b"\xff%d" % i)  # (not UTF-8: a PUT each)
        outcomes.extend((await remote.apply([change])).outcomes)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(write, i)
    finally:
        await remote.aclose()
    assert refused == 0
    assert len(outcomes) == 6 and all(isinstance(o, Applied) for o in outcomes)


def _relace(handler: Callable[[httpx.Request], Any], *, attempts: int) -> RelaceRemote:
    """A RelaceRemote whose service is `handler`, retrying 423 `attempts` times."""
    return RelaceRemote(
        "r",
        token="k",
        endpoint="http://relace.test/v1",
        retry=RetryPolicy(attempts=attempts, base_delay=0.001, max_delay=0.001),
        transport=httpx.MockTransport(handler),
    )


def _new_file(tmp_path: Path, path: str, data: bytes) -> Write:
    """The write of a new file, its content in a spool as the vfs hands it over."""
    spool = tmp_path / f"spool-{sha(path.encode())}"
    spool.write_bytes(data)
    return Write(path, spool, len(data), sha(data), Expect.ABSENT)
