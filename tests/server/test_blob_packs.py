"""POST /v1/repos/{repo}/blobs: a pack of blobs as one streamed tar body."""

from __future__ import annotations

import base64
import http.client
import io
import socket
import tarfile
from collections.abc import Iterator

import httpx
import pytest

from support.blobkinds import blob_file, blob_row, stored_content
from support.server import ServerFactory, ServerProc
from support.util import sha, wait_until

TAR = {"Content-Type": "application/x-tar"}


def pack(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, **pax: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = dict(pax)
            tar.addfile(info, io.BytesIO(data))
        end = tar.offset
    return buf.getvalue()[:end] + b"\0" * 1024  # (tarfile pads to 10 KiB records)


def named(*contents: bytes) -> list[tuple[str, bytes]]:
    return [(sha(c), c) for c in contents]


def stored(live: ServerProc, data: bytes) -> bool:
    """Stored whole: small contents as rows of the database, large ones as files."""
    return stored_content(live.data_dir, sha(data)) == data


def test_a_pack_stores_its_blobs_each_once(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    a, b, c = b"alpha" * 1000, b"", bytes(range(256)) * 4099
    url = f"/v1/repos/{repo}/blobs"
    r = client.post(url, content=pack(named(a, b, a)), headers=TAR)
    assert (r.status_code, r.json()) == (200, {"stored": 2, "present": 1})
    assert r.headers["X-Repo-Head"] == "0"
    assert all(blob_row(live.data_dir, sha(d)) == d for d in (a, b))  # small: rows, no files
    assert not any(blob_file(live.data_dir, sha(d)).exists() for d in (a, b))
    # Members the store has are consumed and skipped; a pax header is accepted.
    body = pack(named(c, a), tarfile.PAX_FORMAT, comment="ignored")
    r = client.post(url, content=body, headers=TAR)
    assert (r.status_code, r.json()) == (200, {"stored": 1, "present": 1})
    assert (live.data_dir / "blobs" / sha(c)[:2] / sha(c)).read_bytes() == c
    # A commit may name them now.
    ops = [{"op": "write", "path": p, "blob": sha(d)} for p, d in (("a", a), ("c", c))]
    r = client.post(f"/v1/repos/{repo}/commits", json={"operations": ops})
    assert r.status_code == 201
    assert client.get(f"/v1/repos/{repo}/files/c").content == c
    # An empty pack (just the end-of-archive blocks) is fine too.
    r = client.post(url, content=b"\0" * 1024, headers=TAR)
    assert (r.status_code, r.json()) == (200, {"stored": 0, "present": 0})
    assert list((live.data_dir / "tmp").iterdir()) == []


def test_a_pack_of_many_groups(live: ServerProc, client: httpx.Client, repo: str) -> None:
    """More members than one group of the store takes at once (256): each is stored,
    repeats (also of a member in an earlier group) count as present."""
    url = f"/v1/repos/{repo}/blobs"
    data = [f"member {i} ".encode() * (i % 50) + bytes([i % 256]) for i in range(700)]
    members = named(*data[:400]) + named(*data[::9]) + named(*data[400:])
    r = client.post(url, content=pack(members), headers=TAR)
    assert (r.status_code, r.json()) == (200, {"stored": 700, "present": len(data[::9])})
    assert all(stored(live, d) for d in data)
    # A bad member late in a pack: those before it are stored, its group too.
    more = [b"more %d" % i for i in range(600)]
    bad = [*named(*more[:500]), (sha(b"other"), b"content"), *named(*more[500:])]
    r = client.post(url, content=pack(bad), headers=TAR)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "hash_mismatch")
    assert all(stored(live, d) for d in more[:500])
    assert not any(stored(live, d) for d in more[500:])
    assert list((live.data_dir / "tmp").iterdir()) == []


def test_a_hash_mismatch_names_the_member(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    first, wrong, after = b"first member", b"content", b"never reached"
    members = [*named(first), (sha(b"other"), wrong), *named(after)]
    r = client.post(f"/v1/repos/{repo}/blobs", content=pack(members), headers=TAR)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["member"], error["expected"], error["actual"]) == (
        "hash_mismatch",
        sha(b"other"),
        sha(b"other"),
        sha(wrong),
    )
    assert stored(live, first)  # stored before the bad one: harmless, content-addressed
    assert not stored(live, wrong) and not stored(live, b"other") and not stored(live, after)
    assert list((live.data_dir / "tmp").iterdir()) == []


def test_malformed_packs_are_refused(live: ServerProc, client: httpx.Client, repo: str) -> None:
    url = f"/v1/repos/{repo}/blobs"
    good = pack(named(b"x" * 2000))

    def post(body: bytes) -> tuple[int, str]:
        r = client.post(url, content=body, headers=TAR)
        return r.status_code, r.json()["error"]["code"]

    assert post(b"this is not a tar stream".ljust(2048, b".")) == (400, "bad_tar")
    assert post(good[:1200]) == (400, "bad_tar")  # cut inside the content
    assert not stored(live, b"x" * 2000)
    assert post(good[:-1024]) == (400, "bad_tar")  # no end-of-archive blocks
    assert stored(live, b"x" * 2000)  # it came whole before the stream broke off
    assert post(b"") == (400, "bad_tar")
    assert post(pack([("not-a-hash", b"x")])) == (422, "invalid_request")
    assert post(pack([(sha(b"x").upper(), b"x")])) == (422, "invalid_request")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(sha(b"x"))
        info.type = tarfile.SYMTYPE
        info.linkname = "elsewhere"
        tar.addfile(info)
    assert post(buf.getvalue()) == (422, "invalid_request")
    assert list((live.data_dir / "tmp").iterdir()) == []
    r = client.post(url, content=good, headers=TAR)  # and the server still takes packs
    assert r.json() == {"stored": 0, "present": 1}


def test_packs_need_the_token_and_a_repo(live: ServerProc, repo: str) -> None:
    body = pack(named(b"secretless"))
    r = httpx.post(f"{live.url}/v1/repos/{repo}/blobs", content=body, headers=TAR)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    assert not stored(live, b"secretless")
    with live.client() as client:
        r = client.post("/v1/repos/nope/blobs", content=body, headers=TAR)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert "X-Repo-Head" not in r.headers
    assert not stored(live, b"secretless")


class RawPost:
    """A chunked POST over a raw socket, so the test sees an answer that comes before
    the body has ended (the server refused without reading it all)."""

    def __init__(self, server: ServerProc, path: str) -> None:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {server.token}\r\n"
            "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def status(self) -> int:
        """The answer's status, read without ending the body."""
        answer = self.sock.recv(65536)
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("records", [False, True], ids=["exact", "padded"])
def test_a_pack_answer_keeps_its_connection(
    live: ServerProc, repo: str, chunked: bool, records: bool
) -> None:
    """The body is read to its end, past the end-of-archive blocks (and the zero
    records tar pads an archive with), so the connection carries the next request: a
    client's commit after its last pack does not pay a new connection (a handshake and
    TCP's slow start: over a WAN, several round trips for a large commit)."""
    body = pack(named(f"kept {repo}".encode() * 30000, f"alive {repo}".encode()))
    if records:
        body += b"\0" * (-len(body) % 10240)
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    auth = {"Authorization": f"Bearer {live.token}"}
    try:
        content = iter([body[:700], body[700:]]) if chunked else body
        conn.request(
            "POST", f"/v1/repos/{repo}/blobs", content, {**auth, **TAR}, encode_chunked=chunked
        )
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b'{"stored":2,"present":0}')
        assert answer.getheader("Connection") is None
        sock = conn.sock
        conn.request("GET", f"/v1/repos/{repo}", headers=auth)
        assert conn.getresponse().status == 200
        assert conn.sock is sock  # (http.client reconnects when the server closed it)
    finally:
        conn.close()


@pytest.mark.parametrize("then", ["stalls", "runs_on"])
def test_a_pack_whose_body_goes_on_after_its_end_is_answered_at_once(
    live: ServerProc, repo: str, then: str
) -> None:
    """What follows the end-of-archive blocks is read for a moment, and to a bound,
    only to keep the connection: a body that stalls there (or goes on past the bound)
    gets the pack's answer at once, closing the connection, not a 408 after the body
    timeout (60 s) for a pack whose blobs are all stored."""
    data = f"stalled after the end {repo}".encode()
    post = RawPost(live, f"/v1/repos/{repo}/blobs")
    post.send(pack(named(data)))  # the whole archive, and the body never ends
    if then == "runs_on":
        post.send(b"\0" * (128 << 10))
    post.sock.settimeout(10)
    answer = post.sock.recv(65536)
    post.sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200" and body == b'{"stored":1,"present":0}'
    assert b"connection: close" in head.lower()
    assert stored(live, data)


def test_unknown_repo_is_404_before_the_body(live: ServerProc) -> None:
    post = RawPost(live, "/v1/repos/nope/blobs")
    post.send(pack(named(b"half"))[:512])  # a header, and the body never goes on
    assert post.status() == 404


def test_too_large_is_413_without_reading_it_all(server_factory: ServerFactory) -> None:
    live = server_factory(["--max-pack-size", "1M", "--max-file-size", "300K"])
    live.create_repo("r")
    url = "/v1/repos/r/blobs"
    ok = [os_bytes(i, 200_000) for i in range(4)]  # 800 kB in all: within both limits
    with live.client() as client:
        r = client.post(url, content=pack(named(*ok)), headers=TAR)
        assert r.json() == {"stored": 4, "present": 0}
        # Refused on Content-Length alone.
        big = pack(named(*[os_bytes(i, 200_000) for i in range(10, 16)]))
        r = client.post(url, content=big, headers=TAR)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
        # One member beyond --max-file-size, named.
        r = client.post(url, content=pack(named(os_bytes(99, 400_000))), headers=TAR)
        error = r.json()["error"]
        assert (r.status_code, error["code"], error["member"]) == (
            413,
            "too_large",
            sha(os_bytes(99, 400_000)),
        )

    # Streamed without a length: refused once past the limit, the rest never read.
    post = RawPost(live, url)
    body = pack(named(*[os_bytes(i, 200_000) for i in range(20, 30)]))  # ~2 MB
    sent = 0
    for part in split(body, 64 * 1024):
        try:
            post.send(part)
        except OSError:  # the server answered and closed
            break
        sent += len(part)
        if sent > (1 << 20) + 256 * 1024:
            break
    assert post.status() == 413
    assert sent < len(body)
    assert list((live.data_dir / "tmp").iterdir()) == []

    # A whole archive within the limit, streamed, whose padding then passes it: what
    # follows the end is not the pack's, so it is stored (the connection then closes).
    whole = pack(named(*[os_bytes(i, 200_000) for i in range(40, 45)]))  # ~1.0 MB
    assert len(whole) < 1 << 20 < len(whole) + 60_000
    with live.client() as client:
        r = client.post(url, content=iter([whole, b"\0" * 60_000]), headers=TAR)
        assert (r.status_code, r.json()) == (200, {"stored": 5, "present": 0})


def test_inline_and_packed_blobs_share_the_store(client: httpx.Client, repo: str) -> None:
    data = b"inline then packed"
    ops = [{"op": "write", "path": "f", "content_b64": base64.b64encode(data).decode()}]
    assert client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).status_code == 201
    r = client.post(f"/v1/repos/{repo}/blobs", content=pack(named(data)), headers=TAR)
    assert r.json() == {"stored": 0, "present": 1}


def os_bytes(seed: int, size: int) -> bytes:
    """`size` bytes that differ per seed (and do not compress to nothing)."""
    block = sha(seed.to_bytes(4, "big")).encode() * 64
    return (block * (size // len(block) + 1))[:size]


def split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


OCTETS = {"Content-Type": "application/octet-stream"}


def test_one_blob_sent_as_octets_is_named_by_the_server(
    server_factory: ServerFactory,
) -> None:
    """POST /blobs with an octet-stream body: one blob, named by the SHA-256 of what
    arrived (an upload that began before its sender knew the hash), streamed without a
    length; a commit can name it; refused like any body beyond --max-file-size."""
    live = server_factory(["--max-file-size", "300K"])
    live.create_repo("r")
    big = bytes(range(256)) * 1000  # 256 kB: a file, not a row

    def pieces() -> Iterator[bytes]:  # (a generator: sent chunked, no Content-Length)
        for i in range(0, len(big), 70_000):
            yield big[i : i + 70_000]

    with live.client() as client:
        r = client.post("/v1/repos/r/blobs", content=pieces(), headers=OCTETS)
        assert (r.status_code, r.json()) == (201, {"sha256": sha(big), "size": len(big)})
        assert stored(live, big)
        r = client.post("/v1/repos/r/blobs", content=big, headers=OCTETS)
        assert (r.status_code, r.json()) == (200, {"sha256": sha(big), "size": len(big)})
        small = b"a small one"
        r = client.post("/v1/repos/r/blobs", content=small, headers=OCTETS)
        assert (r.status_code, r.json()["sha256"]) == (201, sha(small))
        op = {"op": "write", "path": "f.bin", "blob": sha(big)}
        r = client.post("/v1/repos/r/commits", json={"operations": [op]})
        assert r.status_code == 201, r.text
        assert client.get("/v1/repos/r/files/f.bin").content == big

        r = client.post("/v1/repos/r/blobs", content=big + big, headers=OCTETS)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
        r = client.post("/v1/repos/nope/blobs", content=small, headers=OCTETS)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert not stored(live, big + big)


def test_a_client_that_leaves_mid_body_is_no_server_error(live: ServerProc, repo: str) -> None:
    """A mount killed (or unmounted) while its pack or commit was on the wire: the
    server logged 500. It is 499 (the client closed), stores nothing half, and goes on."""
    mark = live.mark()
    data = os_bytes(7, 3_000_000)
    for path in (f"/v1/repos/{repo}/blobs", f"/v1/repos/{repo}/commits"):
        post = RawPost(live, path)
        post.send(pack(named(data))[:1_000_000])
        post.sock.close()
    wait_until(lambda: len(live.requests(mark)) == 2, 10, "both logged")
    assert [(r.path.rsplit("/", 1)[-1], r.status) for r in live.requests(mark)] == [
        ("blobs", 499),
        ("commits", 499),
    ]
    assert not stored(live, data)
    with live.client() as client:  # (and the server goes on)
        r = client.post(f"/v1/repos/{repo}/blobs", content=pack(named(data)), headers=TAR)
        assert r.json() == {"stored": 1, "present": 0} and stored(live, data)
