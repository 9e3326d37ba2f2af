"""What the HTTP adapters share: argument checks, the wording of info(), body copying,
hosted services' SRC strings, and the `parses` decorator. No server."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

import httpx
import pytest

from repomount.remotes.answers import parses
from repomount.remotes.base import (
    ApplyResult,
    Change,
    Entry,
    Fetched,
    Listing,
    NotFound,
    ProtocolError,
    RepoInfo,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.http import NO_RETRY
from repomount.remotes.httpremote import HostedSource, HttpRemote, copy_body


class Plain(HttpRemote):
    """An adapter whose every request gets the status it is built with."""

    scheme = "plain"
    label = "plain {base_url}"
    root = "/r/{repo}"

    def __init__(self, status: int) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            self.seen.append(str(request.url))
            return httpx.Response(status, json={"name": "x"})

        self.seen: list[str] = []
        transport = httpx.MockTransport(handler)
        super().__init__("http://h/api/", "a b", token=None, retry=NO_RETRY, transport=transport)

    async def _info(self) -> RepoInfo:
        await self._http.request("GET", self._path_url("files", "d/e f"))
        return RepoInfo("x", None)

    def _info_not_found(self) -> str:
        return "no such repo"

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        return f"refused ({exc.status})"

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        return Fetched(version, end or 0, start)

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        raise NotImplementedError

    async def stat(self, path: str) -> Entry | None:
        raise NotImplementedError

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        raise NotImplementedError


async def test_identity_urls_and_read_arguments() -> None:
    remote = Plain(200)
    try:
        assert remote.identity == "plain:http://h/api/a b"
        assert remote.version_of("ab") == "ab"
        assert await remote.info() == RepoInfo("x", None)
        assert remote.seen == ["http://h/api/r/a%20b/files/d/e%20f"]  # below the base URL
        assert await remote.read("p", io.BytesIO(), offset=2, length=3) == Fetched(None, 5, 2)
        for offset, length in ((-1, None), (0, -1)):
            with pytest.raises(ValueError, match="must not be negative"):
                await remote.read("p", io.BytesIO(), offset=offset, length=length)
    finally:
        await remote.aclose()


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, NotFound, "no such repo"),
        (403, Unauthorized, "refused (403)"),
        (503, Unavailable, "cannot reach http://h/api: "),
    ],
)
async def test_info_errors_are_worded_for_the_user(
    status: int, error: type[Exception], message: str
) -> None:
    remote = Plain(status)
    try:
        with pytest.raises(error) as caught:
            await remote.info()
        assert str(caught.value).startswith(message)
        assert getattr(caught.value, "status", None) == status
    finally:
        await remote.aclose()


async def test_copy_body_hashes_everything_and_writes_a_slice() -> None:
    body = bytes(range(256)) * 5000  # several chunks
    dest = io.BytesIO()
    copied = await copy_body(httpx.Response(200, content=body), dest, start=10, end=300_000)
    assert copied.sha256 == hashlib.sha256(body).hexdigest()
    assert (copied.size, copied.written) == (len(body), 300_000 - 10)
    assert dest.getvalue() == body[10:300_000]
    hashed = await copy_body(httpx.Response(200, content=body), None)
    assert (hashed.size, hashed.written) == (len(body), 0)


async def test_copy_body_of_a_streamed_body_hashes_all_of_it() -> None:
    pieces = [os.urandom(1 << 20) for _ in range(12)]

    async def stream() -> AsyncIterator[bytes]:
        for p in pieces:
            yield p

    dest = io.BytesIO()
    copied = await copy_body(httpx.Response(200, content=stream()), dest, start=5)
    body = b"".join(pieces)
    assert copied.sha256 == hashlib.sha256(body).hexdigest()
    assert (copied.size, copied.written) == (len(body), len(body) - 5)
    assert dest.getvalue() == body[5:]


SOURCE = HostedSource(
    scheme="svc",
    id_name="thing id",
    id_pattern=re.compile(r"[a-z0-9]{1,8}"),
    default_url="https://svc.example",
    id_example="like abc; ",
)


def test_hosted_source_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (SOURCE.url_env, SOURCE.key_env, SOURCE.accepted) == (
        "SVC_API_URL",
        "SVC_API_KEY",
        "svc:THING_ID",
    )
    assert SOURCE.parse_id(" SVC:abc ") == "abc"
    bad = {
        "svc": "expected svc:THING_ID",
        "other:abc": "expected svc:THING_ID",
        "svc:": "no thing id after 'svc:'",
        "svc:A/B": "a thing id is letters, digits, '.', '_' and '-' (like abc; expected",
    }
    for src, why in bad.items():
        with pytest.raises(ValueError, match=why.replace("(", r"\(")):
            SOURCE.parse_id(src)
    monkeypatch.delenv("SVC_API_URL", raising=False)
    assert SOURCE.url(None) == "https://svc.example"
    monkeypatch.setenv("SVC_API_URL", "http://env")
    assert SOURCE.url(None) == "http://env" and SOURCE.url("http://arg") == "http://arg"


def test_parses_turns_malformed_answers_into_protocol_errors() -> None:
    @parses("Svc")
    def name(data: dict[str, object], *, upper: bool = False) -> str:
        value = str(data["name"])
        return value.upper() if upper else value

    assert name({"name": "a"}, upper=True) == "A"
    assert name.__name__ == "name"
    with pytest.raises(ProtocolError, match=r"unexpected answer from Svc: KeyError\('name'\)"):
        name({})
