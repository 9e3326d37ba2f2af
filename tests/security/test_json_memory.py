"""A JSON body's memory: what parsing it would take is bounded before it is parsed, and
what was made of it is freed with its answer (server/body.py, server/bodybudget.py).

A body of empty objects takes 28 times its size once parsed: a 64 MiB commit of `{}`s
raised the server's peak RSS from 58 MB to 1.8 GB, three at once to 5.3 GB. And a
refused request's traceback kept what it parsed until the garbage collector's next full
pass: 1.7 GB stayed resident after that 64 MiB body was refused.
"""

from __future__ import annotations

import json
import time

import pytest

from support.server import ServerProc

MiB = 1 << 20
BOMB_BYTES = 16 * MiB  # parsed, its `{}`s would take ~450 MB


def _bomb(key: str, item: bytes) -> bytes:
    head = b'{"message":"m","author":"a","' + key.encode() + b'":['
    count = (BOMB_BYTES - len(head)) // (len(item) + 1)
    return head + b",".join([item] * count) + b"]}"


@pytest.mark.parametrize("item", [b"{}", b"[]", b'{"a":1}', b'"ab"'])
def test_a_commit_of_tiny_values_is_413_before_it_is_parsed(
    server: ServerProc, item: bytes
) -> None:
    server.create_repo("r")
    before = server.rss_peak_kib()
    with server.client() as c:
        r = c.post("/v1/repos/r/commits", content=_bomb("operations", item))
    assert r.status_code == 413, r.text
    assert "MiB of memory to parse" in r.json()["error"]["message"]
    # The body itself is read (16 MiB, and a copy); its parse would be ~10 times that.
    assert server.rss_peak_kib() - before < 100 * 1024


def test_an_oxen_body_of_tiny_values_is_413_before_it_is_parsed(server: ServerProc) -> None:
    server.create_repo("r")
    before = server.rss_peak_kib()
    with server.client() as c:
        r = c.put("/api/repos/repomount/r/workspaces", content=_bomb("paths", b"{}"))
    assert r.status_code == 413, r.text
    assert server.rss_peak_kib() - before < 100 * 1024


def test_a_large_commit_of_real_operations_is_still_parsed(live: ServerProc) -> None:
    """100,000 operations (the most a commit takes) are well within the bound."""
    live.create_repo("bigcommit")
    ops = [{"op": "mkdir", "path": f"d{i // 1000}/e{i}"} for i in range(100_000)]
    with live.client() as c:
        r = c.post("/v1/repos/bigcommit/commits", json={"operations": ops}, timeout=120)
    assert r.status_code == 201, r.text[:300]


def test_what_a_refused_commit_parsed_is_freed_with_its_answer(server: ServerProc) -> None:
    server.create_repo("r")
    ops = [{"op": "delete", "path": f"d{i % 100}/a-file-named-{i:08d}.txt"} for i in range(100_001)]
    body = json.dumps({"message": "m", "author": "a", "operations": ops}).encode()
    before = server.rss_kib()
    with server.client() as c:
        r = c.post("/v1/repos/r/commits", content=body, timeout=120)
        assert r.status_code == 422, r.text[:300]  # (at most 100,000 operations)
    assert server.rss_peak_kib() - before > 40 * 1024  # its parse took this much ...
    # ... and gave it back once the answer was sent
    deadline = time.monotonic() + 10
    while server.rss_kib() - before > 25 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.rss_kib() - before < 25 * 1024
