"""NativeRemote against the real reference server (a `repomount serve` process):
identity and info, listing, reading, symlinks as listed and read, and the change feed
(applying changes: test_native_apply.py; bulk transfers: test_native_bulk.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from functools import partial

import httpx
import pytest
import trio

from repomount.remotes import native_pages
from repomount.remotes.base import Applied, Mkdir, Rename, Symlink, Write
from repomount.remotes.errors import (
    Conflict,
    Gone,
    NotFound,
    ProtocolError,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.native import NativeRemote
from repomount.remotes.registry import open_remote
from repomount.server.native_requests import encode_cursor
from support.nativefixtures import REPO, head_of
from support.server import ServerProc
from support.tap import Tap
from support.util import sha, wait_until


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


async def test_the_next_page_is_asked_for_before_this_one_is_decoded(
    repo: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server names the next cursor in X-Next-Cursor (not on the last page), and
    the client sends that page's request before it decodes the page in hand."""
    bulk_write(repo, {f"f{i:04d}": b"x" for i in range(25)})
    sent_second = threading.Event()

    async def note(request: httpx.Request) -> None:
        if "cursor=" in str(request.url):
            sent_second.set()

    tap = Tap(before=note)
    decoded: list[bool] = []

    def parse_noting_the_next_request(response: httpx.Response) -> native_pages.TreePage:
        if response.headers.get("X-Next-Cursor"):
            decoded.append(sent_second.is_set())
            sent_second.clear()
        return real_parse(response)

    real_parse = native_pages._parse
    monkeypatch.setattr(native_pages, "_parse", parse_noting_the_next_request)
    assert await listed_in_pages_of_10(repo, tap) == [f"f{i:04d}" for i in range(25)]
    assert decoded == [True, True]  # pages 1 and 2 had a next page, asked for early
    assert len(tap.to("/tree")) == 3
    with repo.client() as client:
        url = f"{repo.url}/v1/repos/{REPO}/tree"
        first = client.get(url, params={"limit": 10})
        last = client.get(url, params={"limit": 100})
    assert first.headers["X-Next-Cursor"] == first.json()["next_cursor"]
    assert "X-Next-Cursor" not in last.headers and last.json()["next_cursor"] is None


async def test_a_next_cursor_header_the_body_disagrees_with_is_not_followed(
    repo: ServerProc,
) -> None:
    """The body's next_cursor decides: a page asked for by a header that names
    another position is dropped, and the body's page is asked for."""
    bulk_write(repo, {f"f{i:04d}": b"x" for i in range(25)})

    async def point_back(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if response.headers.get("X-Next-Cursor"):
            response.headers["X-Next-Cursor"] = encode_cursor(1, "f0000")
        return response

    listed = await listed_in_pages_of_10(repo, Tap(after=point_back))
    assert listed == [f"f{i:04d}" for i in range(25)]


async def listed_in_pages_of_10(repo: ServerProc, tap: Tap) -> list[str]:
    remote = NativeRemote(repo.url, REPO, token=repo.token, page_size=10, transport=tap)
    try:
        return [e.path for e in (await remote.list_tree("")).entries]
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
