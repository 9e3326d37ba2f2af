"""Second reading of health.py's busy flag: a remote that answers busy stays online,
so a stale listing is no longer served as while offline: every access asks again
(each ask, over HTTP, after the retry policy's pauses: Retry-After seconds apiece)."""

from __future__ import annotations

import pytest
import trio

from repomount.remotes.base import Listing, Unavailable
from support.memremote import MemRemote
from support.vfsutil import MakeMount, listdir


@pytest.mark.parametrize("busy", [False, True], ids=["away", "busy"])
async def test_a_stale_listing_while_the_remote_fails(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    mem.put("d/a", b"a\n")
    m = await make_mount(metadata_ttl=0.05)
    assert await listdir(m.vfs, "d") == ["a"]
    asked: list[str] = []

    async def failing(path: str, *, recursive: bool = False) -> Listing:
        asked.append(path)
        if busy:
            raise Unavailable("slow down", status=429, retry_after=2.0)
        raise Unavailable("connection refused")

    monkeypatch.setattr(mem, "list_tree", failing)
    for _ in range(5):
        await trio.sleep(0.06)  # (past the TTL)
        assert await listdir(m.vfs, "d") == ["a"]  # the known listing is served
    # Away: asked once, then served from what is known. Busy: asked at every access.
    assert len(asked) == 1, asked
