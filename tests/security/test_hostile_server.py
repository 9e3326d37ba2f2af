"""Issue 17 #4 and #5, issue 18 #7 (the client's part): a slow or hostile server.

The native adapter (and the HTTP client every adapter shares) against a real HTTP
server on 127.0.0.1 that misbehaves (`support/hostile.py`): it never answers, stops
half-way, trickles, sends an endless or deeply nested body, or lists entries no
filesystem can hold. Each failure must come as a typed error within the stated bound
(`limits.Timeouts`, docs/semantics.md "Failures"), never as a hang, a traceback or
unbounded memory; legitimate slow transfers and long-polls must still work.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from repomount import tarwrite
from repomount.remotes import native_pages
from repomount.remotes.base import Expect, Fetched, ProtocolError, Unavailable, Write
from repomount.remotes.http import RetryPolicy
from repomount.remotes.limits import MAX_ANSWER, Stalled, Timeouts
from repomount.remotes.native import NativeRemote
from support.hostile import (
    HEAD,
    Answer,
    Endless,
    EndlessPages,
    HostileServer,
    Overflowing,
    Request,
    Silent,
    StopsAfter,
    Trickle,
    Unfinished,
    deep_json,
)
from support.util import sha, wait_until_async

BIG = bytes(range(256)) * 1024  # 256 KiB
FILES = {"a.txt": b"hello\n", "d/b.txt": b"below\n", "big.bin": BIG}
# Many small files: a listing of ~10 KB, which a trickle would take hours to send.
FILES.update({f"many/f{i:03}.txt": b"x" for i in range(100)})

TIMEOUTS = Timeouts(connect=2.0, answer=0.5, read=0.5, min_rate=64 << 10)
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)
SLACK = 1.5  # seconds a loaded 2-core machine may add to a bound


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer(FILES) as server:
        yield server


@asynccontextmanager
async def opened(server: HostileServer, timeouts: Timeouts) -> AsyncIterator[NativeRemote]:
    remote = NativeRemote(server.url, server.repo, retry=FAST, timeouts=timeouts)
    try:
        yield remote
    finally:
        await remote.aclose()


@pytest.fixture
async def remote(hostile: HostileServer) -> AsyncIterator[NativeRemote]:
    async with opened(hostile, TIMEOUTS) as remote:
        yield remote


def tree(request: Request) -> bool:
    return request.is_tree()


def trees(server: HostileServer) -> int:
    return sum(r.is_tree() for r in server.requests)


# --------------------------------------------------------------------------- A: timeouts


async def test_a_silent_server_fails_a_listing_after_the_answer_timeout(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    hostile.misbehave(tree, Silent())
    began = trio.current_time()
    with pytest.raises(Stalled, match=r"GET /v1/repos/r/tree: no answer in 0\.5 s"):
        await remote.list_tree("")
    took = trio.current_time() - began
    assert TIMEOUTS.answer <= took < TIMEOUTS.answer + SLACK
    assert trees(hostile) == 1  # not asked again at once: that would multiply the wait


async def test_an_answer_that_stops_fails_after_the_read_timeout(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    hostile.misbehave(tree, StopsAfter(sent=20))
    began = trio.current_time()
    # (silent after 20 bytes: both the silence and the rate floor end it, about at once)
    with pytest.raises(Stalled, match=r"the answer (stopped|came slower).*\b20 bytes"):
        await remote.list_tree("")
    assert trio.current_time() - began < TIMEOUTS.read + SLACK


async def test_a_trickling_answer_fails_once_it_falls_below_the_minimum_rate(
    hostile: HostileServer,
) -> None:
    """Probe: a listing trickled one byte at a time held `ls` for 795 s. No silence is
    long enough to trip the read timeout here; the rate floor ends it."""
    timeouts = Timeouts(connect=2.0, answer=1.0, read=1.0, min_rate=1000)
    hostile.misbehave(tree, Trickle(every=0.05))  # 20 bytes/s: ~10 minutes for the listing
    async with opened(hostile, timeouts) as remote:
        began = trio.current_time()
        with pytest.raises(Stalled, match="slower than 1000 bytes/s"):
            await remote.list_tree("")
    assert trio.current_time() - began < timeouts.read + 0.5 + SLACK


async def test_a_slow_but_steady_download_longer_than_every_timeout_still_arrives(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    """The deadline grows with the bytes that came: a large file at a modest rate (here
    ~160 KiB/s, over twice the floor) may take far longer than any single timeout."""
    hostile.misbehave(lambda r: r.route == "/files/big.bin", Trickle(every=0.05, step=8 << 10))
    out = io.BytesIO()
    began = trio.current_time()
    fetched = await remote.read("big.bin", out)
    assert trio.current_time() - began > TIMEOUTS.answer + TIMEOUTS.read
    assert out.getvalue() == BIG and fetched == Fetched(sha(BIG), len(BIG), len(BIG), checked=True)


@pytest.mark.parametrize("offset", [0, 100_000], ids=["whole", "ranged"])
async def test_a_download_that_stops_fails_the_read(
    hostile: HostileServer, remote: NativeRemote, offset: int
) -> None:
    """Cache fills read whole files, partial reads (vfs/partial.py) ranges of them."""
    hostile.misbehave(lambda r: r.route == "/files/big.bin", StopsAfter(sent=4096))
    with pytest.raises(Stalled, match="stopped"):
        await remote.read("big.bin", io.BytesIO(), version=sha(BIG), offset=offset)


async def test_a_bulk_read_that_stops_fails(
    hostile: HostileServer, remote: NativeRemote, tmp_path: Path
) -> None:
    first = hostile.read(["a.txt"])[2][: -len(tarwrite.END_OF_ARCHIVE)]  # its tar member
    hostile.misbehave(lambda r: r.route == "/read", StopsAfter(sent=len(first) + 100))
    names = iter(range(1000))
    got: list[str] = []
    with pytest.raises(Stalled, match="POST /v1/repos/r/read: the answer stopped"):
        await remote.read_many(
            ["a.txt", "d/b.txt"],
            lambda: tmp_path / f"n{next(names)}",
            lambda path, fetched, file: got.append(path),
        )
    assert got == ["a.txt"]  # what came whole before the stall stays delivered


@pytest.mark.parametrize("then", ["silent", "closed", "endless"])
async def test_a_bulk_read_whole_before_its_answer_ends_succeeds(
    hostile: HostileServer, tmp_path: Path, then: str
) -> None:
    """Every file has come once the tar's end has: what follows is read only so that
    the connection serves the next request (at most TRAILER_MAX bytes, for at most
    TRAILER_WAIT). A server that then goes silent, cuts the connection or sends on and
    on costs that connection, not the read: no Stalled or Unavailable (which would
    take the mount offline), no wait for the read timeout, no memory."""
    behaviour = {"silent": Unfinished(), "closed": Unfinished(close=True)}.get(then)
    hostile.misbehave(lambda r: r.route == "/read", behaviour or Overflowing())
    timeouts = Timeouts(connect=2.0, answer=5.0, read=5.0)  # (longer than TRAILER_WAIT)
    names = iter(range(1000))
    got: list[str] = []
    async with opened(hostile, timeouts) as remote:
        began = trio.current_time()
        await remote.read_many(
            ["a.txt", "d/b.txt"],
            lambda: tmp_path / f"n{next(names)}",
            lambda path, fetched, file: got.append(path),
        )
        assert trio.current_time() - began < timeouts.read  # (TRAILER_WAIT, 1 s, and slack)
    assert sorted(got) == ["a.txt", "d/b.txt"]
    assert [r.route for r in hostile.requests] == ["/read"]  # (not sent again)


async def test_a_commit_never_answered_fails_after_the_answer_timeout(
    hostile: HostileServer, remote: NativeRemote, tmp_path: Path
) -> None:
    hostile.misbehave(lambda r: r.route == "/commits", Silent())
    spool = tmp_path / "spool"
    spool.write_bytes(b"new")
    write = Write("new.txt", spool, 3, sha(b"new"), Expect.ABSENT, key="k1")
    began = trio.current_time()
    with pytest.raises(Stalled, match="POST /v1/repos/r/commits: no answer"):
        await remote.apply([write])
    assert trio.current_time() - began < TIMEOUTS.answer + SLACK


async def test_a_long_poll_may_take_longer_than_the_answer_timeout(
    remote: NativeRemote,
) -> None:
    began = trio.current_time()
    batch = await remote.changes(HEAD, wait=1.0)  # the server holds it 1 s, answer is 0.5
    assert trio.current_time() - began >= 1.0
    assert (batch.head, batch.changes) == (HEAD, [])


async def test_other_requests_go_on_while_one_is_stalled(hostile: HostileServer) -> None:
    hostile.misbehave(tree, Silent())
    timeouts = Timeouts(connect=2.0, answer=10.0, read=10.0)
    stalled = trio.Event()
    async with opened(hostile, timeouts) as remote, trio.open_nursery() as nursery:

        async def listing() -> None:
            with pytest.raises(Stalled):
                await remote.list_tree("")
            stalled.set()

        nursery.start_soon(listing)
        await trio.to_thread.run_sync(hostile.wait_for, tree)
        began = trio.current_time()
        out = io.BytesIO()
        await remote.read("a.txt", out)
        assert out.getvalue() == FILES["a.txt"]
        assert trio.current_time() - began < 2.0 and not stalled.is_set()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- B: bad entries


async def test_a_listing_with_bad_entries_serves_the_rest(
    hostile: HostileServer, remote: NativeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.bad_entries = [
        {"path": "pipe", "type": "fifo", "size": 0},
        {"path": "nan.txt", "type": "file", "size": 1, "mtime": float("nan")},
        {"path": "neg.txt", "type": "file", "size": -1},
        {"path": "huge.txt", "type": "file", "size": 10**30},
        {"path": "when.txt", "type": "file", "size": 1, "mtime": "yesterday"},
    ]
    listing = await remote.list_tree("")
    assert sorted(e.path for e in listing.entries) == ["a.txt", "big.bin", "d", "many"]
    skipped = [r.getMessage() for r in caplog.records if "skipping entry" in r.getMessage()]
    assert len(skipped) == 5
    for bad in ("'pipe'", "'nan.txt'", "'neg.txt'", "'huge.txt'", "'when.txt'"):
        assert sum(bad in line for line in skipped) == 1


# --------------------------------------------------------------------------- C: memory


async def test_an_endless_listing_is_an_error_after_the_size_cap(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    """Probe: an endless listing body drove the daemon to 3 GB."""
    endless = hostile.misbehave(tree, Endless())
    assert isinstance(endless, Endless)
    with pytest.raises(ProtocolError, match="answer larger than 64 MiB"):
        await remote.list_tree("")
    # The client stopped reading at the cap (the socket buffers hold a few MiB more).
    # The server's thread counts a chunk once its send returns, which may come after
    # the client has read it and given up: wait for the count to catch up.
    await wait_until_async(lambda: endless.sent >= MAX_ANSWER, 5, "the server's count")
    assert MAX_ANSWER <= endless.sent < MAX_ANSWER + (32 << 20)


async def test_a_listing_whose_pages_never_end_is_an_error(
    hostile: HostileServer, remote: NativeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile.misbehave(tree, EndlessPages(cursor="again"))
    with pytest.raises(ProtocolError, match="its pages make a loop"):
        await remote.list_tree("")
    assert trees(hostile) == 2
    monkeypatch.setattr(native_pages, "MAX_LISTING_ENTRIES", 500)  # (2,000,000 by default)
    hostile.misbehave(tree, EndlessPages())
    with pytest.raises(ProtocolError, match="its pages make over 500 entries"):
        await remote.list_tree("", recursive=True)  # ~100 entries a page
    hostile.misbehave(tree, EndlessPages(empty=True))  # (no entry, a next page each time)
    pages_before = trees(hostile)
    with pytest.raises(ProtocolError, match="its pages make over 500 entries"):
        await remote.list_tree("", recursive=True)
    assert trees(hostile) - pages_before <= 500 // remote.page_size + 2


async def test_pages_holding_more_entries_than_asked_for_are_bounded_by_their_entries(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page may hold more entries than the `limit` asked for (this server ignores
    it: ~100 entries a page); the listing is bounded by the entries it holds too, not
    only by pages * limit (which let 64 MiB pages of entries through, limit-many pages
    of them)."""
    monkeypatch.setattr(native_pages, "MAX_LISTING_ENTRIES", 500)
    hostile.misbehave(tree, EndlessPages())
    remote = NativeRemote(hostile.url, hostile.repo, retry=FAST, timeouts=TIMEOUTS, page_size=10)
    try:
        with pytest.raises(ProtocolError, match="its pages make over 500 entries"):
            await remote.list_tree("", recursive=True)
    finally:
        await remote.aclose()
    # (6 pages of ~100 hold over 500; one more may have been asked for ahead)
    assert trees(hostile) <= 500 // 100 + 2


async def test_an_endless_error_answer_is_read_only_in_part(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    hostile.misbehave(tree, Endless(status=503))
    with pytest.raises(Unavailable, match="503"):
        await remote.list_tree("")
    assert trees(hostile) == FAST.attempts  # a 503 is retried; each answer cut short


@pytest.mark.parametrize("route", ["", "/tree"], ids=["info", "listing"])
async def test_deeply_nested_json_is_a_one_line_error(
    hostile: HostileServer, remote: NativeRemote, route: str
) -> None:
    """Probe: a deeply nested answer at mount time failed with a raw RecursionError."""
    hostile.misbehave(lambda r: r.route == route, Answer(deep_json(100_000)))
    with pytest.raises(ProtocolError, match="nested deeper than 64 levels") as info:
        await (remote.info() if route == "" else remote.list_tree(""))
    assert "\n" not in str(info.value)


async def test_a_deeply_nested_error_answer_is_still_just_an_error(
    hostile: HostileServer, remote: NativeRemote
) -> None:
    hostile.misbehave(tree, Answer(deep_json(100_000), status=500))
    with pytest.raises(Unavailable, match="500"):
        await remote.list_tree("")
