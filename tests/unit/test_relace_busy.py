"""RelaceRemote when the repo stays locked (423) longer than its retry budget."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from repomount.remotes.base import Expect, Unavailable, Write
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
