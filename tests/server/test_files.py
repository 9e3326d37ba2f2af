"""Single-file GET / HEAD / PUT / DELETE with versions, preconditions and ranges."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from support.server import ServerFactory, file_url
from support.util import sha


def test_put_get_head_roundtrip(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "dir/sub/hello world.txt")
    r = client.put(url, content=b"hello")
    assert r.status_code == 201
    assert r.json() == {
        "head": "1",
        "path": "dir/sub/hello world.txt",
        "version": sha(b"hello"),
        "size": 5,
    }
    assert r.headers["X-Repo-Head"] == "1"

    r = client.get(url)
    assert r.status_code == 200
    assert r.content == b"hello"
    assert r.headers["ETag"] == f'"{sha(b"hello")}"'
    assert r.headers["X-Repo-Head"] == "1"
    assert r.headers["Content-Length"] == "5"
    assert r.headers["X-Repomount-Mode"] == "644"
    assert r.headers["Last-Modified"].endswith("GMT")

    r = client.head(url)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == "5"
    assert r.headers["ETag"] == f'"{sha(b"hello")}"'

    r = client.put(url, content=b"bye")
    assert r.status_code == 200
    assert r.json()["head"] == "2"
    assert client.get(url).content == b"bye"


def test_empty_and_binary_files(client: httpx.Client, repo: str) -> None:
    blob = bytes(range(256)) * 1000
    client.put(file_url(repo, "empty"), content=b"").raise_for_status()
    client.put(file_url(repo, "bin"), content=blob).raise_for_status()
    assert client.get(file_url(repo, "empty")).content == b""
    assert client.get(file_url(repo, "bin")).content == blob


def test_missing_file_and_directory_are_404(client: httpx.Client, repo: str) -> None:
    client.put(file_url(repo, "d/f"), content=b"x")
    for path in ["nope", "d"]:
        assert client.get(file_url(repo, path)).status_code == 404
        assert client.head(file_url(repo, path)).status_code == 404


def test_mode_header(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "run.sh")
    client.put(url, content=b"#!/bin/sh", headers={"X-Repomount-Mode": "755"})
    assert client.head(url).headers["X-Repomount-Mode"] == "755"
    client.put(url, content=b"#!/bin/sh\necho")  # a replace keeps the mode
    assert client.head(url).headers["X-Repomount-Mode"] == "755"
    r = client.put(url, content=b"x", headers={"X-Repomount-Mode": "999"})
    assert r.status_code == 422


def test_if_match_on_put(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "f")
    v1 = client.put(url, content=b"one").json()["version"]
    r = client.put(url, content=b"two", headers={"If-Match": f'"{v1}"'})
    assert r.status_code == 200
    v2 = r.json()["version"]
    # Stale version: refused, with the current one.
    r = client.put(url, content=b"three", headers={"If-Match": f'"{v1}"'})
    assert r.status_code == 412
    assert r.json()["error"]["code"] == "precondition_failed"
    assert r.json()["error"]["current_version"] == v2
    assert r.headers["X-Repo-Head"] == "2"
    assert client.get(url).content == b"two"
    # If-Match on a missing file: 412 with current_version null.
    r = client.put(file_url(repo, "g"), content=b"x", headers={"If-Match": f'"{v1}"'})
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] is None
    assert client.get(file_url(repo, "g")).status_code == 404
    # If-Match: * means "exists, any version".
    assert client.put(url, content=b"4", headers={"If-Match": "*"}).status_code == 200
    assert (
        client.put(file_url(repo, "h"), content=b"4", headers={"If-Match": "*"}).status_code == 412
    )


def test_if_none_match_star_creates_only(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "new")
    r = client.put(url, content=b"first", headers={"If-None-Match": "*"})
    assert r.status_code == 201
    r = client.put(url, content=b"second", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] == sha(b"first")
    assert client.get(url).content == b"first"
    r = client.put(url, content=b"x", headers={"If-None-Match": f'"{sha(b"first")}"'})
    assert r.status_code == 422
    r = client.put(url, content=b"x", headers={"If-None-Match": "*", "If-Match": "*"})
    assert r.status_code == 422


def test_conditional_get(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "f")
    v = client.put(url, content=b"content").json()["version"]
    r = client.get(url, headers={"If-None-Match": f'"{v}"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["ETag"] == f'"{v}"'
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(url, headers={"If-Match": f'"{v}"'}).status_code == 200
    r = client.get(url, headers={"If-Match": '"other"'})
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] == v


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=4-", 206, b"456789", "bytes 4-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=-100", 206, b"0123456789", "bytes 0-9/10"),
        ("bytes=9-9", 206, b"9", "bytes 9-9/10"),
        ("bytes=10-", 416, None, "bytes */10"),
        ("bytes=-0", 416, None, "bytes */10"),
        ("bytes=5-2", 200, b"0123456789", None),  # invalid: ignored
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: ignored
        ("items=0-1", 200, b"0123456789", None),
    ],
)
def test_ranges(
    client: httpx.Client,
    repo: str,
    header: str,
    status: int,
    body: bytes | None,
    content_range: str | None,
) -> None:
    url = file_url(repo, "digits")
    client.put(url, content=b"0123456789")
    r = client.get(url, headers={"Range": header})
    assert r.status_code == status
    assert r.headers.get("Content-Range") == content_range
    if status == 416:
        assert r.json()["error"]["code"] == "range_not_satisfiable"
    else:
        assert r.content == body
        assert r.headers["Content-Length"] == str(len(body or b""))


def test_large_file_range_streams(client: httpx.Client, repo: str) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 << 15)  # 3 MiB
    client.put(file_url(repo, "big"), content=data).raise_for_status()
    r = client.get(file_url(repo, "big"), headers={"Range": "bytes=1000000-2000000"})
    assert r.status_code == 206
    assert r.content == data[1000000:2000001]
    assert client.get(file_url(repo, "big")).content == data


def test_delete(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "d/f")
    v = client.put(url, content=b"x").json()["version"]
    r = client.delete(url, headers={"If-Match": '"stale"'})
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] == v
    r = client.delete(url, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 200
    assert r.json() == {"head": "2"}
    assert r.headers["X-Repo-Head"] == "2"
    assert client.get(url).status_code == 404
    r = client.delete(url)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = client.delete(url, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] is None
    # The directory stays; it can be deleted once empty, not before.
    client.put(file_url(repo, "e/g"), content=b"y")
    r = client.delete(file_url(repo, "e"))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "directory_not_empty"
    assert client.delete(file_url(repo, "d")).status_code == 200


def test_path_conflicts(client: httpx.Client, repo: str) -> None:
    client.put(file_url(repo, "a/b"), content=b"x").raise_for_status()
    for path in ["a", "a/b/c"]:
        r = client.put(file_url(repo, path), content=b"y")
        assert r.status_code == 409, path
        assert r.json()["error"]["code"] == "path_conflict"
    assert client.get(file_url(repo, "a/b")).content == b"x"


def test_idempotent_put(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "f")
    key = {"Idempotency-Key": "k-1"}
    first = client.put(url, content=b"same", headers=key)
    assert first.status_code == 201
    client.put(file_url(repo, "other"), content=b"moves the head")
    again = client.put(url, content=b"same", headers=key)
    assert again.status_code == 201  # the first answer, again
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert client.get(f"/v1/repos/{repo}").json()["head"] == "2"

    r = client.put(url, content=b"different", headers=key)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_conflict"
    r = client.put(url, content=b"same", headers={**key, "If-None-Match": "*"})
    assert r.status_code == 409  # other preconditions: another request
    assert client.get(url).content == b"same"

    # A conditional write replays although its precondition no longer holds.
    v = first.json()["version"]
    headers = {"Idempotency-Key": "k-2", "If-Match": f'"{v}"'}
    second = client.put(url, content=b"next", headers=headers)
    assert second.status_code == 200
    replay = client.put(url, content=b"next", headers=headers)
    assert (replay.status_code, replay.json()) == (200, second.json())


def test_too_large_bodies_are_413(server_factory: ServerFactory) -> None:
    live = server_factory(["--max-file-size", "1K"])
    live.create_repo("r")
    with live.client() as c:
        r = c.put(file_url("r", "ok"), content=b"x" * 1024)
        assert r.status_code == 201
        r = c.put(file_url("r", "big"), content=b"x" * 4096)  # refused on Content-Length
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"

        def chunks() -> Iterator[bytes]:
            for _ in range(8):
                yield b"y" * 512

        r = c.put(file_url("r", "chunked"), content=chunks())  # no Content-Length
        assert r.status_code == 413
        blob = "0" * 64
        assert c.put(f"/v1/repos/r/blobs/{blob}", content=b"z" * 2048).status_code == 413
        assert c.get(file_url("r", "big")).status_code == 404
        assert c.get(file_url("r", "chunked")).status_code == 404
        assert c.get("/v1/repos/r").json()["head"] == "1"
    assert list((live.data_dir / "tmp").iterdir()) == []


def test_require_preconditions_gives_428(server_factory: ServerFactory) -> None:
    live = server_factory(["--require-preconditions"])
    live.create_repo("r")
    with live.client() as c:
        r = c.put(file_url("r", "f"), content=b"x")
        assert r.status_code == 428
        assert r.json()["error"]["code"] == "precondition_required"
        r = c.put(file_url("r", "f"), content=b"x", headers={"If-None-Match": "*"})
        assert r.status_code == 201
        assert c.delete(file_url("r", "f")).status_code == 428
        v = r.json()["version"]
        assert c.delete(file_url("r", "f"), headers={"If-Match": f'"{v}"'}).status_code == 200
