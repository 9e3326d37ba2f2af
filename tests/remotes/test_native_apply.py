"""NativeRemote applying changes against the real reference server: renames, atomic
batches and who is blamed, kept mtimes, blobs and packs, refused sizes, replays, and
symlinks made, replaced and refused."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes.base import (
    Applied,
    Change,
    Conflicted,
    Content,
    Delete,
    Expect,
    Failed,
    Mkdir,
    Rename,
    Symlink,
    Write,
)
from repomount.remotes.errors import Aborted, Conflict, NotFound, TooLarge, Unavailable
from repomount.remotes.native import NativeRemote
from support.nativefixtures import FAST, REPO, head_of
from support.server import ServerProc
from support.tap import Tap, once, path_ends
from support.util import sha


async def test_apply_rename_and_mkdir(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    await remote.apply([write("a.txt", b"A"), write("b.txt", b"B"), write("d/x", b"X")])
    result = await remote.apply(
        [
            Rename("a.txt", "c.txt", expect=sha(b"A")),
            Rename("c.txt", "b.txt"),  # over an existing file, as POSIX rename does
            Rename("d", "e/moved"),  # a directory with its subtree
            Mkdir("empty/dir"),
        ]
    )
    assert result.outcomes == [
        Applied(version=sha(b"A")),
        Applied(version=sha(b"A")),
        Applied(version=None),
        Applied(version=None),
    ]
    assert repo.tree(REPO) == {"b.txt": b"A", "e/moved/x": b"X"}
    paths = {e.path: e.kind for e in (await remote.list_tree("", recursive=True)).entries}
    assert paths["empty/dir"] == "dir" and "d" not in paths and "a.txt" not in paths


async def test_batch_with_a_conflict_applies_nothing(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    v = repo.put(REPO, "keep.txt", b"keep")
    other = repo.put(REPO, "other.txt", b"other")
    stale = repo.put(REPO, "hot.txt", b"old")
    current = repo.put(REPO, "hot.txt", b"new")
    head = head_of(repo)
    changes: list[Change] = [
        write("fresh.txt", b"fresh"),
        write("hot.txt", b"mine", expect=stale),
        Delete("keep.txt", expect=v),
        Mkdir("dir"),
        write("other.txt", b"x"),  # ABSENT, but it exists: a second conflict
    ]
    result = await remote.apply(changes)
    assert result.head == head
    outcomes = result.outcomes
    assert outcomes[1] == Conflicted(current=current)
    assert outcomes[4] == Conflicted(current=other)
    for i in (0, 2, 3):
        outcome = outcomes[i]
        assert isinstance(outcome, Failed) and isinstance(outcome.error, Aborted)
        assert outcome.retryable
    assert head_of(repo) == head
    assert repo.tree(REPO) == {"keep.txt": b"keep", "hot.txt": b"new", "other.txt": b"other"}


async def test_a_failing_operation_is_blamed_alone(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    repo.put(REPO, "d/f", b"f")
    head = head_of(repo)
    result = await remote.apply([write("x", b"x"), Delete("d"), write("y", b"y")])
    first, blamed, last = result.outcomes
    assert isinstance(blamed, Failed) and isinstance(blamed.error, Conflict)
    assert blamed.error.code == "directory_not_empty" and not blamed.retryable
    assert isinstance(first, Failed) and isinstance(first.error, Aborted)
    assert isinstance(last, Failed) and isinstance(last.error, Aborted)
    result = await remote.apply([Delete("nothing-here")])
    (missing,) = result.outcomes
    assert isinstance(missing, Failed) and isinstance(missing.error, NotFound)
    assert head_of(repo) == head


async def test_a_write_keeps_its_mtime_and_a_new_one_uploads_nothing(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    """Issue 16 #4: the mtime a write carries is listed back to the nanosecond (rsync's
    quick check compares it), by a listing and by stat; a write of the content the
    remote has (a new mtime or mode) sends a commit and no content."""
    data = os.urandom(300_000)  # over the inline limit: it would go as a blob
    first = replace(write("f.bin", data), mtime_ns=1_000_000_000_123_456_789)
    assert (await remote.apply([first])).outcomes == [Applied(version=sha(data))]
    listed = {e.path: e for e in (await remote.list_tree("")).entries}
    assert listed["f.bin"].time_ns() == 1_000_000_000_123_456_789
    stat = await remote.stat("f.bin")
    assert stat is not None and stat.time_ns() == 1_000_000_000_123_456_789

    mark = repo.mark()
    touch = replace(write("f.bin", data, expect=sha(data)), mtime_ns=-5, mode=0o600)
    assert (await remote.apply([touch])).outcomes == [Applied(version=sha(data))]
    sent = [(r.method, r.path) for r in repo.requests(mark) if r.method in ("POST", "PUT")]
    assert sent == [("POST", f"/v1/repos/{REPO}/commits")]  # (the stat's HEAD may log late)
    (entry,) = (await remote.list_tree("")).entries
    assert (entry.version, entry.time_ns(), entry.mode) == (sha(data), -5, 0o600)
    # The file moved on meanwhile: a conflict, as for any write.
    repo.put(REPO, "f.bin", b"theirs")
    late = replace(write("f.bin", data, expect=sha(data)), mtime_ns=7)
    assert (await remote.apply([late])).outcomes == [Conflicted(current=sha(b"theirs"))]


async def test_large_file_goes_through_the_blob_store(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    small = b"small"
    mark = repo.mark()
    result = await remote.apply([write("big.bin", data), write("small.txt", small)])
    assert result.outcomes == [Applied(version=sha(data)), Applied(version=sha(small))]
    blob_puts = [r for r in repo.requests(mark) if "/blobs/" in r.path]
    assert len(blob_puts) == 1 and blob_puts[0].path.endswith(sha(data))
    assert repo.get(REPO, "big.bin") == data
    buf = io.BytesIO()
    fetched = await remote.read("big.bin", buf)
    assert buf.getvalue() == data and fetched.version == sha(data)


async def test_inline_content_per_commit_is_bounded(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    tap = Tap()
    remote = NativeRemote(
        repo.url, REPO, token=repo.token, inline_max=100, inline_budget=250, transport=tap
    )
    files = {f"f{i}": bytes([i]) * 100 for i in range(3)} | {"big": b"b" * 101}
    try:
        mark = repo.mark()
        result = await remote.apply([write(p, d) for p, d in files.items()])
    finally:
        await remote.aclose()
    assert result.outcomes == [Applied(version=sha(d)) for d in files.values()]
    assert [(r.method, r.path) for r in repo.requests(mark)] == [
        ("POST", f"/v1/repos/{REPO}/blobs"),  # f2 and big, in one pack
        ("POST", f"/v1/repos/{REPO}/commits"),
    ]
    ops = json.loads(tap.to("/commits")[0].content)["operations"]
    assert ["content_b64" in op for op in ops] == [True, True, False, False]  # f0, f1 inline
    assert repo.tree(REPO) == files


async def test_blobs_of_a_commit_go_several_at_a_time_each_content_once(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    """At WAN latency one upload after another costs a round trip each: the packs of
    one commit are in flight together (PACKS_AT_ONCE), and a content that two writes
    share is sent once."""
    in_flight = peak = 0
    counts: list[dict[str, int]] = []

    async def hold(request: httpx.Request) -> None:
        nonlocal in_flight, peak
        if request.url.path.endswith("/blobs"):
            in_flight += 1
            peak = max(peak, in_flight)
            await trio.sleep(0.05)  # (a slow link: what overlapping is for)
            in_flight -= 1

    async def count(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/blobs"):
            await response.aread()
            counts.append(response.json())
        return response

    tap = Tap(before=hold, after=count)
    # Packs of at most three 10-byte members (header and padding: 1 KiB each).
    remote = NativeRemote(
        repo.url, REPO, token=repo.token, inline_max=0, pack_max=4 * 1024, transport=tap
    )
    files = {f"f{i}": bytes([i]) * 10 for i in range(12)} | {"same": bytes([0]) * 10}
    try:
        mark = repo.mark()
        result = await remote.apply([write(p, d) for p, d in files.items()])
    finally:
        await remote.aclose()
    assert result.outcomes == [Applied(version=sha(d)) for d in files.values()]
    packs = [r for r in repo.requests(mark) if r.path.endswith("/blobs")]
    assert len(packs) == 4 and len(repo.requests(mark)) == 5  # and one commit
    # "same" shares f0's content: twelve members in all, each stored once.
    assert sum(c["stored"] for c in counts) == 12 and sum(c["present"] for c in counts) == 0
    assert peak > 1
    assert repo.tree(REPO) == files


async def test_an_upload_ahead_whose_file_is_gone_raises_the_oserror_itself(
    repo: ServerProc, tmp_path: Path
) -> None:
    """A newer save of a file replaces its older content file while that content goes
    ahead (fsx closing and rewriting one file): the upload raises the OSError itself,
    which the uploads ahead take as "gone meanwhile". With two or more requests (each
    content alone here) it came inside an exception group, logged as an unexpected
    error with its traceback, and uploads ahead paused until the next commit."""
    contents = []
    for i in range(3):
        data = os.urandom(1000 + i)
        (tmp_path / f"blob{i}").write_bytes(data)
        contents.append(Content(sha(data), tmp_path / f"blob{i}", len(data)))
    (tmp_path / "blob1").unlink()
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, alone_min=0)
    try:
        with pytest.raises(FileNotFoundError):
            await remote.upload_ahead(contents)
    finally:
        await remote.aclose()


async def test_too_large_is_refused(
    server_factory: Callable[[list[str]], ServerProc], write: Callable[..., Write]
) -> None:
    server = server_factory(["--max-file-size", "1M"])
    server.create_repo(REPO)
    remote = NativeRemote(server.url, REPO, token=server.token, retry=FAST)
    try:
        # Only the write of the refused content fails; the other was not applied, and
        # goes again on its own (not held with it).
        result = await remote.apply(
            [write("big.bin", b"x" * (2 * 1024 * 1024)), write("small.txt", b"s")]
        )
        big, small = result.outcomes
        assert isinstance(big, Failed) and isinstance(big.error, TooLarge)
        assert big.error.status == 413
        assert isinstance(small, Failed) and isinstance(small.error, Aborted)
        assert server.tree(REPO) == {}
        again = await remote.apply([write("small.txt", b"s")])
        assert isinstance(again.outcomes[0], Applied)
        assert server.tree(REPO) == {"small.txt": b"s"}
    finally:
        await remote.aclose()


async def test_the_same_batch_twice_applies_once(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    changes: list[Change] = [write("a", b"1", key="k-a"), Mkdir("m", key="k-m")]
    first = await remote.apply(changes)
    again = await remote.apply(changes)
    assert again == replace(first, replayed=True) and not first.replayed  # (the server says)
    assert first.head == "1" and head_of(repo) == "1"
    # The same keys for different content is refused rather than silently replayed.
    with pytest.raises(Conflict) as info:
        await remote.apply([write("a", b"2", key="k-a"), Mkdir("m", key="k-m")])
    assert info.value.code == "idempotency_conflict"
    # Changes without keys carry no batch key: equal batches are separate commits.
    await remote.apply([write("b", b"1", expect=Expect.ANY)])
    await remote.apply([write("b", b"1", expect=Expect.ANY)])
    assert head_of(repo) == "3"


async def test_a_commit_whose_answer_was_lost_is_retried_and_applied_once(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    tap = Tap(drop=once(path_ends("/commits")))  # the server commits; the answer is lost
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, transport=tap)
    try:
        mark = repo.mark()
        result = await remote.apply([write("f", b"once", key="k1"), Delete("f", key="k2")])
    finally:
        await remote.aclose()
    assert len(tap.dropped) == 1
    assert result.outcomes == [Applied(version=sha(b"once")), Applied(version=None)]
    commits = [r for r in repo.requests(mark) if r.path.endswith("/commits")]
    assert len(commits) == 2
    assert head_of(repo) == "1" == result.head and result.replayed


async def test_a_commit_without_keys_is_not_resent(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    tap = Tap(drop=path_ends("/commits"))  # every answer to a commit is lost
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, transport=tap)
    try:
        with pytest.raises(Unavailable):
            await remote.apply([write("f", b"x")])
    finally:
        await remote.aclose()
    assert head_of(repo) == "1"  # applied once, and only once


async def test_empty_apply_sends_nothing(repo: ServerProc, remote: NativeRemote) -> None:
    mark = repo.mark()
    result = await remote.apply([], base="0")
    assert (result.head, result.outcomes) == ("0", [])
    assert list(repo.requests(mark)) == []


# --------------------------------------------------------------------------- symlinks


async def test_apply_symlink_replace_and_conflicts(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    v1, v2 = sha(b"one"), sha(b"two")
    assert (await remote.apply([Symlink("l", "one")])).outcomes == [Applied(version=v1)]
    # The default expect is ABSENT: an existing link is a conflict, with its version.
    assert (await remote.apply([Symlink("l", "two")])).outcomes == [Conflicted(current=v1)]
    result = await remote.apply([Symlink("l", "two", expect="0" * 64)])
    assert result.outcomes == [Conflicted(current=v1)]
    assert (await remote.apply([Symlink("l", "two", expect=v1)])).outcomes == [Applied(version=v2)]
    result = await remote.apply([Symlink("l", "three", expect=Expect.ANY)])
    assert result.outcomes == [Applied(version=sha(b"three"))]
    # A link over a file, and a file over a link, each expecting what is there.
    vf = repo.put(REPO, "f", b"content")
    assert (await remote.apply([Symlink("f", "x", expect=vf)])).outcomes == [
        Applied(version=sha(b"x"))
    ]
    result = await remote.apply([write("l", b"data", expect=sha(b"three"))])
    assert result.outcomes == [Applied(version=sha(b"data"))]
    kinds = {e.path: (e.kind, e.target) for e in (await remote.list_tree("")).entries}
    assert kinds == {"f": ("symlink", "x"), "l": ("file", None)}
    # Renamed and deleted like files.
    result = await remote.apply(
        [Rename("f", "g", expect=sha(b"x")), Delete("l", expect=sha(b"data"))]
    )
    assert result.outcomes == [Applied(version=sha(b"x")), Applied(version=None)]
    kinds = {e.path: (e.kind, e.target) for e in (await remote.list_tree("")).entries}
    assert kinds == {"g": ("symlink", "x")}

    # Refused operations are blamed alone; nothing of their batch is applied.
    await remote.apply([Mkdir("dir")])
    head = head_of(repo)
    for bad, code in [
        (Symlink("dir", "x", expect=Expect.ANY), "path_conflict"),
        (Symlink("new", ""), "invalid_request"),
        (Symlink("new", "a\0b"), "invalid_request"),
        (Symlink("new", "x" * 4097), "invalid_request"),
    ]:
        result = await remote.apply([write("other", b"o"), bad])
        aborted, blamed = result.outcomes
        assert isinstance(aborted, Failed) and isinstance(aborted.error, Aborted)
        assert isinstance(blamed, Failed) and not blamed.retryable
        assert blamed.error.code == code
        assert head_of(repo) == head
