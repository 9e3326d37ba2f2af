"""TerminalUseRemote against the server's Terminal Use face (a real `repomount serve`).

Repositories are made and checked through the native API: the face and the native
API share the store, so what the adapter wrote must be readable there.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from repomount.remotes.base import (
    Applied,
    Conflicted,
    Delete,
    Entry,
    Expect,
    ExpectT,
    Failed,
    Mkdir,
    NotFound,
    PreconditionRequired,
    ProtocolError,
    Rename,
    Unauthorized,
    Unavailable,
    Unsupported,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.terminaluse import TerminalUseRemote, open_terminaluse
from support.server import ServerProc
from support.tap import Tap, once, path_ends
from support.util import sha

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
_names = itertools.count()


@pytest.fixture
def fs(live: ServerProc) -> str:
    name = f"repo{next(_names)}"
    live.create_repo(name)
    return name


def make_remote(
    live: ServerProc, fs: str, *, token: str | None = None, tap: Tap | None = None, **kw: object
) -> TerminalUseRemote:
    return TerminalUseRemote(
        fs,
        base_url=f"{live.url}/terminaluse",
        token=live.token if token is None else token,
        retry=FAST,
        transport=tap,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def remote(live: ServerProc, fs: str) -> AsyncIterator[TerminalUseRemote]:
    remote = make_remote(live, fs)
    yield remote
    await remote.aclose()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Write]:
    """Write(path, data) with its content in a spool file, as the vfs hands it over."""
    counter = itertools.count()

    def make(path: str, data: bytes, expect: ExpectT = Expect.ABSENT, key: str = "") -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect, key)

    return make


def head_of(live: ServerProc, fs: str) -> int:
    with live.client() as c:
        return int(c.get(f"/v1/repos/{fs}").json()["head"])


# --------------------------------------------------------------------------- info, listing


async def test_info_capabilities_and_identity(
    live: ServerProc, fs: str, remote: TerminalUseRemote
) -> None:
    caps = remote.capabilities
    assert caps.conditional_write and caps.recursive_listing and caps.binary_content
    assert not any([caps.atomic_batch, caps.delete, caps.rename, caps.empty_dirs])
    assert not any([caps.ranged_read, caps.change_feed])
    assert remote.identity == f"terminaluse:{live.url}/terminaluse/{fs}"
    assert live.token not in remote.identity + repr(remote)
    empty = await remote.info()
    live.put(fs, "a.txt", b"a")
    info = await remote.info()
    assert info.name == fs and info.head and info.head != empty.head
    assert info.head == info.head.lower() and not info.head.startswith("sha256:")


async def test_list_tree_recursive_children_and_pages(
    live: ServerProc, fs: str, remote: TerminalUseRemote
) -> None:
    files = {"README.md": b"r", "src/a.py": b"aa", "src/pkg/b.py": b"bbb", "docs/x/y/z.md": b"z"}
    for path, data in files.items():
        live.put(fs, path, data)
    whole = await remote.list_tree("", recursive=True)
    assert whole.head == (await remote.info()).head and whole.recursive
    assert [(e.path, e.kind) for e in whole.entries] == [
        ("README.md", "file"),
        ("docs", "dir"),
        ("docs/x", "dir"),
        ("docs/x/y", "dir"),
        ("docs/x/y/z.md", "file"),
        ("src", "dir"),
        ("src/a.py", "file"),
        ("src/pkg", "dir"),
        ("src/pkg/b.py", "file"),
    ]
    by_path = {e.path: e for e in whole.entries}
    for path, data in files.items():
        entry = by_path[path]
        assert (entry.size, entry.version) == (len(data), sha(data))
        assert entry.mtime is not None and entry.mtime > 0
    top = await remote.list_tree("")
    assert [e.path for e in top.entries] == ["README.md", "docs", "src"]
    src = await remote.list_tree("src")
    assert [(e.path, e.kind) for e in src.entries] == [("src/a.py", "file"), ("src/pkg", "dir")]
    below = await remote.list_tree("docs", recursive=True)
    assert [e.path for e in below.entries] == ["docs/x", "docs/x/y", "docs/x/y/z.md"]
    for missing in ("nowhere", "src/a.py"):  # absent, or a file
        with pytest.raises(NotFound):
            await remote.list_tree(missing)
    # Two entries a page: the same listing.
    paged = make_remote(live, fs, page_size=2)
    try:
        assert (await paged.list_tree("", recursive=True)).entries == whole.entries
    finally:
        await paged.aclose()


async def test_a_listing_is_redone_when_the_filesystem_moves_meanwhile(
    live: ServerProc, fs: str
) -> None:
    live.put(fs, "a.txt", b"a")
    moved = False

    async def hook(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        nonlocal moved
        if request.url.path.endswith("/files") and not moved:
            moved = True
            live.put(fs, "b.txt", b"b")  # lands between the page and the second check
        return response

    tap = Tap(after=hook)
    remote = make_remote(live, fs, tap=tap)
    try:
        listing = await remote.list_tree("", recursive=True)
    finally:
        await remote.aclose()
    assert [e.path for e in listing.entries] == ["a.txt", "b.txt"]
    assert listing.head == (await make_remote(live, fs).info()).head
    assert sum(r.url.path.endswith("/files") for r in tap.sent) == 2


async def test_a_version_with_the_manifest_prefix_reads(
    live: ServerProc, fs: str, remote: TerminalUseRemote
) -> None:
    """Manifests write versions as `sha256:<hex>`: expecting one that way reads the file
    (whole and ranged reads, stale versions, NotFound: tests/contract)."""
    data = bytes(range(256)) * 4000
    live.put(fs, "big.bin", data)
    out = io.BytesIO()
    fetched = await remote.read("big.bin", out, version=f"sha256:{sha(data)}")
    assert out.getvalue() == data and fetched.version == sha(data)


# --------------------------------------------------------------------------- writes


async def test_conditional_create_replace_and_overwrite(
    live: ServerProc, fs: str, write: Callable[..., Write]
) -> None:
    tap = Tap()
    remote = make_remote(live, fs, tap=tap)
    try:
        created = await remote.apply([write("src/new.py", b"v1", Expect.ABSENT, key="k1")])
        assert created.outcomes == [Applied(version=sha(b"v1"))]
        assert created.head == (await remote.info()).head
        replaced = await remote.apply([write("src/new.py", b"v2", sha(b"v1"), key="k2")])
        assert replaced.outcomes == [Applied(version=sha(b"v2"))]
        mine = await remote.apply([write("src/new.py", b"v3", Expect.ANY, key="k3")])
        assert mine.outcomes == [Applied(version=sha(b"v3"))]
        big = bytes(range(256)) * 12_000  # 3 MB, streamed from the spool
        assert (await remote.apply([write("big.bin", big)])).outcomes == [Applied(sha(big))]
    finally:
        await remote.aclose()
    assert live.get(fs, "src/new.py") == b"v3" and live.get(fs, "big.bin") == big
    first, second, third, _ = tap.to("/file-upload")
    q1, q2, q3 = (dict(r.url.params) for r in (first, second, third))
    assert q1["writeMode"] == "conditional" and q1["createOnly"] == "*" and "baseVersion" in q1
    assert q2["writeMode"] == "conditional" and q2["expectedVersion"] == sha(b"v1")
    assert q2["baseVersion"].removeprefix("sha256:") == created.head  # the latest base
    assert "writeMode" not in q3 and "baseVersion" not in q3  # ANY: overwrite mode
    assert q1["digest"].startswith("sha-256=") and first.headers["Idempotency-Key"] == "k1"


async def test_a_stale_base_is_refreshed_and_the_upload_sent_again(
    live: ServerProc, fs: str, write: Callable[..., Write]
) -> None:
    live.put(fs, "a.txt", b"a1")
    tap = Tap()
    remote = make_remote(live, fs, tap=tap)
    try:
        await remote.info()  # learns the archive version
        live.put(fs, "other.txt", b"o")  # another file moves the filesystem on
        mark = live.mark()
        result = await remote.apply([write("a.txt", b"a2", sha(b"a1"), key="w1")])
        assert result.outcomes == [Applied(version=sha(b"a2"))]
        uploads = [r for r in live.requests(mark) if r.path.endswith("/file-upload")]
        assert [r.status for r in uploads] == [409, 200]
        first, second = tap.to("/file-upload")
        assert first.url.params["baseVersion"] != second.url.params["baseVersion"]
        assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "w1"

        # When the file itself moved, the 409 is answered as a conflict without resending.
        live.put(fs, "a.txt", b"theirs")
        before = len(tap.to("/file-upload"))
        result = await remote.apply([write("a.txt", b"a3", sha(b"a2"), key="w2")])
        assert result.outcomes == [Conflicted(current=sha(b"theirs"))]
        assert len(tap.to("/file-upload")) == before + 1
    finally:
        await remote.aclose()
    assert live.tree(fs) == {"a.txt": b"theirs", "other.txt": b"o"}


async def test_a_lost_answer_is_retried_with_the_same_key_and_written_once(
    live: ServerProc, fs: str, write: Callable[..., Write]
) -> None:
    # The server commits the first upload; the client sees a gateway error instead.
    tap = Tap(fail=once(path_ends("/file-upload")))
    remote = make_remote(live, fs, tap=tap)
    try:
        result = await remote.apply([write("a.txt", b"once", Expect.ABSENT, key="flush-7")])
    finally:
        await remote.aclose()
    assert result.outcomes == [Applied(version=sha(b"once"))]
    first, second = tap.to("/file-upload")
    assert first.url == second.url and second.headers["Idempotency-Key"] == "flush-7"
    assert head_of(live, fs) == 1  # replayed, not written twice


async def test_a_replay_after_a_restart_is_recognised_as_our_own_write(
    live: ServerProc, fs: str, write: Callable[..., Write]
) -> None:
    """A new process knows a newer base than the lost first attempt used: the face
    refuses the key (409), the file holds our content, and the vfs gets Conflicted with
    the version `version_of` recognises."""
    change = write("a.txt", b"mine", Expect.ABSENT, key="persisted-key")
    first = make_remote(live, fs)
    try:
        await first.apply([change])
    finally:
        await first.aclose()
    again = make_remote(live, fs)
    try:
        result = await again.apply([change])
        assert result.outcomes == [Conflicted(current=sha(b"mine"))]
        assert again.version_of(change.sha256) == sha(b"mine")
    finally:
        await again.aclose()
    assert head_of(live, fs) == 1


async def test_a_missing_precondition_428_is_logged_as_a_bug(
    live: ServerProc, fs: str, write: Callable[..., Write], caplog: pytest.LogCaptureFixture
) -> None:
    async def drop_base(request: httpx.Request) -> httpx.Request:
        if not request.url.path.endswith("/file-upload"):
            return request
        url = request.url.copy_remove_param("baseVersion")
        return httpx.Request(request.method, url, headers=request.headers, stream=request.stream)

    remote = make_remote(live, fs, tap=Tap(before=drop_base))
    try:
        with caplog.at_level(logging.ERROR, logger="repomount.remotes.terminaluse"):
            result = await remote.apply([write("a.txt", b"a", Expect.ABSENT)])
    finally:
        await remote.aclose()
    (outcome,) = result.outcomes
    assert isinstance(outcome, Failed) and isinstance(outcome.error, PreconditionRequired)
    assert not outcome.retryable
    assert "a bug" in caplog.text
    assert head_of(live, fs) == 0


async def test_delete_rename_and_mkdir_are_refused_not_pretended(
    live: ServerProc, fs: str, remote: TerminalUseRemote, write: Callable[..., Write]
) -> None:
    live.put(fs, "a.txt", b"a")
    result = await remote.apply(
        [
            Delete("a.txt", sha(b"a")),
            write("b.txt", b"b"),
            Rename("a.txt", "c.txt", sha(b"a")),
            Mkdir("empty"),
        ]
    )
    deleted, written, renamed, made = result.outcomes
    assert written == Applied(version=sha(b"b"))
    for outcome in (deleted, renamed, made):
        assert isinstance(outcome, Failed) and isinstance(outcome.error, Unsupported)
        assert not outcome.retryable
    assert isinstance(deleted, Failed) and "no precondition" in deleted.error.message
    assert isinstance(made, Failed) and "no directories" in made.error.message
    assert live.tree(fs) == {"a.txt": b"a", "b.txt": b"b"}


async def test_a_spool_that_no_longer_matches_its_digest_is_refused(
    live: ServerProc, fs: str, remote: TerminalUseRemote, write: Callable[..., Write]
) -> None:
    change = write("a.txt", b"journaled")
    change.source.write_bytes(b"changed on disk")  # the digest still names the old bytes
    (outcome,) = (await remote.apply([change])).outcomes
    assert isinstance(outcome, Failed) and isinstance(outcome.error, ProtocolError)
    assert outcome.error.status == 400 and not outcome.retryable
    assert head_of(live, fs) == 0


# --------------------------------------------------------------------------- whole-request errors


async def test_unknown_filesystem_wrong_key_and_unreachable(
    live: ServerProc, fs: str, write: Callable[..., Write]
) -> None:
    missing = make_remote(live, "fs_missing")
    wrong = make_remote(live, fs, token="tu_secret_wrong_key")
    gone = TerminalUseRemote(fs, base_url="http://127.0.0.1:9", token="tu_secret", retry=FAST)
    try:
        with pytest.raises(NotFound) as not_found:
            await missing.info()
        assert "fs_missing" in not_found.value.message
        with pytest.raises(NotFound):
            await missing.apply([write("a.txt", b"a")])
        with pytest.raises(Unauthorized) as refused:
            await wrong.info()
        assert "TERMINALUSE_API_KEY" in refused.value.message
        with pytest.raises(Unauthorized) as refused_write:
            await wrong.apply([write("a.txt", b"a")])
        with pytest.raises(Unavailable) as unreachable:
            await gone.info()
        for error in (refused.value, refused_write.value, unreachable.value):
            assert "tu_secret" not in str(error) and "tu_secret" not in error.message
    finally:
        for r in (missing, wrong, gone):
            await r.aclose()


def test_open_terminaluse_parses_src_endpoint_and_key(
    live: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERMINALUSE_API_KEY", "tu_env_key")
    monkeypatch.delenv("TERMINALUSE_API_URL", raising=False)
    remote = open_terminaluse("terminaluse:fs_123")
    assert remote.identity == "terminaluse:https://api.terminaluse.com/fs_123"
    monkeypatch.setenv("TERMINALUSE_API_URL", f"{live.url}/terminaluse/")
    assert open_terminaluse(" terminaluse:repo3 ").identity == (
        f"terminaluse:{live.url}/terminaluse/repo3"
    )
    explicit = open_terminaluse("terminaluse:r", endpoint="http://h:1/x", token="t")
    assert explicit.identity == "terminaluse:http://h:1/x/r"

    bad = {
        "terminaluse:": "no filesystem id",
        "terminaluse:a/b": "filesystem id",
        "terminaluse://host/fs": "filesystem id",
        "terminaluse:fs id": "filesystem id",
        "relace:fs": "expected terminaluse:FILESYSTEM_ID",
        "fs_123": "expected terminaluse:FILESYSTEM_ID",
    }
    for src, why in bad.items():
        with pytest.raises(ValueError, match=why) as error:
            open_terminaluse(src)
        assert "\n" not in str(error.value)
    for endpoint in ("ftp://h", "http://user:tu_secret@h", "http://h?x=1", "http://h:99999"):
        with pytest.raises(ValueError) as error:
            open_terminaluse("terminaluse:fs", endpoint=endpoint)
        assert "tu_secret" not in str(error.value) and "\n" not in str(error.value)
    monkeypatch.delenv("TERMINALUSE_API_KEY")
    with pytest.raises(ValueError, match="TERMINALUSE_API_KEY"):
        open_terminaluse("terminaluse:fs_123")


async def test_the_key_is_sent_as_a_bearer_token(live: ServerProc, fs: str) -> None:
    tap = Tap()
    remote = make_remote(live, fs, tap=tap)
    try:
        assert isinstance(await remote.stat(""), Entry)
        await remote.info()
    finally:
        await remote.aclose()
    assert tap.sent[0].headers["Authorization"] == f"Bearer {live.token}"
