"""Modification times on the native protocol (issue 16, finding 4: `rsync -a` into a mount
re-sent every file, since the server stamped each write with its commit time).

A write may carry `mtime_ns` (PUT: `X-Repomount-Mtime-Ns`); the server keeps it to the
nanosecond and lists it back (`mtime_ns` in tree entries, the header on GET and HEAD); a
write without one gets the commit's time; a rename keeps it. A write naming the blob of
the version it expects sets a new time without uploading anything, and is a conflict
(not `unknown_blob`) when the file moved on.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import Write
from server.test_commits import b64, commit
from support.server import file_url
from support.util import sha

# 2001-09-09T01:46:40.123456789Z: more digits than a double holds as seconds
MTIME_NS = 1_000_000_000_123_456_789


def listed(client: httpx.Client, repo: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"})
    r.raise_for_status()
    return {e["path"]: e for e in r.json()["entries"]}


def head(client: httpx.Client, repo: str) -> str:
    return str(client.get(f"/v1/repos/{repo}").json()["head"])


def test_a_write_keeps_its_mtime_to_the_nanosecond(client: httpx.Client, repo: str) -> None:
    ops = [{"op": "write", "path": "d/a.txt", "content_b64": b64(b"a"), "mtime_ns": MTIME_NS}]
    assert commit(client, repo, ops).status_code == 201
    entry = listed(client, repo)["d/a.txt"]
    assert entry["mtime_ns"] == MTIME_NS
    assert entry["mtime"] == pytest.approx(MTIME_NS / 1e9)
    for method in ("GET", "HEAD"):
        r = client.request(method, file_url(repo, "d/a.txt"))
        assert r.headers["X-Repomount-Mtime-Ns"] == str(MTIME_NS)
        assert r.headers["Last-Modified"] == "Sun, 09 Sep 2001 01:46:40 GMT"


def test_without_one_a_write_gets_the_commit_time(client: httpx.Client, repo: str) -> None:
    before = time.time_ns()
    ops = [{"op": "write", "path": "a.txt", "content_b64": b64(b"a"), "mtime_ns": MTIME_NS}]
    assert commit(client, repo, ops).status_code == 201
    ops = [{"op": "write", "path": "a.txt", "content_b64": b64(b"b")}]  # not kept from before
    assert commit(client, repo, ops).status_code == 201
    after = time.time_ns()
    entries = listed(client, repo)
    assert before <= entries["a.txt"]["mtime_ns"] <= after


def test_a_rename_keeps_the_mtime(client: httpx.Client, repo: str) -> None:
    ops = [{"op": "write", "path": "tmp", "content_b64": b64(b"x"), "mtime_ns": MTIME_NS}]
    assert commit(client, repo, ops).status_code == 201
    r = commit(client, repo, [{"op": "rename", "from": "tmp", "to": "d/final"}])
    assert r.status_code == 201, r.text
    assert listed(client, repo)["d/final"]["mtime_ns"] == MTIME_NS


def test_put_takes_the_mtime_in_a_header(client: httpx.Client, repo: str) -> None:
    url = file_url(repo, "p.txt")
    r = client.put(url, content=b"p", headers={"X-Repomount-Mtime-Ns": str(-MTIME_NS)})
    assert r.status_code == 201, r.text
    assert listed(client, repo)["p.txt"]["mtime_ns"] == -MTIME_NS  # before 1970 is a time too
    past_2242 = str((1 << 33) * 10**9 + 1)  # (a listing could not show it)
    for bad in ("1.5", "abc", "", "9" * 30, str(2**63), past_2242, "-" + past_2242):
        r = client.put(url, content=b"q", headers={"X-Repomount-Mtime-Ns": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    assert client.get(url).content == b"p"


def test_a_new_mtime_for_the_same_content(client: httpx.Client, repo: str) -> None:
    data = b"big enough to be worth not sending again" * 1000
    assert client.put(f"/v1/repos/{repo}/blobs/{sha(data)}", content=data).status_code == 201
    ops = [{"op": "write", "path": "f", "blob": sha(data), "expect": "absent"}]
    assert commit(client, repo, ops).status_code == 201
    at = head(client, repo)
    touch = {"op": "write", "path": "f", "blob": sha(data), "expect": sha(data)}
    r = commit(client, repo, [{**touch, "mtime_ns": MTIME_NS, "mode": 0o600}])
    assert r.status_code == 201, r.text
    assert r.json()["results"] == [{"path": "f", "version": sha(data)}]
    entry = listed(client, repo)["f"]
    assert (entry["version"], entry["mtime_ns"], entry["mode"]) == (sha(data), MTIME_NS, 0o600)
    feed = client.get(f"/v1/repos/{repo}/changes", params={"since": at}).json()["changes"]
    assert [(c["path"], c["op"], c["version"]) for c in feed] == [("f", "write", sha(data))]


def test_naming_the_blob_of_a_version_that_moved_on_is_a_conflict(
    client: httpx.Client, repo: str
) -> None:
    """The precondition is checked before the blob: a client that sends no content for a
    new time learns of the conflict even when that content is gone from the server."""
    r = commit(client, repo, [{"op": "write", "path": "f", "content_b64": b64(b"new")}])
    assert r.status_code == 201, r.text
    never = sha(b"a version whose blob the server does not have")
    touch = {"op": "write", "path": "f", "blob": never, "expect": never, "mtime_ns": MTIME_NS}
    r = commit(client, repo, [touch])
    assert r.status_code == 409, r.text
    assert r.json()["error"]["conflicts"] == [
        {"index": 0, "path": "f", "expected": never, "current": sha(b"new")}
    ]


PAST_2242 = (1 << 33) * 10**9 + 1  # nanoseconds: a time no listing could show


@pytest.mark.parametrize(
    "bad", [1.5, "1000", True, None, 2**63, -(2**63), PAST_2242, -PAST_2242, [1]]
)
def test_a_bad_mtime_is_refused_and_changes_nothing(
    client: httpx.Client, repo: str, bad: object
) -> None:
    ops: list[dict[str, Any]] = [
        {"op": "mkdir", "path": "d"},
        {"op": "write", "path": "a.txt", "content_b64": b64(b"a"), "mtime_ns": bad},
    ]
    if bad is None:  # null is "not given"
        assert commit(client, repo, ops).status_code == 201
        return
    r = commit(client, repo, ops)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["index"]) == ("invalid_request", 1)
    assert "mtime_ns" in error["message"]
    assert head(client, repo) == "0"


def test_an_idempotent_replay_is_bound_to_the_mtime(client: httpx.Client, repo: str) -> None:
    op = {"op": "write", "path": "a", "content_b64": b64(b"a"), "mtime_ns": MTIME_NS}
    first = commit(client, repo, [op], idempotency_key="k1")
    assert first.status_code == 201
    again = commit(client, repo, [op], idempotency_key="k1")
    assert (again.status_code, again.json()) == (201, first.json())
    other = commit(client, repo, [{**op, "mtime_ns": MTIME_NS + 1}], idempotency_key="k1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert listed(client, repo)["a"]["mtime_ns"] == MTIME_NS


def test_a_data_directory_from_before_exact_times_is_migrated(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.create_repo("r")
    spool = store.new_spool()
    spool.write(b"old")
    store.add_blob(spool)
    store.commit("r", [Write("f", spool.sha256)])
    store.close()
    db = sqlite3.connect(tmp_path / "meta.sqlite3", isolation_level=None)
    db.execute("ALTER TABLE entries DROP COLUMN mtime_ns")
    db.execute("UPDATE entries SET mtime = 1700000000.5")
    db.close()

    store = SqliteStore(tmp_path)
    try:
        _, entry = store.stat("r", "f")
        assert entry is not None and entry.mtime_ns == 1_700_000_000_500_000_000
        store.commit("r", [Write("f", spool.sha256, expect=spool.sha256, mtime_ns=MTIME_NS)])
        _, entry = store.stat("r", "f")
        assert entry is not None and entry.mtime_ns == MTIME_NS
    finally:
        store.close()
