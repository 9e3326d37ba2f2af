"""RelaceRemote against the Relace face of the real reference server (a subprocess)."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    Change,
    Conflicted,
    Delete,
    Expect,
    ExpectT,
    Failed,
    Mkdir,
    NotFound,
    Rename,
    Unauthorized,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.relace import DEFAULT_URL, RelaceRemote, open_relace
from support.server import AccessLine, ServerProc
from support.slow_upload import hold_lock
from support.tap import Tap
from support.util import sha, wait_until_async

REPO = "repo3"
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
TOKEN = "rlc-0123456789abcdef0123456789abcdef"  # distinctive, to look for in messages


def face(server: ServerProc) -> str:
    return f"{server.url}/relace/v1"


@pytest.fixture
def server(server_factory: Callable[..., ServerProc]) -> ServerProc:
    return server_factory(token=TOKEN)


@pytest.fixture
def repo(server: ServerProc) -> ServerProc:
    """`repo3`, made through the native API, reached through the face by that name."""
    server.create_repo(REPO)
    return server


@pytest.fixture
async def remote(repo: ServerProc) -> AsyncIterator[RelaceRemote]:
    remote = RelaceRemote(REPO, token=repo.token, endpoint=face(repo), retry=FAST)
    yield remote
    await remote.aclose()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Write]:
    """Write(path, data) with its content in a spool file, as the vfs hands it over."""
    counter = iter(range(1_000_000))

    def make(path: str, data: bytes, expect: ExpectT = Expect.ABSENT) -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect)

    return make


def seed(server: ServerProc, files: dict[str, bytes]) -> None:
    """Files in one native commit (not through the adapter)."""
    ops = [
        {"op": "write", "path": p, "content_b64": base64.b64encode(d).decode()}
        for p, d in files.items()
    ]
    with server.client() as client:
        client.post(f"/v1/repos/{REPO}/commits", json={"operations": ops}).raise_for_status()


def writes(lines: list[AccessLine]) -> list[tuple[str, str]]:
    """(method, path) of the requests that change something."""
    return [(line.method, line.path) for line in lines if line.method != "GET"]


def face_url(path: str) -> str:
    return f"/relace/v1/repo/{REPO}{path}"


# --------------------------------------------------------------------------- opening


async def test_open_relace_and_identity(repo: ServerProc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELACE_API_KEY", repo.token)
    monkeypatch.setenv("RELACE_API_URL", face(repo))
    remote = open_relace("relace:repo3")
    try:
        assert remote.identity == f"relace:{face(repo)}/repo3"
        caps = remote.capabilities
        assert not caps.conditional_write and not caps.atomic_batch and not caps.empty_dirs
        assert caps.rename and caps.delete and caps.recursive_listing and caps.binary_content
        assert remote.version_of("ab" * 32) == "ab" * 32
        info = await remote.info()
        assert info.name == "repo3" and info.head is None  # GET /repo/{id} has no head
    finally:
        await remote.aclose()
    monkeypatch.delenv("RELACE_API_URL")
    default = open_relace("relace:0b4a2c9e-1b2d-4c5e-8f90-123456789abc")
    assert default.identity == f"relace:{DEFAULT_URL}/0b4a2c9e-1b2d-4c5e-8f90-123456789abc"
    explicit = open_relace("relace:x", endpoint="http://h:1/v1/", token="k")
    assert explicit.identity == "relace:http://h:1/v1/x"
    await default.aclose()
    await explicit.aclose()


async def test_info_reads_the_name_from_metadata(server: ServerProc) -> None:
    with server.client() as client:
        created = client.post("/relace/v1/repo", json={"metadata": {"name": "my app"}})
        repo_id = created.json()["repo_id"]
    remote = open_relace(f"relace:{repo_id}", endpoint=face(server), token=server.token)
    try:
        info = await remote.info()
        assert (info.name, info.max_file_size) == ("my app", 50 << 20)  # (documented)
    finally:
        await remote.aclose()


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("relace:", "no repo id"),
        ("relace://abc", "no '//'"),
        ("relace:a/b", "a repo id is"),
        ("relace:a b", "a repo id is"),
        ("relace:../x", "a repo id is"),
        ("http://host/repo", "expected relace:REPO_ID"),
        ("abc", "expected relace:REPO_ID"),
    ],
)
def test_bad_src_is_a_one_line_value_error(src: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_relace(src, token="k")
    message = str(caught.value)
    assert why in message and "\n" not in message


def test_bad_endpoint_and_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELACE_API_KEY", raising=False)
    monkeypatch.delenv("RELACE_API_URL", raising=False)
    with pytest.raises(ValueError, match="set RELACE_API_KEY"):
        open_relace("relace:abc")
    for endpoint in ("ftp://h/v1", "http:///v1", "http://u:pw@h/v1", "http://h/v1?x=1"):
        with pytest.raises(ValueError, match="bad Relace endpoint") as caught:
            open_relace("relace:abc", endpoint=endpoint, token="k")
        assert "pw" not in str(caught.value)


async def test_the_key_never_shows_in_errors(repo: ServerProc) -> None:
    wrong = "rlc-wrong-key-that-must-not-leak"
    bad = RelaceRemote(REPO, token=wrong, endpoint=face(repo), retry=FAST)
    good = RelaceRemote(REPO, token=repo.token, endpoint=face(repo), retry=FAST)
    try:
        with pytest.raises(Unauthorized) as unauthorized:
            await bad.info()
        assert "RELACE_API_KEY" in str(unauthorized.value)
        with pytest.raises(Unauthorized) as listing:
            await bad.list_tree("")
        with pytest.raises(NotFound) as missing:
            await good.read("nope.txt", io.BytesIO())
        for error in (unauthorized.value, listing.value, missing.value):
            for secret in (wrong, repo.token):
                assert secret not in str(error) and secret not in repr(error)
        assert repo.token not in repr(good) and wrong not in repr(bad)
    finally:
        await bad.aclose()
        await good.aclose()


async def test_an_unknown_repo(server: ServerProc, write: Callable[..., Write]) -> None:
    remote = RelaceRemote(
        "0b4a2c9e-1b2d-4c5e-8f90-123456789abc", token=server.token, endpoint=face(server)
    )
    try:
        with pytest.raises(NotFound, match="not found"):
            await remote.info()
        with pytest.raises(NotFound):
            await remote.list_tree("")
        with pytest.raises(NotFound):  # "already gone" must not hide a missing repo
            await remote.apply([Delete("a.txt")])
        with pytest.raises(NotFound):
            await remote.apply([write("a.txt", b"a")])
    finally:
        await remote.aclose()


# --------------------------------------------------------------------------- reading


async def test_listing_every_directory_costs_one_clone(
    repo: ServerProc, remote: RelaceRemote
) -> None:
    files = {
        f"d{i}/s{j}/f{k}.txt": f"{i}{j}{k}".encode()
        for i in range(3)
        for j in range(2)
        for k in range(2)
    }
    seed(repo, {**files, "top.md": b"# top\n"})
    mark = repo.mark()
    root = await remote.list_tree("")
    assert [(e.path, e.kind) for e in root.entries] == [
        ("d0", "dir"),
        ("d1", "dir"),
        ("d2", "dir"),
        ("top.md", "file"),
    ]
    for i in range(3):
        listing = await remote.list_tree(f"d{i}")
        assert [e.path for e in listing.entries] == [f"d{i}/s0", f"d{i}/s1"]
        for j in range(2):
            inner = await remote.list_tree(f"d{i}/s{j}")
            for entry in inner.entries:
                assert entry.kind == "file"
                assert entry.version == sha(files[entry.path]) and entry.size == 3
    top = await remote.stat("top.md")
    assert top is not None and top.version == sha(b"# top\n") and top.size == 6
    assert await remote.stat("d1") == (await remote.list_tree("")).entries[1]
    assert [(line.method, line.path) for line in repo.requests(mark)] == [
        ("GET", face_url("/clone"))
    ]
    everything = await remote.list_tree("", recursive=True)
    assert everything.recursive and everything.head is None
    assert {e.path for e in everything.entries if e.kind == "file"} == {*files, "top.md"}
    with pytest.raises(NotFound):
        await remote.list_tree("top.md")  # a file
    with pytest.raises(NotFound):
        await remote.list_tree("nope")


async def test_the_snapshot_expires_and_writes_refresh_it(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    seed(repo, {"a.txt": b"a"})
    assert [e.path for e in (await remote.list_tree("")).entries] == ["a.txt"]
    await remote.apply([write("b.txt", b"b")])  # our own write is seen at once
    assert [e.path for e in (await remote.list_tree("")).entries] == ["a.txt", "b.txt"]
    seed(repo, {"c.txt": b"c"})  # someone else's: seen once the snapshot expired
    remote.snapshot_ttl = 0.0
    assert [e.path for e in (await remote.list_tree("")).entries] == ["a.txt", "b.txt", "c.txt"]


async def test_binary_files_round_trip_but_clone_does_not_list_them(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    data = bytes(range(256)) * 4 + b"\xff\xfe"
    mark = repo.mark()
    result = await remote.apply([write("img/logo.png", data)])
    assert result.outcomes == [Applied(sha(data))]
    assert writes(repo.requests(mark)) == [("PUT", face_url("/file/img/logo.png"))]
    assert repo.get(REPO, "img/logo.png") == data
    dest = io.BytesIO()
    assert (await remote.read("img/logo.png", dest)).version == sha(data)
    assert dest.getvalue() == data
    # Relace's clone carries text files only: stat finds the file by asking for it.
    assert (await remote.list_tree("", recursive=True)).entries == []
    entry = await remote.stat("img/logo.png")
    assert entry is not None and entry.version == sha(data) and entry.size == len(data)
    assert await remote.stat("img/none.png") is None


# --------------------------------------------------------------------------- writing


async def test_one_batch_of_writes_deletes_renames_is_one_update(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    seed(repo, {"keep.txt": b"k", "edit.txt": b"v1", "gone.txt": b"g", "old/name.txt": b"n"})
    changes: list[Change] = [
        write("new/file.txt", b"fresh"),
        write("edit.txt", b"v2", expect=sha(b"v1")),
        Delete("gone.txt", expect=sha(b"g")),
        Rename("old/name.txt", "new/name.txt", expect=sha(b"n"), expect_to=Expect.ABSENT),
        Mkdir("empty"),  # Relace keeps no empty directory: nothing to send
    ]
    mark = repo.mark()
    result = await remote.apply(changes)
    assert result.outcomes == [
        Applied(sha(b"fresh")),
        Applied(sha(b"v2")),
        Applied(None),
        Applied(sha(b"n")),
        Applied(None),
    ]
    assert writes(repo.requests(mark)) == [("POST", face_url("/update"))]
    assert result.head is not None and len(result.head) == 40
    assert repo.tree(REPO) == {
        "keep.txt": b"k",
        "edit.txt": b"v2",
        "new/file.txt": b"fresh",
        "new/name.txt": b"n",
    }


async def test_order_sensitive_batches_are_split(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    seed(repo, {"a.txt": b"old a"})
    changes: list[Change] = [
        # In one update the write would land first and then be renamed: b = new a.
        Rename("a.txt", "b.txt", expect=sha(b"old a"), expect_to=Expect.ABSENT),
        write("a.txt", b"new a", expect=Expect.ABSENT),
        # In one update the delete would run first, on a file not there yet: 404.
        write("tmp.txt", b"t"),
        Delete("tmp.txt", expect=sha(b"t")),
    ]
    mark = repo.mark()
    result = await remote.apply(changes)
    assert all(isinstance(o, Applied) for o in result.outcomes)
    sent = [line for line in repo.requests(mark) if line.method != "GET"]
    assert [(line.method, line.path, line.status) for line in sent] == [
        ("POST", face_url("/update"), 200),  # the rename
        ("POST", face_url("/update"), 200),  # both writes
        ("DELETE", face_url("/file/tmp.txt"), 200),
    ]
    assert repo.tree(REPO) == {"a.txt": b"new a", "b.txt": b"old a"}


async def test_a_changed_file_is_a_conflict_and_is_not_overwritten(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    seed(repo, {"a.txt": b"base", "b.txt": b"b", "c.txt": b"c", "d.txt": b"d"})
    entry = await remote.stat("a.txt")
    assert entry is not None and entry.version == sha(b"base")
    seed(repo, {"a.txt": b"theirs", "c.txt": b"c2"})  # someone else, meanwhile
    mark = repo.mark()
    result = await remote.apply(
        [
            write("a.txt", b"mine", expect=sha(b"base")),
            write("b.txt", b"exists", expect=Expect.ABSENT),
            Delete("c.txt", expect=sha(b"c")),
            Rename("d.txt", "b.txt", expect=sha(b"d"), expect_to=Expect.ABSENT),
            write("e.txt", b"e", expect=Expect.ABSENT),  # unrelated: still goes
        ]
    )
    assert result.outcomes == [
        Conflicted(sha(b"theirs")),
        Conflicted(sha(b"b")),
        Conflicted(sha(b"c2")),
        Conflicted(sha(b"b")),
        Applied(sha(b"e")),
    ]
    assert writes(repo.requests(mark)) == [("PUT", face_url("/file/e.txt"))]
    tree = repo.tree(REPO)
    assert (tree["a.txt"], tree["c.txt"], tree["d.txt"], tree["e.txt"]) == (
        b"theirs",
        b"c2",
        b"d",
        b"e",
    )


async def test_a_change_in_the_race_window_fails_the_request_retryably(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    """The file is deleted by someone else after the adapter checked it and before its
    update arrives: the service refuses the whole update (404), nothing is applied, and
    the outcome asks to send again (when the check will see the conflict)."""
    seed(repo, {"a.txt": b"a", "b.txt": b"b"})

    async def meanwhile(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/update"):
            async with httpx.AsyncClient(base_url=repo.url) as other:
                headers = {"Authorization": f"Bearer {repo.token}"}
                url = f"/v1/repos/{REPO}/files/a.txt"
                (await other.delete(url, headers=headers)).raise_for_status()

    remote = RelaceRemote(
        REPO, token=repo.token, endpoint=face(repo), retry=FAST, transport=Tap(before=meanwhile)
    )
    try:
        result = await remote.apply(
            [Rename("a.txt", "c.txt", expect=sha(b"a")), write("x.txt", b"x")]
        )
        assert [type(o) for o in result.outcomes] == [Failed, Failed]
        failed = result.outcomes[0]
        assert isinstance(failed, Failed) and isinstance(failed.error, Aborted)
        assert failed.retryable
        assert repo.tree(REPO) == {"b.txt": b"b"}
        again = await remote.apply([Rename("a.txt", "c.txt", expect=sha(b"a"))])
        assert again.outcomes == [Conflicted(None)]
    finally:
        await remote.aclose()


async def test_directory_rename_moves_every_file(repo: ServerProc, remote: RelaceRemote) -> None:
    seed(repo, {"src/a.py": b"a", "src/pkg/b.py": b"b", "other.txt": b"o"})
    mark = repo.mark()
    result = await remote.apply(
        [Rename("src", "lib", expect_to=Expect.ABSENT), Rename("local-only", "x")]
    )
    assert result.outcomes == [Applied(None), Applied(None)]
    assert writes(repo.requests(mark)) == [("POST", face_url("/update"))]
    assert repo.tree(REPO) == {"lib/a.py": b"a", "lib/pkg/b.py": b"b", "other.txt": b"o"}


async def test_deleting_what_is_gone_sends_nothing(repo: ServerProc, remote: RelaceRemote) -> None:
    seed(repo, {"a.txt": b"a"})
    mark = repo.mark()
    result = await remote.apply([Delete("never.txt"), Delete("was.txt", expect=sha(b"w"))])
    # With a version expected, "gone" is reported as such (the vfs reads it as done).
    assert result.outcomes == [Applied(None), Conflicted(None)]
    assert writes(repo.requests(mark)) == []


async def test_a_single_delete_uses_delete_file(repo: ServerProc, remote: RelaceRemote) -> None:
    seed(repo, {"dir/a b#?.txt": b"a"})
    mark = repo.mark()
    result = await remote.apply([Delete("dir/a b#?.txt", expect=sha(b"a"))])
    assert result.outcomes == [Applied(None)]
    assert writes(repo.requests(mark)) == [("DELETE", face_url("/file/dir/a%20b%23%3F.txt"))]
    assert repo.tree(REPO) == {}


async def test_a_busy_repo_is_retried(
    repo: ServerProc, remote: RelaceRemote, write: Callable[..., Write]
) -> None:
    """423 (the repo is locked by another operation) is retried until it passes, even
    for writes: the service did nothing with the refused request."""
    seed(repo, {"a.txt": b"a"})
    url = face_url("/update")

    def probe() -> bool:
        with repo.client() as raw:
            answer = raw.post(url, json={"metadata": {"probe": "1"}})
        return answer.status_code == 423

    upload = await trio.to_thread.run_sync(hold_lock, repo, face_url("/file/slow.txt"), probe)
    patient = RelaceRemote(
        REPO,
        token=repo.token,
        endpoint=face(repo),
        retry=RetryPolicy(attempts=100, base_delay=0.02, max_delay=0.05),
    )
    mark = repo.mark()
    try:
        async with trio.open_nursery() as nursery:
            outcome: list[object] = []

            async def run() -> None:
                outcome.extend((await patient.apply([write("b.txt", b"b")])).outcomes)

            nursery.start_soon(run)
            await wait_until_async(
                lambda: any(line.status == 423 for line in repo.requests(mark)),
                10,
                "a PUT refused with 423 while the repo is locked",
            )
            assert await trio.to_thread.run_sync(upload.finish) == 201
        assert outcome == [Applied(sha(b"b"))]
    finally:
        await patient.aclose()
    put = [(line.method, line.status) for line in repo.requests(mark) if "b.txt" in line.path]
    assert put[-1] == ("PUT", 201) and ("PUT", 423) in put
    assert repo.tree(REPO) == {"a.txt": b"a", "b.txt": b"b", "slow.txt": b"first half, second half"}
