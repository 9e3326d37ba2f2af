"""NativeRemote against the real reference server (a `repomount serve` process)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    Change,
    Conflict,
    Conflicted,
    Delete,
    Expect,
    ExpectT,
    Failed,
    Gone,
    Mkdir,
    NotFound,
    ProtocolError,
    Rename,
    Symlink,
    TooLarge,
    Unauthorized,
    Unavailable,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.native import NativeRemote
from repomount.remotes.registry import open_remote
from support.server import ServerProc
from support.tap import Tap, once, path_ends
from support.util import sha, wait_until

REPO = "proj"
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)


@pytest.fixture
def repo(server: ServerProc) -> ServerProc:
    server.create_repo(REPO)
    return server


@pytest.fixture
async def remote(repo: ServerProc) -> AsyncIterator[NativeRemote]:
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST)
    yield remote
    await remote.aclose()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Write]:
    """Write(path, data) with its content in a spool file, as the vfs hands it over."""
    counter = iter(range(1_000_000))

    def make(path: str, data: bytes, expect: ExpectT = Expect.ABSENT, key: str = "") -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect, key)

    return make


def bulk_write(server: ServerProc, files: dict[str, bytes]) -> None:
    """Create many files in one commit through the raw API (not through the adapter)."""
    import base64

    ops = [
        {"op": "write", "path": p, "content_b64": base64.b64encode(d).decode()}
        for p, d in files.items()
    ]
    with server.client() as client:
        response = client.post(f"{server.url}/v1/repos/{REPO}/commits", json={"operations": ops})
        response.raise_for_status()


def head_of(server: ServerProc) -> str:
    with server.client() as client:
        return str(client.get(f"{server.url}/v1/repos/{REPO}").json()["head"])


# --------------------------------------------------------------------------- identity, info


async def test_identity_and_capabilities(repo: ServerProc) -> None:
    remote = open_remote(f"{repo.url}/{REPO}", token=repo.token)
    try:
        assert remote.identity == f"native:{repo.url}/{REPO}"
        caps = remote.capabilities
        assert all(
            [
                caps.conditional_write,
                caps.atomic_batch,
                caps.rename,
                caps.delete,
                caps.empty_dirs,
                caps.ranged_read,
                caps.change_feed,
                caps.recursive_listing,
                caps.directory_listing,
                caps.binary_content,
                caps.symlinks,
                caps.file_modes,
                caps.file_mtimes,
            ]
        )
        info = await remote.info()
        assert (info.name, info.head) == (REPO, "0")
        repo.put(REPO, "a.txt", b"a")
        assert (await remote.info()).head == "1"
    finally:
        await remote.aclose()


async def test_info_unknown_repo(server: ServerProc) -> None:
    remote = NativeRemote(server.url, "nope", token=server.token)
    try:
        with pytest.raises(NotFound) as info:
            await remote.info()
        assert str(info.value) == (
            f"no repo 'nope' on {server.url} (`repomount repo list {server.url}` lists them)"
        )
    finally:
        await remote.aclose()


async def test_wrong_or_missing_token_is_unauthorized_and_never_shown(repo: ServerProc) -> None:
    wrong = "wrong-token-0123456789"
    bad = NativeRemote(repo.url, REPO, token=wrong)
    anonymous = NativeRemote(repo.url, REPO)
    good = NativeRemote(repo.url, "nope", token=repo.token)
    try:
        with pytest.raises(Unauthorized, match="the token was refused") as rejected:
            await bad.info()
        with pytest.raises(Unauthorized) as listing:
            await bad.list_tree("")
        with pytest.raises(Unauthorized, match="set REPOMOUNT_TOKEN") as missing:
            await anonymous.info()
        with pytest.raises(NotFound) as not_found:
            await good.info()
        errors = [rejected.value, listing.value, missing.value, not_found.value]
        shown = [str(e) for e in errors] + [repr(e) for e in errors]
        shown += [repr(bad), repr(good), repr(good._http), bad.identity]
        for text in shown:
            assert wrong not in text and repo.token not in text, text
        assert rejected.value.status == 401 and not rejected.value.retryable
    finally:
        for remote in (bad, anonymous, good):
            await remote.aclose()


async def test_unreachable_server_is_unavailable_then_recovers(
    repo: ServerProc, remote: NativeRemote
) -> None:
    await remote.info()  # leaves a pooled keep-alive connection behind
    repo.stop()
    with pytest.raises(Unavailable, match=f"cannot reach {repo.url}") as info:
        await remote.info()
    assert info.value.retryable
    repo.start()
    # The pooled connection died with the old process: a GET is retried on a new one.
    assert (await remote.info()).name == REPO


# --------------------------------------------------------------------------- listing, stat


async def test_list_tree_direct_children_and_recursive(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    await remote.apply([write("a.txt", b"aa"), write("d/b.txt", b"bbb"), Mkdir("d/empty")])
    root = await remote.list_tree("")
    assert [(e.path, e.kind) for e in root.entries] == [("a.txt", "file"), ("d", "dir")]
    assert root.head == "1" and not root.recursive
    a = root.entries[0]
    assert (a.size, a.version, a.mode) == (2, sha(b"aa"), 0o644)
    assert (a.time_ns() or 0) > 1e18  # (mtime_ns: the float is left out when it is there)
    d = root.entries[1]
    assert (d.size, d.version, d.mode) == (0, None, 0o755)

    everything = await remote.list_tree("", recursive=True)
    assert [e.path for e in everything.entries] == ["a.txt", "d", "d/b.txt", "d/empty"]
    assert everything.recursive
    sub = await remote.list_tree("d")
    assert [e.path for e in sub.entries] == ["d/b.txt", "d/empty"]
    assert (await remote.list_tree("d/empty")).entries == []

    with pytest.raises(NotFound):
        await remote.list_tree("a.txt")
    with pytest.raises(NotFound):
        await remote.list_tree("missing")


async def test_list_tree_follows_pages(repo: ServerProc) -> None:
    files = {f"big/f{i:05d}": b"x" for i in range(2500)} | {"top.txt": b"t"}
    bulk_write(repo, files)
    remote = NativeRemote(repo.url, REPO, token=repo.token, page_size=1000)
    try:
        mark = repo.mark()
        listing = await remote.list_tree("big")
        tree_requests = [r for r in repo.requests(mark) if r.path.endswith("/tree")]
        assert len(tree_requests) == 3
        assert [e.path for e in listing.entries] == sorted(p for p in files if p != "top.txt")
        everything = await remote.list_tree("", recursive=True)
        assert len(everything.entries) == 2500 + 2  # files, "big", "top.txt"
        assert len({e.path for e in everything.entries}) == len(everything.entries)
    finally:
        await remote.aclose()


async def test_all_pages_are_seen_at_the_first_pages_head(repo: ServerProc) -> None:
    bulk_write(repo, {f"f{i}": b"x" for i in range(5)})
    pages = 0

    async def commit_between_pages(
        request: httpx.Request, response: httpx.Response
    ) -> httpx.Response:
        nonlocal pages
        if request.url.path.endswith("/tree"):
            pages += 1
            if pages == 1:  # another client commits while we list
                await trio.to_thread.run_sync(repo.put, REPO, "a-new-file", b"new")
        return response

    remote = NativeRemote(
        repo.url, REPO, token=repo.token, page_size=2, transport=Tap(after=commit_between_pages)
    )
    try:
        listing = await remote.list_tree("")
    finally:
        await remote.aclose()
    assert pages == 3
    assert listing.head == "1"
    assert [e.path for e in listing.entries] == [f"f{i}" for i in range(5)]
    assert head_of(repo) == "2"


async def test_stat(repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]) -> None:
    await remote.apply([write("d/f.txt", b"hello"), Mkdir("e")])
    f = await remote.stat("d/f.txt")
    assert f is not None
    assert (f.path, f.kind, f.size, f.version, f.mode) == (
        "d/f.txt",
        "file",
        5,
        sha(b"hello"),
        0o644,
    )
    listed = (await remote.list_tree("d")).entries[0]
    assert f.time_ns() is not None and listed.time_ns() is not None
    assert abs(f.time_ns() - listed.time_ns()) < 1e9  # (HTTP dates have whole seconds)
    d = await remote.stat("d")
    assert d is not None and (d.kind, d.version) == ("dir", None)
    e = await remote.stat("e")
    assert e is not None and e.kind == "dir"
    root = await remote.stat("")
    assert root is not None and root.kind == "dir"
    assert await remote.stat("missing") is None
    assert await remote.stat("d/f.txt/below") is None


async def test_odd_names_round_trip(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    names = ["sp ace.txt", "hash#q?.txt", "per%25cent", "ünï çødé.md", "d i r/a+b=c&d.txt"]
    await remote.apply([write(n, n.encode()) for n in names])
    for name in names:
        buf = io.BytesIO()
        await remote.read(name, buf)
        assert buf.getvalue() == name.encode()
        entry = await remote.stat(name)
        assert entry is not None and entry.path == name
    assert repo.tree(REPO) == {n: n.encode() for n in names}
    listed = {e.path for e in (await remote.list_tree("", recursive=True)).entries}
    assert set(names) <= listed


# --------------------------------------------------------------------------- reading


async def test_read_conflict_without_current_version_in_the_answer(repo: ServerProc) -> None:
    """The protocol promises `current_version` only on a PUT's 412: without it in a
    GET's 412, the adapter asks for the current version itself."""
    old = repo.put(REPO, "f", b"one")
    new = repo.put(REPO, "f", b"two")

    async def terse_412(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if response.status_code != 412:
            return response
        await response.aread()
        body = {"error": {"code": "precondition_failed", "message": "stale"}}
        return httpx.Response(412, headers={"X-Repo-Head": "2"}, json=body)

    remote = NativeRemote(repo.url, REPO, token=repo.token, transport=Tap(after=terse_412))
    try:
        with pytest.raises(Conflict) as info:
            await remote.read("f", io.BytesIO(), version=old)
    finally:
        await remote.aclose()
    assert info.value.current == new


async def test_read_verifies_content_against_version(repo: ServerProc) -> None:
    data = b"the real content" * 1000
    repo.put(REPO, "f", data)

    async def flip_a_byte(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method != "GET" or "/files/" not in request.url.path:
            return response
        body = bytearray(await response.aread())
        if body:
            body[len(body) // 2] ^= 0xFF
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))

    remote = NativeRemote(repo.url, REPO, token=repo.token, transport=Tap(after=flip_a_byte))
    try:
        with pytest.raises(ProtocolError, match="does not match its version"):
            await remote.read("f", io.BytesIO())
        part = io.BytesIO()  # a range cannot be checked against a whole-file hash
        await remote.read("f", part, offset=0, length=4)
        assert len(part.getvalue()) == 4
        # A symlink's target, fetched by stat, is checked the same way.
        with repo.client() as client:
            ops = [{"op": "symlink", "path": "l", "target": "somewhere"}]
            client.post(f"/v1/repos/{REPO}/commits", json={"operations": ops}).raise_for_status()
        with pytest.raises(ProtocolError, match="does not match its version"):
            await remote.stat("l")
    finally:
        await remote.aclose()


# --------------------------------------------------------------------------- symlinks


async def test_symlinks_are_listed_stat_and_read_with_their_target(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    result = await remote.apply(
        [write("t.txt", b"text"), Symlink("d/l", "../t.txt"), Symlink("abs", "/nowhere/ü")]
    )
    assert result.outcomes == [
        Applied(version=sha(b"text")),
        Applied(version=sha(b"../t.txt")),
        Applied(version=sha("/nowhere/ü".encode())),
    ]
    listed = {e.path: e for e in (await remote.list_tree("", recursive=True)).entries}
    link = listed["d/l"]
    assert (link.kind, link.target, link.size, link.version, link.mode) == (
        "symlink",
        "../t.txt",
        8,
        sha(b"../t.txt"),
        0o777,
    )
    assert listed["abs"].target == "/nowhere/ü" and listed["abs"].size == len("/nowhere/ü".encode())
    assert listed["t.txt"].kind == "file" and listed["t.txt"].target is None
    assert listed["d"].kind == "dir" and listed["d"].target is None
    assert (await remote.list_tree("d")).entries == [link]

    stat = await remote.stat("d/l")
    assert stat is not None
    assert (stat.kind, stat.target, stat.size, stat.version, stat.mode) == (
        "symlink",
        "../t.txt",
        8,
        sha(b"../t.txt"),
        0o777,
    )
    file = await remote.stat("t.txt")
    assert file is not None and (file.kind, file.target) == ("file", None)
    assert await remote.stat("d/l/below") is None  # a symlink is never followed

    buf = io.BytesIO()
    fetched = await remote.read("d/l", buf, version=sha(b"../t.txt"))
    assert buf.getvalue() == b"../t.txt" and fetched.version == sha(b"../t.txt")

    batch = await remote.changes("0")
    assert [(c.path, c.op, c.version) for c in batch.changes if c.path == "d/l"] == [
        ("d/l", "write", sha(b"../t.txt"))
    ]


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


# --------------------------------------------------------------------------- applying


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


# --------------------------------------------------------------------------- change feed


async def test_changes(repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]) -> None:
    start = await remote.changes(None)
    assert (start.head, start.changes) == ("0", [])
    await remote.apply([write("d/a", b"a")])
    await remote.apply([Rename("d/a", "b"), Mkdir("m")])
    batch = await remote.changes("0")
    assert batch.head == "2"
    assert [(c.path, c.op, c.version) for c in batch.changes] == [
        ("d", "mkdir", None),
        ("d/a", "write", sha(b"a")),
        ("d/a", "delete", None),
        ("b", "write", sha(b"a")),
        ("m", "mkdir", None),
    ]
    assert (await remote.changes("2")).changes == []


async def test_changes_long_poll_wakes_on_a_commit(repo: ServerProc, remote: NativeRemote) -> None:
    got = []

    async def poll() -> None:
        got.append(await remote.changes("0", wait=30))

    before = await trio.to_thread.run_sync(repo.connections)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            held = partial(repo.holds_a_request, before)
            await trio.to_thread.run_sync(wait_until, held, 10, "the server to hold the poll")
            assert not got  # still waiting
            await trio.to_thread.run_sync(repo.put, REPO, "late", b"l")
    (batch,) = got
    assert batch.head == "1" and [c.path for c in batch.changes] == ["late"]

    with trio.fail_after(10):
        start = trio.current_time()
        quiet = await remote.changes("1", wait=1)
        assert trio.current_time() - start >= 0.9
    assert (quiet.head, quiet.changes) == ("1", [])


async def test_changes_too_old_are_gone(
    server_factory: Callable[[list[str]], ServerProc],
) -> None:
    server = server_factory(["--history", "2"])
    server.create_repo(REPO)
    for i in range(5):
        server.put(REPO, "f", str(i).encode())
    remote = NativeRemote(server.url, REPO, token=server.token)
    try:
        with pytest.raises(Gone):
            await remote.changes("0")
        with pytest.raises(Gone):
            await remote.changes("99")  # ahead of the server: its store was replaced
        assert (await remote.changes("4")).head == "5"
    finally:
        await remote.aclose()
