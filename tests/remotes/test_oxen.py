"""OxenRemote against the Oxen face of the real reference server: what the contract
suite cannot say (SRC strings and credentials, branches, empty repositories, downloads
whose hash does not match, renames, a branch that moves under a workspace)."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from repomount.remotes import oxen as oxen_module
from repomount.remotes.base import (
    Applied,
    Conflict,
    Conflicted,
    Delete,
    Expect,
    Failed,
    Mkdir,
    NotFound,
    ProtocolError,
    Rename,
    Unauthorized,
    Unavailable,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.oxen import OxenRemote
from repomount.remotes.oxen_source import open_oxen
from repomount.remotes.oxen_wire import xxh3_hex
from support.server import ServerProc
from support.tap import Tap
from support.util import sha

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
_names = itertools.count()


@pytest.fixture
def repo(live: ServerProc) -> str:
    name = f"o{next(_names)}"
    live.create_repo(name)
    return name


def opener(live: ServerProc) -> Callable[..., OxenRemote]:
    def make(repo: str, branch: str = "main", **kwargs: object) -> OxenRemote:
        return OxenRemote(
            "repomount",
            repo,
            branch=branch,
            base_url=live.url,
            token=live.token,
            retry=FAST,
            **kwargs,  # type: ignore[arg-type]
        )

    return make


@pytest.fixture
async def remote(live: ServerProc, repo: str) -> AsyncIterator[OxenRemote]:
    adapter = opener(live)(repo)
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Write]:
    counter = itertools.count()

    def make(path: str, data: bytes, expect: object = Expect.ABSENT) -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect)  # type: ignore[arg-type]

    return make


def api(live: ServerProc) -> httpx.Client:
    return httpx.Client(
        base_url=f"{live.url}/api/repos/repomount",
        headers={"Authorization": f"Bearer {live.token}"},
    )


# --------------------------------------------------------------------------- opening


def test_src_strings_endpoints_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OXEN_API_KEY", "OXEN_API_URL", "OXEN_HOST", "OXEN_AUTHOR_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / ".config" / "oxen"
    config.mkdir(parents=True)
    (config / "auth_config.toml").write_text(
        'default_host = "hub.oxen.ai"\n[[host_configs]]\nhost = "hub.oxen.ai"\n'
        'auth_token = "from-config"\n'
    )
    (config / "user_config.toml").write_text('name = "Ada"\nemail = "ada@example.com"\n')
    remote = open_oxen("oxen:ox/Cats.Dogs@feature/x")
    assert (remote.namespace, remote.name, remote.branch) == ("ox", "Cats.Dogs", "feature/x")
    assert remote.identity == "oxen:https://hub.oxen.ai/ox/Cats.Dogs@feature/x"
    assert remote._http.has_token and remote.author == ("Ada", "ada@example.com")
    assert "from-config" not in repr(remote) + remote.identity
    monkeypatch.setenv("OXEN_AUTHOR_NAME", "Bob")
    monkeypatch.setenv("OXEN_AUTHOR_EMAIL", "bob@example.com")
    assert open_oxen("oxen:ox/r").author == ("Bob", "bob@example.com")  # the environment wins
    monkeypatch.delenv("OXEN_AUTHOR_NAME")
    assert open_oxen("oxen:ox/r").branch == "main"
    other = open_oxen("oxen:ox/r", endpoint="http://127.0.0.1:9")  # no token for that host
    assert other.base_url == "http://127.0.0.1:9" and not other._http.has_token
    monkeypatch.setenv("OXEN_HOST", "127.0.0.1:8")
    monkeypatch.setenv("OXEN_API_KEY", "from-env")
    assert open_oxen("oxen:ox/r").base_url == "https://127.0.0.1:8"
    for bad in (
        "oxen:repo",
        "oxen://ox/repo",
        "oxen:ox/re po",
        "oxen:ox/repo/extra",
        "oxen:ox/repo@",
        "oxen:ox/repo@a b",
        "oxen:",
    ):
        with pytest.raises(ValueError, match="oxen:NAMESPACE/REPO") as caught:
            open_oxen(bad)
        assert "\n" not in str(caught.value)
    for url in ("ftp://x", "http://u:p@x", "http://x/path", "http://x:99999"):
        with pytest.raises(ValueError, match="Oxen server URL"):
            open_oxen("oxen:ox/r", endpoint=url)


async def test_unknown_repository_branch_and_key_are_one_line_errors(
    live: ServerProc, repo: str, remote: OxenRemote
) -> None:
    make = opener(live)
    live.put(repo, "f.txt", b"f")
    for adapter, words in (
        (make("nope"), "repository repomount/nope"),
        (make(repo, branch="nope"), "branch 'nope' not found"),
    ):
        with pytest.raises(NotFound, match=words) as caught:
            await adapter.info()
        assert "\n" not in caught.value.message
        await adapter.aclose()
    stranger = OxenRemote("repomount", repo, base_url=live.url, token="wrong-key", retry=FAST)
    with pytest.raises(Unauthorized) as refused:
        await stranger.info()
    assert "wrong-key" not in str(refused.value)
    await stranger.aclose()


# --------------------------------------------------------------------------- reading


async def test_an_empty_repository_gets_main_with_its_first_write(
    live: ServerProc, repo: str, remote: OxenRemote, write: Callable[..., Write]
) -> None:
    assert (await remote.info()).head is None
    assert (await remote.list_tree("", recursive=True)).entries == []
    result = await remote.apply([write("first.txt", b"1")])
    assert result.outcomes == [Applied(xxh3_hex(b"1"))]
    with api(live) as c:
        branches = c.get(f"/{repo}/branches").json()["branches"]
    assert branches == [{"name": "main", "commit_id": result.head}]
    assert (await remote.info()).head == result.head


async def test_bytes_that_match_no_hash_are_never_served(
    live: ServerProc, repo: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A download whose bytes hash to neither the version asked for nor the file's
    current hash (corrupted on the way) is an error (EIO at the mount) with a log line;
    nothing reaches the destination."""
    live.put(repo, "data.csv", b"a,b\n1,2\n")

    async def corrupt(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "/file/" not in request.url.path:
            return response
        body = bytearray(await response.aread())
        body[0] ^= 0xFF
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))

    adapter = opener(live)(repo, transport=Tap(after=corrupt))
    try:
        for version in (None, xxh3_hex(b"a,b\n1,2\n")):
            dest = io.BytesIO()
            with caplog.at_level(logging.ERROR), pytest.raises(ProtocolError):
                await adapter.read("data.csv", dest, version=version)
            assert dest.getvalue() == b""
    finally:
        await adapter.aclose()
    assert "not served" in caplog.text


async def test_a_listing_whose_pages_never_end_is_an_error(
    live: ServerProc, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server naming ever more pages, each of no entry, is followed only as far as
    the pages could hold MAX_LISTING_ENTRIES (patched to 5,000 here: 5 pages)."""

    def empty(page: str | None, data: dict[str, Any]) -> None:
        if page != "1":
            data["entries"] = []

    assert await pages_followed_to_the_bound(live, repo, monkeypatch, empty) == 5


async def test_a_listing_whose_pages_hold_more_than_asked_for_is_bounded_by_them(
    live: ServerProc, repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of more entries than the page_size asked for count as what they hold:
    3 x PAGE_SIZE entries a page reach a bound of 5,000 on the second page, not the
    fifth."""

    def crowded(page: str | None, data: dict[str, Any]) -> None:
        one = {"filename": "", "hash": "a96faf705af16834e6c632b61e964e1f", "is_dir": False}
        count = 3 * oxen_module.PAGE_SIZE
        data["entries"] = [{**one, "filename": f"p{page}-{i}", "size": 1} for i in range(count)]

    assert await pages_followed_to_the_bound(live, repo, monkeypatch, crowded) == 2


async def pages_followed_to_the_bound(
    live: ServerProc,
    repo: str,
    monkeypatch: pytest.MonkeyPatch,
    rewrite: Callable[[str | None, dict[str, Any]], None],
) -> int:
    """How many /dir/ pages a listing asks for when every page says there are 10**9
    and `rewrite(page number, answer)` changes what each holds; the listing must end
    in the bound's ProtocolError (MAX_LISTING_ENTRIES patched to 5,000)."""
    live.put(repo, "a.txt", b"a")
    monkeypatch.setattr(oxen_module, "MAX_LISTING_ENTRIES", 5000)

    async def endless(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "/dir/" not in request.url.path:
            return response
        data = json.loads(await response.aread())
        data["total_pages"] = 10**9
        rewrite(request.url.params.get("page"), data)
        return httpx.Response(200, headers={"content-type": "application/json"}, json=data)

    tap = Tap(after=endless)
    adapter = opener(live)(repo, transport=tap)
    try:
        with pytest.raises(ProtocolError, match="over 5000 entries"):
            await adapter.list_tree("", recursive=True)
    finally:
        await adapter.aclose()
    return len([r for r in tap.sent if "/dir/" in r.url.path])


# --------------------------------------------------------------------------- writing


async def test_renames_of_files_and_directories_are_one_commit(
    live: ServerProc, repo: str, remote: OxenRemote, write: Callable[..., Write]
) -> None:
    live.put(repo, "d/a.txt", b"a")
    live.put(repo, "d/sub/b.bin", bytes(range(256)))
    live.put(repo, "solo.txt", b"solo")
    with live.client() as c:
        head = int(c.get(f"/v1/repos/{repo}").json()["head"])
    result = await remote.apply(
        [
            Rename("d", "moved", expect=Expect.ANY, expect_to=Expect.ABSENT),
            Rename("solo.txt", "moved/solo.txt", expect=xxh3_hex(b"solo")),
        ]
    )
    assert result.outcomes == [Applied(None), Applied(xxh3_hex(b"solo"))]
    assert live.tree(repo) == {
        "moved/a.txt": b"a",
        "moved/sub/b.bin": bytes(range(256)),
        "moved/solo.txt": b"solo",
    }
    with live.client() as c:
        assert int(c.get(f"/v1/repos/{repo}").json()["head"]) == head + 1


async def test_a_directory_emptied_by_the_batch_may_be_renamed_onto(
    live: ServerProc, repo: str, remote: OxenRemote, write: Callable[..., Write]
) -> None:
    """`rm a/f1; rmdir a; mkdir d; echo 3 > d/f3; mv d a` in one batch: once its last
    file is deleted, `a` is no directory (Oxen has none without files), so the rename
    onto it is no rename onto a directory. (It was refused, and held the batch.)"""
    live.put(repo, "a/f1", b"1")
    result = await remote.apply(
        [
            Delete("a/f1", expect=xxh3_hex(b"1")),
            Mkdir("d"),
            write("d/f3", b"3"),
            Rename("d", "a", expect=Expect.ANY, expect_to=Expect.ABSENT),
        ]
    )
    assert result.outcomes == [
        Applied(None),
        Applied(None),
        Applied(xxh3_hex(b"3")),
        Applied(None),
    ]
    assert live.tree(repo) == {"a/f3": b"3"}


async def test_an_rmdir_of_a_directory_someone_added_to_removes_nothing_of_theirs(
    live: ServerProc, repo: str, remote: OxenRemote
) -> None:
    """The mount saw `a` hold only f1: `rm a/f1; rmdir a`. Meanwhile someone added
    a/theirs.txt. Oxen removes a directory with all it holds: theirs went too. Refused
    as repomount's server refuses it, and the batch removes nothing."""
    live.put(repo, "a/f1", b"1")
    live.put(repo, "a/theirs.txt", b"theirs")
    result = await remote.apply([Delete("a/f1", expect=xxh3_hex(b"1")), Delete("a")])
    mine, rmdir = result.outcomes
    assert isinstance(mine, Failed) and isinstance(rmdir, Failed)
    assert isinstance(rmdir.error, Conflict) and rmdir.error.code == "directory_not_empty"
    assert live.tree(repo) == {"a/f1": b"1", "a/theirs.txt": b"theirs"}


async def test_a_branch_is_its_own_tree_and_its_moves_show(
    live: ServerProc, repo: str, remote: OxenRemote, write: Callable[..., Write]
) -> None:
    """A mount of `@feature` writes there, not on main; a commit someone else makes on
    the branch shows in the next listing's head."""
    live.put(repo, "base.txt", b"base")
    with api(live) as c:
        made = c.post(f"/{repo}/branches", json={"new_name": "feature", "from_name": "main"})
        assert made.status_code == 200
    feature = opener(live)(repo, branch="feature")
    try:
        result = await feature.apply([write("only-here.txt", b"x")])
        assert isinstance(result.outcomes[0], Applied)
        assert live.tree(repo) == {"base.txt": b"base"}
        assert [e.path for e in (await feature.list_tree("")).entries] == [
            "base.txt",
            "only-here.txt",
        ]
        before = (await feature.list_tree("")).head
        assert before == result.head
        other = opener(live)(repo, branch="feature")
        await other.apply([write("theirs.txt", b"t")])
        await other.aclose()
        after = await feature.list_tree("")
        assert after.head != before and "theirs.txt" in {e.path for e in after.entries}
    finally:
        await feature.aclose()


async def test_a_commit_behind_its_branch_is_decided_again(
    live: ServerProc, repo: str, write: Callable[..., Write]
) -> None:
    """Someone else commits the same file between our workspace's creation and its
    commit: the server refuses (409), the batch is decided again on the new head and
    reported as a conflict with their version; their content stays."""
    live.put(repo, "hot.txt", b"base")
    raced: list[str] = []

    async def someone_else(request: httpx.Request) -> None:
        if "/merge/" in request.url.path and not raced:
            raced.append(request.url.path)
            await trio.to_thread.run_sync(live.put, repo, "hot.txt", b"theirs")

    adapter = opener(live)(repo, transport=Tap(before=someone_else))
    try:
        result = await adapter.apply([write("hot.txt", b"mine", expect=xxh3_hex(b"base"))])
    finally:
        await adapter.aclose()
    assert raced
    assert result.outcomes == [Conflicted(xxh3_hex(b"theirs"))]
    assert live.tree(repo) == {"hot.txt": b"theirs"}


async def test_a_workspace_lost_before_its_commit_is_tried_again(
    live: ServerProc, repo: str, write: Callable[..., Write]
) -> None:
    """The server forgets the workspace (a restart) before the commit: 404 there is no
    missing repository but a retryable failure; the next try lands the change once."""

    async def forget(request: httpx.Request) -> httpx.Request | None:
        if "/merge/" in request.url.path and not forgotten:
            forgotten.append(request)
            with api(live) as c:
                c.delete(f"/{repo}/workspaces")
        return None

    forgotten: list[httpx.Request] = []
    adapter = opener(live)(repo, transport=Tap(before=forget))
    change = write("f.txt", b"once")
    try:
        with pytest.raises(Unavailable) as lost:
            await adapter.apply([change])
        assert lost.value.retryable
        assert (await adapter.apply([change])).outcomes == [Applied(xxh3_hex(b"once"))]
    finally:
        await adapter.aclose()
    assert live.tree(repo) == {"f.txt": b"once"}


async def test_a_check_that_finds_the_server_away_raises_unavailable_itself(
    live: ServerProc, repo: str, write: Callable[..., Write]
) -> None:
    """The paths a batch depends on are checked side by side: a check that fails is
    raised as itself (the write-back waits out an Unavailable), not inside a nursery's
    exception group, which nothing catches and which took the mount down."""
    live.put(repo, "a.txt", b"a")
    live.put(repo, "b.txt", b"b")
    adapter = opener(live)(repo, transport=Tap(fail=lambda r: "/meta/" in r.url.path))
    changes = [
        write("a.txt", b"a2", expect=xxh3_hex(b"a")),
        write("b.txt", b"b2", expect=xxh3_hex(b"b")),
    ]
    try:
        with pytest.raises(Unavailable):
            await adapter.apply(changes)
    finally:
        await adapter.aclose()
    assert live.tree(repo) == {"a.txt": b"a", "b.txt": b"b"}
