"""NativeRemote's bulk transfers against the real server: a commit's blobs in packs
(POST /blobs) and many files in one read (read_many over POST /read). Request counts
come from the server's access log."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes import native
from repomount.remotes.base import (
    Applied,
    Change,
    Expect,
    Fetched,
    NotFound,
    ProtocolError,
    Symlink,
    Unavailable,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.native import NativeRemote
from support.conncount import forwarder
from support.server import ServerFactory, ServerProc
from support.tap import Tap, once, path_ends
from support.util import sha, wait_until_async

REPO = "bulk"
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
MiB = 1 << 20


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

    def make(path: str, data: bytes, *, sha256: str | None = None) -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha256 or sha(data), Expect.ABSENT, f"k-{path}")

    return make


def writes_of(server: ServerProc, mark: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests(mark) if r.method != "GET"]


# --------------------------------------------------------------------------- packs


async def test_hundreds_of_files_and_two_big_ones_cost_four_requests(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    """300 files of 64 KiB (19 MiB in all) go in one pack, each 20 MiB file in its own
    PUT (a pack adds nothing for it), then one commit."""
    files = {f"d{i % 7}/f{i}.bin": os.urandom(64 * 1024) for i in range(300)}
    files |= {f"big{i}.bin": os.urandom(20 * MiB) for i in range(2)}
    mark = repo.mark()
    result = await remote.apply([write(p, d) for p, d in files.items()])
    assert result.outcomes == [Applied(version=sha(d)) for d in files.values()]
    sent = writes_of(repo, mark)
    assert len(sent) <= 4, sent
    blobs = f"/v1/repos/{REPO}/blobs"
    assert sorted(sent) == sorted(
        [("POST", blobs), ("POST", f"/v1/repos/{REPO}/commits")]
        + [("PUT", f"{blobs}/{sha(files[f'big{i}.bin'])}") for i in range(2)]
    )
    assert repo.tree(REPO) == files


async def test_small_files_ride_inline_only_when_no_pack_goes(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    """A commit with nothing to pack sends its small files inline (one request); with a
    pack going anyway only tiny ones stay base64, the rest join the pack."""
    mark = repo.mark()
    await remote.apply([write("a", b"a" * 100_000), write("b", b"b" * 10)])
    assert writes_of(repo, mark) == [("POST", f"/v1/repos/{REPO}/commits")]
    mark = repo.mark()
    # 5 MiB of 100 kB files: past the inline budget, so a pack goes, and takes them all.
    files = {f"m{i}": bytes([i]) * 100_000 for i in range(52)} | {"tiny": b"t"}
    result = await remote.apply([write(p, d) for p, d in files.items()])
    assert all(isinstance(o, Applied) for o in result.outcomes)
    assert writes_of(repo, mark) == [
        ("POST", f"/v1/repos/{REPO}/blobs"),
        ("POST", f"/v1/repos/{REPO}/commits"),
    ]
    assert repo.tree(REPO) == {"a": b"a" * 100_000, "b": b"b" * 10, **files}


async def test_a_pack_whose_answer_was_lost_is_sent_again_whole(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    tap = Tap(drop=once(path_ends("/blobs", "POST")))
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, transport=tap)
    files = {f"f{i}": os.urandom(300_000) for i in range(20)}
    try:
        mark = repo.mark()
        result = await remote.apply([write(p, d) for p, d in files.items()])
    finally:
        await remote.aclose()
    assert result.outcomes == [Applied(version=sha(d)) for d in files.values()]
    assert len(tap.dropped) == 1
    assert [m for m, p in writes_of(repo, mark) if p.endswith("/blobs")] == ["POST", "POST"]
    assert repo.tree(REPO) == files


async def test_content_that_does_not_match_its_hash_is_refused(
    repo: ServerProc, remote: NativeRemote, write: Callable[..., Write]
) -> None:
    changes: list[Change] = [write(f"f{i}", os.urandom(300_000)) for i in range(3)]
    liar = b"not what the hash says" * 20_000  # too big to go inline: it goes in the pack
    changes.append(write("liar", liar, sha256=sha(b"something else")))
    with pytest.raises(ProtocolError) as info:
        await remote.apply(changes)
    assert info.value.code == "hash_mismatch" and info.value.status == 400
    assert repo.tree(REPO) == {}  # no commit went


async def test_a_pack_into_an_unknown_repo_is_not_found(
    server: ServerProc, write: Callable[..., Write]
) -> None:
    remote = NativeRemote(server.url, "nope", token=server.token, retry=FAST)
    try:
        with pytest.raises(NotFound):
            await remote.apply([write(f"f{i}", os.urandom(300_000)) for i in range(3)])
        assert remote.packs  # that 404 was the repo's, not a missing route
    finally:
        await remote.aclose()


class OldServer(httpx.AsyncBaseTransport):
    """The real server, but as if it predated POST /blobs: that route is 404."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/blobs"):
            self.refused += 1
            body = {"error": {"code": "not_found", "message": "POST /blobs: Not Found"}}
            return httpx.Response(404, json=body)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_older_server_gets_its_blobs_one_by_one(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    old = OldServer()
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, transport=old)
    first = {f"a{i}": os.urandom(300_000) for i in range(4)}
    second = {f"b{i}": os.urandom(300_000) for i in range(3)}
    try:
        mark = repo.mark()
        await remote.apply([write(p, d) for p, d in first.items()])
        assert not remote.packs and old.refused == 1
        assert [m for m, _ in writes_of(repo, mark)] == ["PUT"] * 4 + ["POST"]
        mark = repo.mark()
        await remote.apply([write(p, d) for p, d in second.items()])
        assert old.refused == 1  # not asked again
        assert [m for m, _ in writes_of(repo, mark)] == ["PUT"] * 3 + ["POST"]
    finally:
        await remote.aclose()
    assert repo.tree(REPO) == first | second


async def test_a_pack_over_the_servers_limit_goes_one_by_one(
    server_factory: ServerFactory, write: Callable[..., Write]
) -> None:
    server = server_factory(["--max-pack-size", "1M"])
    server.create_repo(REPO)
    remote = NativeRemote(server.url, REPO, token=server.token, retry=FAST)
    files = {f"f{i}": os.urandom(300_000) for i in range(5)}
    try:
        mark = server.mark()
        result = await remote.apply([write(p, d) for p, d in files.items()])
    finally:
        await remote.aclose()
    assert result.outcomes == [Applied(version=sha(d)) for d in files.values()]
    lines = [(r.method, r.path, r.status) for r in server.requests(mark)]
    assert lines[0] == ("POST", f"/v1/repos/{REPO}/blobs", 413)
    assert sorted(m for m, _, _ in lines[1:]) == ["POST"] + ["PUT"] * 5
    assert remote.packs  # the server has packs, only smaller ones
    assert server.tree(REPO) == files


# --------------------------------------------------------------------------- read_many


class Collected:
    """new_file / got for read_many: files in a directory, deliveries in a dict."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "fetched"
        self.root.mkdir(exist_ok=True)
        self.count = 0
        self.got: dict[str, tuple[Fetched, bytes]] = {}

    def new_file(self) -> Path:
        self.count += 1
        return self.root / f"fetch-{self.count}"

    def deliver(self, path: str, fetched: Fetched, file: Path) -> None:
        assert path not in self.got
        self.got[path] = (fetched, file.read_bytes())
        file.unlink()

    def leftovers(self) -> list[Path]:
        return list(self.root.iterdir())


def bulk_write(server: ServerProc, files: dict[str, bytes]) -> None:
    ops = [
        {"op": "write", "path": p, "content_b64": base64.b64encode(d).decode()}
        for p, d in files.items()
    ]
    with server.client() as client:
        client.post(f"/v1/repos/{REPO}/commits", json={"operations": ops}).raise_for_status()


async def test_read_many_reads_files_in_few_requests(
    repo: ServerProc, remote: NativeRemote, tmp_path: Path
) -> None:
    files = {f"d{i % 9}/f{i}.txt": f"content {i}\n".encode() * (i % 50) for i in range(1200)}
    files["big.bin"] = os.urandom(3 * MiB)
    bulk_write(repo, files)
    await remote.apply([Symlink("link", "big.bin")])
    wanted = [*files, "missing.txt", "link", "d0", "d1/f1.txt"]  # a repeat, a dir, a link
    sink = Collected(tmp_path)
    mark = repo.mark()
    await remote.read_many(wanted, sink.new_file, sink.deliver, transfers=2)
    reads = repo.requests(mark)
    assert [(r.method, r.path) for r in reads] == [("POST", f"/v1/repos/{REPO}/read")] * 3
    assert {p: data for p, (_, data) in sink.got.items()} == files
    for path, (fetched, data) in sink.got.items():
        assert fetched == Fetched(sha(data), len(data), len(data)), path
    assert sink.leftovers() == []


async def test_bulk_reads_one_after_another_share_one_connection(
    repo: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer is read to its end (past the tar's end), so its connection carries
    the next read: over a WAN a new one costs a handshake and TCP's slow start."""
    files = {f"f{i}.txt": f"content {i}\n".encode() * 300 for i in range(60)}
    bulk_write(repo, files)
    monkeypatch.setattr(native, "READ_PATHS", 10)  # six reads
    sink = Collected(tmp_path)
    async with forwarder(repo.url) as fwd:
        remote = NativeRemote(fwd.url, REPO, token=repo.token, retry=FAST)
        try:
            await remote.read_many(list(files), sink.new_file, sink.deliver, transfers=1)
        finally:
            await remote.aclose()
    assert fwd.connections == 1
    assert {p: data for p, (_, data) in sink.got.items()} == files


async def test_a_pack_and_its_commit_share_one_connection(
    repo: ServerProc, write: Callable[..., Write]
) -> None:
    """The server reads a pack's body to its end and keeps the connection, so the
    commit after it (a large one: 600 operations) does not open another."""
    files = {f"d/f{i}.bin": os.urandom(10_000) for i in range(600)}  # past the inline budget
    mark = repo.mark()
    async with forwarder(repo.url) as fwd:
        remote = NativeRemote(fwd.url, REPO, token=repo.token, retry=FAST)
        try:
            await remote.apply([write(p, d) for p, d in files.items()])
        finally:
            await remote.aclose()
    assert fwd.connections == 1
    assert writes_of(repo, mark) == [
        ("POST", f"/v1/repos/{REPO}/blobs"),
        ("POST", f"/v1/repos/{REPO}/commits"),
    ]
    assert repo.tree(REPO) == files


async def test_read_many_of_nothing_sends_nothing(
    repo: ServerProc, remote: NativeRemote, tmp_path: Path
) -> None:
    sink = Collected(tmp_path)
    mark = repo.mark()
    await remote.read_many([], sink.new_file, sink.deliver)
    await remote.read_many(["missing"], sink.new_file, sink.deliver)
    # (the server logs a request once it has answered it: the line may come a moment
    # after the answer)
    await wait_until_async(lambda: repo.requests(mark), 10, "the request's log line")
    await trio.sleep(0.2)
    assert sink.got == {} and len(repo.requests(mark)) == 1


def tar_answer(members: list[tuple[str, bytes, str | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, version in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if version is not None:
                info.pax_headers = {"repomount.version": version}
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def fake_read(members: list[tuple[str, bytes, str | None]], tmp_path: Path) -> Collected:
    """read_many of a, b, c against a server that answers `members`."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=tar_answer(members))

    remote = NativeRemote(
        "http://fake", REPO, token="t", retry=FAST, transport=httpx.MockTransport(answer)
    )
    sink = Collected(tmp_path)
    try:
        await remote.read_many(["a", "b", "c"], sink.new_file, sink.deliver)
    finally:
        await remote.aclose()
    return sink


async def test_read_many_checks_each_file_against_its_version(tmp_path: Path) -> None:
    good = ("a", b"fine", sha(b"fine"))
    bad = ("b", b"tampered", sha(b"original"))
    with pytest.raises(ProtocolError, match="does not match its version"):
        await fake_read([good, bad, ("c", b"never", sha(b"never"))], tmp_path)
    sink = Collected(tmp_path)
    assert sink.leftovers() == []  # nothing left of b; a was delivered (and removed)


async def test_read_many_refuses_what_it_did_not_ask_for_or_cannot_parse(
    tmp_path: Path,
) -> None:
    with pytest.raises(ProtocolError, match="not asked for"):
        await fake_read([("zzz", b"x", sha(b"x"))], tmp_path)

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=tar_answer([("a", b"fine", sha(b"fine"))])[:700])

    remote = NativeRemote(
        "http://fake", REPO, token="t", retry=FAST, transport=httpx.MockTransport(broken)
    )
    sink = Collected(tmp_path)
    try:
        with pytest.raises(ProtocolError, match="stream ends"):
            await remote.read_many(["a"], sink.new_file, sink.deliver)
    finally:
        await remote.aclose()
    assert sink.got == {} and sink.leftovers() == []


async def test_read_many_stops_at_the_first_failure(repo: ServerProc, tmp_path: Path) -> None:
    bulk_write(repo, {f"f{i}": b"x" * i for i in range(1, 1100)})
    tap = Tap(fail=path_ends("/read"))  # every read answered 502
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST, transport=tap)
    sink = Collected(tmp_path)
    try:
        with trio.fail_after(30):
            with pytest.raises(Unavailable):
                await remote.read_many(
                    [f"f{i}" for i in range(1, 1100)], sink.new_file, sink.deliver
                )
    finally:
        await remote.aclose()
    assert sink.got == {} and sink.leftovers() == []


class CutOff(httpx.AsyncByteStream):
    """A body that breaks off (the connection drops) after `data`."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")


async def test_a_read_cut_off_keeps_what_was_delivered(tmp_path: Path) -> None:
    whole = tar_answer([("a", b"first", sha(b"first")), ("b", b"x" * 5000, sha(b"x" * 5000))])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=CutOff(whole[:3000]))  # inside b's content

    remote = NativeRemote(
        "http://fake", REPO, token="t", retry=FAST, transport=httpx.MockTransport(answer)
    )
    sink = Collected(tmp_path)
    try:
        with pytest.raises(Unavailable):
            await remote.read_many(["a", "b"], sink.new_file, sink.deliver)
    finally:
        await remote.aclose()
    assert list(sink.got) == ["a"] and sink.leftovers() == []


class Paused(httpx.AsyncByteStream):
    """A body that sends `first`, then waits for `go` before sending `rest`."""

    def __init__(self, first: bytes, rest: bytes, go: trio.Event) -> None:
        self.first, self.rest, self.go = first, rest, go

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        await self.go.wait()
        yield self.rest


async def test_files_that_arrived_are_delivered_before_the_stream_is_waited_on(
    tmp_path: Path,
) -> None:
    """Small files are written out together off the event loop, but never held back
    while the stream is slow: a program waiting for one of them does not wait for the
    files after it."""
    whole = tar_answer([(n, n.encode() * 100, sha(n.encode() * 100)) for n in ("a", "b", "c")])
    split = whole.index(b"c" * 100) - 1024  # a and b whole, c's headers and content later
    go = trio.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Paused(whole[:split], whole[split:], go))

    remote = NativeRemote(
        "http://fake", REPO, token="t", retry=FAST, transport=httpx.MockTransport(answer)
    )
    sink = Collected(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(remote.read_many, ["a", "b", "c"], sink.new_file, sink.deliver)
            with trio.fail_after(10):
                while list(sink.got) != ["a", "b"]:
                    await trio.sleep(0.01)
            go.set()
    finally:
        await remote.aclose()
    assert {p: data for p, (_, data) in sink.got.items()} == {
        n: n.encode() * 100 for n in ("a", "b", "c")
    }
    assert sink.leftovers() == []


async def test_a_member_far_larger_than_listed_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """The listing said 10 bytes; the tar member says 3 MiB (a hostile server's endless
    or huge answer): refused at its header, nothing of it written."""
    big = os.urandom(3 << 20)
    body = tar_answer([("a", b"fine", sha(b"fine")), ("b", big, sha(big))])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    remote = NativeRemote(
        "http://fake", REPO, token="t", retry=FAST, transport=httpx.MockTransport(answer)
    )
    sink = Collected(tmp_path)
    (tmp_path / "listed").mkdir()
    listed = Collected(tmp_path / "listed")
    try:
        with pytest.raises(ProtocolError, match="passes"):
            await remote.read_many(["a", "b"], sink.new_file, sink.deliver, sizes={"a": 4, "b": 10})
        sizes = {"a": 4, "b": len(big)}  # (as listed: taken)
        await remote.read_many(["a", "b"], listed.new_file, listed.deliver, sizes=sizes)
    finally:
        await remote.aclose()
    assert list(sink.got) == ["a"] and sink.leftovers() == []  # (a came before b)
    assert listed.got["b"][1] == big
