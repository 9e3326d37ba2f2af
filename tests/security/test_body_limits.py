"""Server security probe, finding 1: authenticated memory exhaustion through bodies.

`POST /terminaluse/filesystems/X/upload-url` (and `download-url`) read a body they only
glance at whole into memory, however large: 1 GiB declared, or 200 MiB chunked, took
the server's peak RSS as high. Every body must be bounded before it is read: a
Content-Length over the route's limit is 413 before a byte is read, a chunked body is
counted as it arrives and cut off with 413, and routes that take no body never read one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from support.rawhttp import RawRequest
from support.server import ServerProc

HUGE = 2 << 30  # declared only: more than every limit (--max-file-size is 1 GiB)
MiB = 1 << 20
CHUNKED_TOTAL = 200 * MiB
PEAK_GROWTH_LIMIT_KIB = 48 * 1024  # a bounded read keeps far below this
GRACE_SECONDS = 5.0  # a stopping server's wait for requests in flight (run.py)


@pytest.fixture(scope="module")
def fs(live: ServerProc) -> str:
    with live.client() as c:
        r = c.post("/terminaluse/filesystems", json={"project_id": "p"})
        r.raise_for_status()
        fs_id: str = r.json()["id"]
    return fs_id


def archive_url(server: ServerProc, fs_id: str) -> str:
    with server.client() as c:
        r = c.post(f"/terminaluse/filesystems/{fs_id}/upload-url", json={})
        r.raise_for_status()
        url = urlsplit(r.json()["url"])
    return f"{url.path}?{url.query}"


# Every route that takes a body, by face; {fs} is a filesystem (also a native repo).
BODY_ROUTES = [
    ("POST", "/v1/repos"),
    ("PUT", "/v1/repos/{fs}/files/a.txt"),
    ("POST", "/v1/repos/{fs}/read"),
    ("PUT", "/v1/repos/{fs}/blobs/" + "0" * 64),
    ("POST", "/v1/repos/{fs}/blobs"),
    ("POST", "/v1/repos/{fs}/commits"),
    ("POST", "/relace/v1/repo"),
    ("POST", "/relace/v1/repo/{fs}/update"),
    ("PUT", "/relace/v1/repo/{fs}/file/a.txt"),
    ("POST", "/terminaluse/filesystems"),
    ("PUT", "/terminaluse/filesystems/{fs}/file-upload?path=a.txt"),
    ("POST", "/terminaluse/filesystems/{fs}/upload-url"),
    ("POST", "/terminaluse/filesystems/{fs}/download-url"),
    ("POST", "/terminaluse/filesystems/{fs}/sync-complete"),
    ("PUT", "{archive}"),
]

# Routes that take no body: a declared one is never waited for.
BODYLESS_ROUTES = [
    ("GET", "/v1/repos"),
    ("GET", "/v1/repos/{fs}"),
    ("GET", "/v1/repos/{fs}/tree"),
    ("GET", "/v1/repos/{fs}/changes"),
    ("GET", "/v1/repos/{fs}/files/none"),
    ("DELETE", "/v1/repos/{fs}/files/none"),
    ("GET", "/relace/v1/repo"),
    ("GET", "/relace/v1/repo/{fs}"),
    ("GET", "/relace/v1/repo/{fs}/clone"),
    ("GET", "/relace/v1/repo/{fs}/file/none"),
    ("DELETE", "/relace/v1/repo/{fs}/file/none"),
    ("GET", "/terminaluse/filesystems"),
    ("GET", "/terminaluse/filesystems/{fs}"),
    ("GET", "/terminaluse/filesystems/{fs}/files"),
    ("GET", "/terminaluse/filesystems/{fs}/files/none"),
    ("GET", "/terminaluse/filesystems/{fs}/file-download?path=none"),
]


def _target(live: ServerProc, fs_id: str, route: str) -> str:
    if route == "{archive}":
        return archive_url(live, fs_id)
    return route.format(fs=fs_id)


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES)
def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    live: ServerProc, fs: str, method: str, route: str
) -> None:
    request = RawRequest(live, method, _target(live, fs, route), length=HUGE)
    assert request.answered(wait=5.0), f"{method} {route} waits for a {HUGE}-byte body"
    status, _, _ = request.response()
    assert status == 413


@pytest.mark.parametrize(("method", "route"), BODYLESS_ROUTES)
def test_a_route_without_a_body_answers_without_reading_one(
    live: ServerProc, fs: str, method: str, route: str
) -> None:
    request = RawRequest(live, method, route.format(fs=fs), length=HUGE)
    assert request.answered(wait=5.0), f"{method} {route} waits for a body it does not use"
    status, _, _ = request.response()
    assert status < 500


@pytest.mark.parametrize("kind", ["upload-url", "download-url"])
def test_a_chunked_body_is_cut_off_with_413(server: ServerProc, kind: str) -> None:
    with server.client() as c:
        fs_id = c.post("/terminaluse/filesystems", json={"project_id": "p"}).json()["id"]
        assert c.post(f"/terminaluse/filesystems/{fs_id}/{kind}", json={}).status_code == 200
    before = server.rss_peak_kib()
    request = RawRequest(server, "POST", f"/terminaluse/filesystems/{fs_id}/{kind}")
    sent = request.stream(CHUNKED_TOTAL)
    status, _, body = request.response()
    assert status == 413, body
    assert sent < CHUNKED_TOTAL
    assert server.rss_peak_kib() - before < PEAK_GROWTH_LIMIT_KIB


def test_a_refused_body_leaves_nothing_behind(server: ServerProc) -> None:
    """Each request refused part way through its body used to leave its task behind,
    stuck with the chunks already queued for it: memory grew with every such request,
    and a stop waited out its whole grace period for them."""
    with server.client() as c:
        fs_id = c.post("/terminaluse/filesystems", json={"project_id": "p"}).json()["id"]
    for _ in range(40):
        request = RawRequest(server, "POST", f"/terminaluse/filesystems/{fs_id}/upload-url")
        request.stream(2 * MiB, chunk=64 << 10)
        assert request.response()[0] == 413
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < GRACE_SECONDS


def _body(total: int, chunk: int = MiB) -> Iterator[bytes]:
    block = b" " * chunk
    for _ in range(total // chunk):
        yield block


def test_presigned_urls_still_take_a_small_body(live: ServerProc, fs: str) -> None:
    with live.client() as c:
        for body in (b"", b"null", b'{"expiration_seconds": 120}'):
            r = c.post(f"/terminaluse/filesystems/{fs}/download-url", content=body)
            assert r.status_code == 200, r.text
        r = c.post(f"/terminaluse/filesystems/{fs}/download-url", content=_body(2 * MiB))
        assert r.status_code == 413
