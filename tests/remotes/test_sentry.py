"""SentryRemote where the contract suite does not reach: the SRC string and the
credentials, the request rate and `Retry-After`, what a replace keeps (the headers) and
its race windows, dists, organization-level releases and names that are URLs.

Against the server's Sentry face (a real `repomount serve`) unless a scripted server
(httpx.MockTransport) is the point; the truth is read back through the native API.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from repomount.remotes.base import (
    Applied,
    Conflicted,
    Expect,
    ExpectT,
    Failed,
    ProtocolError,
    Rename,
    Write,
)
from repomount.remotes.http import NO_RETRY, RetryPolicy
from repomount.remotes.registry import open_remote
from repomount.remotes.sentry import SentryRemote
from repomount.remotes.sentry_source import open_sentry
from support.server import ServerProc
from support.tap import Tap, once
from support.util import sha

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
_names = itertools.count()
WriteFactory = Callable[..., Write]


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def release(live: ServerProc) -> str:
    name = f"rel{next(_names)}"
    live.create_repo(name)
    return name


def adapter(live: ServerProc, release: str, **kw: object) -> SentryRemote:
    options: dict[str, object] = {"retry": FAST} | kw
    project = options.pop("project", "web")
    return SentryRemote(
        "acme",
        project,
        release,
        base_url=live.url,
        token=live.token,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def write(tmp_path: Path) -> WriteFactory:
    counter = itertools.count()

    def make(path: str, data: bytes, expect: ExpectT = Expect.ABSENT) -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect)

    return make


def files_url(live: ServerProc, release: str) -> str:
    return f"{live.url}/api/0/projects/acme/web/releases/{release}/files/"


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("src", "where"),
    [
        ("sentry:acme/web/app@1.2.3+abc", "projects/acme/web/releases/app%401.2.3%2Babc"),
        ("sentry:acme//1.0", "organizations/acme/releases/1.0"),
        (" SENTRY:acme/web/v1 ", "projects/acme/web/releases/v1"),
    ],
)
def test_src_strings(src: str, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", "sntrys_secret")
    monkeypatch.setenv("SENTRY_URL", "http://sentry.local:9000/")
    remote = open_remote(src)
    assert isinstance(remote, SentryRemote)
    assert remote._root == f"http://sentry.local:9000/api/0/{where}"
    assert "sntrys_secret" not in remote.identity + repr(remote)
    other = open_remote(src, endpoint="https://other.example", dist="d1")
    assert other.identity.startswith("sentry:https://other.example/")
    assert other.identity.endswith("?dist=d1") and other.identity != remote.identity


@pytest.mark.parametrize(
    ("src", "endpoint", "dist", "message"),
    [
        ("sentry:acme/web", None, None, "expected sentry:ORG/PROJECT/RELEASE"),
        ("sentry://acme/web/1", None, None, "no '//' after 'sentry:'"),
        ("sentry:/web/1", None, None, "the organization is a slug"),
        ("sentry:acme/we b/1", None, None, "the project is a slug"),
        ("sentry:acme/web/", None, None, "no release"),
        ("sentry:acme/web/a/b", None, None, "no '/'"),
        ("sentry:acme/web/latest", None, None, "no release Sentry allows"),
        ("sentry:acme/web/1", "http://h/sentry", None, "on the server's root"),
        ("sentry:acme/web/1", "http://tok@h", None, "put the token in SENTRY_AUTH_TOKEN"),
        ("sentry:acme/web/1", None, "", "bad --dist"),
        ("sentry:acme/web/1", None, "a\nb", "bad --dist"),
        ("http://h/r", None, "d1", "--dist is for sentry: remotes"),
    ],
)
def test_bad_src_strings(
    src: str, endpoint: str | None, dist: str | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", "t")
    with pytest.raises(ValueError, match=message) as refused:
        open_remote(src, endpoint=endpoint, dist=dist)
    assert "\n" not in str(refused.value).replace("a\\nb", "")


def test_a_token_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTRY_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="set SENTRY_AUTH_TOKEN"):
        open_sentry("sentry:acme/web/1")


# --------------------------------------------------------------------------- the rate


async def test_requests_are_paced_and_429_waits_for_retry_after(autojump_clock: object) -> None:
    """At most `rate` requests a second; a 429 is sent again once its Retry-After passed."""
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 3:
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow"})
        return httpx.Response(200, json={"version": "1"})

    remote = SentryRemote(
        "acme",
        "web",
        "1",
        base_url="http://h",
        token="t",
        rate=4.0,
        transport=httpx.MockTransport(answer),
        retry=FAST,
    )
    for _ in range(4):
        await remote.info()
    await remote.aclose()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.25  # 4 a second
    assert gaps[2] >= 7.0  # the 429's Retry-After
    assert len(times) == 5


@pytest.mark.parametrize("kind", ["empty pages", "a repeated cursor"])
async def test_a_list_that_never_ends_is_an_error(kind: str) -> None:
    """A server whose pages say `results="true"` forever fails the listing (one line),
    never loops: an empty page ends it, a cursor seen before is an error."""
    pages = itertools.count()

    def answer(request: httpx.Request) -> httpx.Response:
        n = next(pages)
        cursor = f"100:{n + 1}:0" if kind == "empty pages" else "100:1:0"
        link = f'<http://h/x/?&cursor={cursor}>; rel="next"; results="true"; cursor="{cursor}"'
        if kind == "empty pages" and n:
            return httpx.Response(200, json=[], headers={"Link": link})
        item = {"id": str(n), "name": f"f{n}", "sha1": "a" * 40, "size": 1}
        return httpx.Response(200, json=[item], headers={"Link": link})

    remote = SentryRemote(
        "acme", "web", "1", base_url="http://h", token="t", rate=1e6,
        transport=httpx.MockTransport(answer),
    )  # fmt: skip
    try:
        if kind == "empty pages":
            listed = await remote.list_tree("")
            assert [e.path for e in listed.entries] == ["f0"]
        else:
            with pytest.raises(ProtocolError, match="repeat"):
                await remote.list_tree("")
    finally:
        await remote.aclose()
    assert next(pages) < 5


# --------------------------------------------------------------------------- writing


async def test_a_replace_keeps_the_headers(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {live.token}"}) as c:
        files = {"file": ("x", b"old", "text/x-old")}
        data = {"name": "~/app.js", "header": "Sourcemap: app.js.map"}
        assert c.post(files_url(live, release), data=data, files=files).status_code == 201
    remote = adapter(live, release)
    try:
        out = await remote.apply([write("~/app.js", b"new", expect=sha1(b"old"))])
        assert out.outcomes == [Applied(sha1(b"new"))]
        out = await remote.apply([write("~/new.js", b"n")])
        assert out.outcomes == [Applied(sha1(b"n"))]
    finally:
        await remote.aclose()
    with httpx.Client(headers={"Authorization": f"Bearer {live.token}"}) as c:
        listed = {f["name"]: f["headers"] for f in c.get(files_url(live, release)).json()}
    assert listed == {
        "~/app.js": {"Content-Type": "text/x-old", "Sourcemap": "app.js.map"},
        "~/new.js": {"Content-Type": "application/javascript"},
    }
    assert live.tree(release) == {"~/app.js": b"new", "~/new.js": b"n"}


async def test_same_content_sends_nothing(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    live.put(release, "a.js", b"same")
    tap = Tap()
    remote = adapter(live, release, transport=tap)
    try:
        out = await remote.apply([write("a.js", b"same", expect=sha1(b"same"))])
    finally:
        await remote.aclose()
    assert out.outcomes == [Applied(sha1(b"same"))]
    assert [r.method for r in tap.sent] == ["GET"]  # the check, nothing else


class RefuseFirstUpload(httpx.AsyncBaseTransport):
    """The first POST never reaches the server: a 503 from the way there."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.refused:
            self.refused += 1
            return httpx.Response(503, json={"detail": "gateway"})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_upload_that_failed_after_our_delete_is_sent_again(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    """The window between the delete and the upload: an upload that failed leaves the
    name free. The same adapter's next try uploads (the file went by its own hand); a
    fresh one (a restarted mount) finds the file deleted, a conflict with nothing,
    and the write-back keeps our content (docs/remotes.md, "Sentry")."""
    live.put(release, "a.js", b"old")
    live.put(release, "b.js", b"old")
    for path, fresh in (("a.js", False), ("b.js", True)):
        change = write(path, b"new", expect=sha1(b"old"))
        remote = adapter(live, release, transport=RefuseFirstUpload(), retry=NO_RETRY)
        try:
            (first,) = (await remote.apply([change])).outcomes
            assert isinstance(first, Failed) and first.retryable
            assert path not in live.tree(release)  # deleted, not uploaded yet
            again = adapter(live, release) if fresh else remote
            (second,) = (await again.apply([change])).outcomes
            await again.aclose()
        finally:
            await remote.aclose()
        assert second == (Conflicted(None) if fresh else Applied(sha1(b"new"))), path
    assert live.tree(release) == {"a.js": b"new"}


async def test_an_upload_whose_answer_was_lost_is_recognised(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    live.put(release, "a.js", b"old")
    change = write("a.js", b"new", expect=sha1(b"old"))
    tap = Tap(drop=once(lambda r: r.method == "POST"))
    remote = adapter(live, release, transport=tap)
    try:
        (outcome,) = (await remote.apply([change])).outcomes
        assert outcome == Conflicted(sha1(b"new"))  # resent: 409, and it is ours
        assert remote.version_of(change.sha256) == sha1(b"new")
    finally:
        await remote.aclose()
    assert [r.method for r in tap.sent] == ["GET", "DELETE", "POST", "POST", "GET"]
    assert live.tree(release) == {"a.js": b"new"}


async def test_a_name_taken_between_our_delete_and_upload_is_theirs(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    live.put(release, "a.js", b"old")

    async def someone_uploads_first(request: httpx.Request) -> None:
        if request.method == "POST":
            await trio.to_thread.run_sync(live.put, release, "a.js", b"theirs")

    remote = adapter(live, release, transport=Tap(before=someone_uploads_first))
    try:
        out = await remote.apply([write("a.js", b"mine", expect=sha1(b"old"))])
    finally:
        await remote.aclose()
    assert out.outcomes == [Conflicted(sha1(b"theirs"))]
    assert live.tree(release) == {"a.js": b"theirs"}


# --------------------------------------------------------------------------- dists, levels


async def test_dists_and_organization_level(
    live: ServerProc, release: str, write: WriteFactory
) -> None:
    """A mount with `--dist d1` sees and writes d1's files only; a release of the
    organization (`sentry:ORG//RELEASE`) is the same files."""
    live.put(release, "~/a.js", b"no dist")
    d1 = adapter(live, release, dist="d1")
    org = adapter(live, release, project=None)
    try:
        assert (await d1.list_tree("", recursive=True)).entries == []
        out = await d1.apply([write("~/a.js", b"d1's"), write("~/x/b.js", b"b")])
        assert out.outcomes == [Applied(sha1(b"d1's")), Applied(sha1(b"b"))]
        out = await d1.apply([Rename("~/x", "~/y", expect=Expect.ANY, expect_to=Expect.ABSENT)])
        assert out.outcomes == [Applied(None)]
        assert [e.path for e in (await d1.list_tree("", recursive=True)).entries] == [
            "~",
            "~/a.js",
            "~/y",
            "~/y/b.js",
        ]
        dest = io.BytesIO()
        assert (await d1.read("~/a.js", dest)).version == sha1(b"d1's")
        assert dest.getvalue() == b"d1's"
        (listed,) = (await org.list_tree("~")).entries
        assert (listed.path, listed.version) == ("~/a.js", sha1(b"no dist"))
    finally:
        await d1.aclose()
        await org.aclose()
    assert live.tree(release) == {"~/a.js": b"no dist"}  # d1's files live apart


async def test_names_that_are_urls(live: ServerProc, release: str, write: WriteFactory) -> None:
    """`https://cdn/app.js` is the file `app.js` in the directories `https:` and `cdn`."""
    remote = adapter(live, release)
    try:
        out = await remote.apply([write("https:/cdn.example.com/app.js", b"u")])
        assert out.outcomes == [Applied(sha1(b"u"))]
    finally:
        await remote.aclose()
    with httpx.Client(headers={"Authorization": f"Bearer {live.token}"}) as c:
        (made,) = c.get(files_url(live, release)).json()
    assert made["name"] == "https://cdn.example.com/app.js"
