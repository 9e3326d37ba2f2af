"""Oxen workspace uploads of gzip parts: inflated into spool files, never held whole.

The security probe: each gzip part was inflated into memory (and copied once more), so
8 requests at once, each a 250 KB part of 250 MiB, took the server to 3.7 GB; a
request's own cap (256 MiB unpacked) bounded none of that. Now a part unpacks in
pieces into its blob's spool: the server's memory stays about that of the bodies.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator

import httpx
import pytest
import xxhash

from support.server import ServerProc
from support.util import in_parallel

PARALLEL = 4
UNPACKED = 48 << 20  # each part: 48 MiB in about 48 KiB of gzip
GROWTH_LIMIT_KIB = 64 << 10  # the old server grew by about 2 x PARALLEL x UNPACKED


def content(i: int) -> bytes:
    return bytes(UNPACKED - 1) + bytes([i + 1])  # (distinct: no two blobs the same)


@pytest.fixture
def oxen(server: ServerProc) -> Iterator[httpx.Client]:
    server.create_repo("gz")
    with httpx.Client(
        base_url=f"{server.url}/api/repos/repomount/gz",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
    ) as c:
        yield c


def test_parallel_gzip_parts_unpack_in_bounded_memory(
    server: ServerProc, oxen: httpx.Client
) -> None:
    bodies = [gzip.compress(content(i), compresslevel=1) for i in range(PARALLEL)]
    assert all(len(b) < 1 << 20 for b in bodies)
    for i in range(PARALLEL):
        oxen.put("/workspaces", json={"workspace_id": f"w{i}", "branch_name": "main"})
    before = server.rss_peak_kib()
    statuses: list[int] = []

    def upload(i: int) -> None:
        part = ("file[]", (f"z{i}.bin", bodies[i], "application/gzip"))
        statuses.append(oxen.post(f"/workspaces/w{i}/files/", files=[part]).status_code)

    in_parallel(upload, PARALLEL)
    growth = server.rss_peak_kib() - before
    assert statuses == [200] * PARALLEL
    assert growth < GROWTH_LIMIT_KIB, f"the server's peak RSS grew by {growth} KiB"
    # Stored whole, under the right hashes (the xxh3 is computed as it unpacks too).
    changes = oxen.get("/workspaces/w1/changes").json()["staged"]["added_files"]["entries"]
    assert [e["hash"] for e in changes] == [format(xxhash.xxh3_128_intdigest(content(1)), "x")]
    merged = oxen.post("/workspaces/w1/merge/main", json={"message": "m", "author": "a"})
    assert merged.status_code == 200, merged.text
    with server.client() as native:
        stat = native.get("/v1/repos/gz/tree", params={"path": ""}).json()["entries"]
    assert [(e["path"], e["size"]) for e in stat] == [("z1.bin", UNPACKED)]
    assert stat[0]["version"] == hashlib.sha256(content(1)).hexdigest()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (gzip.compress(b"a") + gzip.compress(b"") + gzip.compress(b"b" * 300_000), 200),
        (gzip.compress(b"x" * 1000)[:-3], 400),  # cut short
        (b"not gzip at all", 400),
        (gzip.compress(b"y") + b"junk", 400),
    ],
    ids=["members", "cut-short", "not-gzip", "trailing-junk"],
)
def test_gzip_parts_members_and_bad_ones(
    server: ServerProc, oxen: httpx.Client, data: bytes, status: int
) -> None:
    oxen.put("/workspaces", json={"workspace_id": "w", "branch_name": "main"})
    part = ("file[]", ("f.bin", data, "application/gzip"))
    r = oxen.post("/workspaces/w/files/", files=[part])
    assert r.status_code == status, r.text
    if status == 200:
        merged = oxen.post("/workspaces/w/merge/main", json={"message": "m", "author": "a"})
        assert merged.status_code == 200, merged.text
        assert server.tree("gz") == {"f.bin": b"a" + b"b" * 300_000}
