"""The atomic batch commit: order, all-or-none, per-operation preconditions, directories."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
from typing import Any

import httpx
import pytest

from repomount.server.native import _what
from repomount.server.native_requests import fingerprint
from repomount.server.store import Delete, Mkdir, Operation, Rename, Symlink, Write
from support.server import ServerProc, file_url
from support.util import sha


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def commit(
    client: httpx.Client, repo: str, ops: list[dict[str, Any]], **extra: Any
) -> httpx.Response:
    return client.post(f"/v1/repos/{repo}/commits", json={"operations": ops, **extra})


def test_mixed_batch(live: ServerProc, client: httpx.Client, repo: str) -> None:
    live.put(repo, "old.txt", b"old")
    live.put(repo, "x.txt", b"x")
    blob = b"uploaded ahead"
    assert client.put(f"/v1/repos/{repo}/blobs/{sha(blob)}", content=blob).status_code == 201
    r = commit(
        client,
        repo,
        [
            {"op": "write", "path": "src/a.py", "blob": sha(blob)},
            {
                "op": "write",
                "path": "src/new.py",
                "content_b64": b64(b"new"),
                "expect": "absent",
                "mode": 0o755,
            },
            {"op": "delete", "path": "old.txt", "expect": sha(b"old")},
            {"op": "rename", "from": "x.txt", "to": "y/z.txt", "expect": sha(b"x")},
            {"op": "mkdir", "path": "empty/dir"},
        ],
        base="2",
        message="five changes",
        author="me@host",
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "head": "3",
        "results": [
            {"path": "src/a.py", "version": sha(blob)},
            {"path": "src/new.py", "version": sha(b"new")},
            {"path": "old.txt", "version": None},
            {"path": "y/z.txt", "version": sha(b"x")},
            {"path": "empty/dir", "version": None},
        ],
    }
    assert live.tree(repo) == {"src/a.py": blob, "src/new.py": b"new", "y/z.txt": b"x"}
    assert client.head(file_url(repo, "src/new.py")).headers["X-Repomount-Mode"] == "755"
    listing = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"}).json()
    assert {e["path"] for e in listing["entries"] if e["type"] == "dir"} == {
        "src",
        "y",
        "empty",
        "empty/dir",
    }


def test_operations_see_earlier_ones(live: ServerProc, client: httpx.Client, repo: str) -> None:
    r = commit(
        client,
        repo,
        [
            {"op": "write", "path": "a", "content_b64": b64(b"1"), "expect": "absent"},
            {"op": "write", "path": "a", "content_b64": b64(b"2"), "expect": sha(b"1")},
            {"op": "rename", "from": "a", "to": "b", "expect": sha(b"2")},
            {"op": "write", "path": "a", "content_b64": b64(b"3"), "expect": "absent"},
        ],
    )
    assert r.status_code == 201, r.text
    assert live.tree(repo) == {"a": b"3", "b": b"2"}


def test_third_op_failing_changes_nothing(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    live.put(repo, "keep", b"k")
    v_keep = live.put(repo, "keep", b"k2")
    before_tree = live.tree(repo)
    before_listing = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"}).json()
    r = commit(
        client,
        repo,
        [
            {"op": "write", "path": "n1", "content_b64": b64(b"1")},
            {"op": "mkdir", "path": "d"},
            {"op": "write", "path": "keep", "content_b64": b64(b"3"), "expect": sha(b"k")},
            {"op": "delete", "path": "keep", "expect": "absent"},
        ],
    )
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "conflict"
    assert error["conflicts"] == [
        {"index": 2, "path": "keep", "expected": sha(b"k"), "current": v_keep},
        {"index": 3, "path": "keep", "expected": "absent", "current": sha(b"3")},
    ]
    assert r.headers["X-Repo-Head"] == "2"
    assert client.get(f"/v1/repos/{repo}").json()["head"] == "2"
    assert live.tree(repo) == before_tree
    after = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"}).json()
    assert after == before_listing
    feed = client.get(f"/v1/repos/{repo}/changes", params={"since": "2"}).json()
    assert feed == {"head": "2", "changes": []}


def test_structural_errors_roll_back(live: ServerProc, client: httpx.Client, repo: str) -> None:
    live.put(repo, "f", b"x")
    live.put(repo, "d/g", b"y")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"op": "write", "path": "f/under", "content_b64": ""}, 409, "path_conflict"),
        ({"op": "write", "path": "d", "content_b64": ""}, 409, "path_conflict"),
        ({"op": "mkdir", "path": "f"}, 409, "path_conflict"),
        ({"op": "delete", "path": "d"}, 409, "directory_not_empty"),
        ({"op": "delete", "path": "nope"}, 404, "not_found"),
        ({"op": "rename", "from": "nope", "to": "x"}, 404, "not_found"),
        ({"op": "rename", "from": "d", "to": "d/e"}, 422, "invalid_request"),
        ({"op": "rename", "from": "f", "to": "d"}, 409, "path_conflict"),
        ({"op": "write", "path": "w", "blob": "0" * 64}, 422, "unknown_blob"),
        ({"op": "write", "path": "w", "blob": "0" * 64, "content_b64": ""}, 422, "invalid_request"),
        ({"op": "write", "path": "w", "content_b64": "%%%"}, 422, "invalid_request"),
        ({"op": "write", "path": "w", "content_b64": "", "mode": "644"}, 422, "invalid_request"),
        ({"op": "chmod", "path": "f"}, 422, "invalid_request"),
        ({"op": "delete", "path": "f", "expect": 5}, 422, "invalid_request"),
    ]
    for op, status, code in cases:
        r = commit(client, repo, [{"op": "write", "path": "first", "content_b64": ""}, op])
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), op
        assert r.json()["error"]["index"] == 1
    assert client.get(f"/v1/repos/{repo}").json()["head"] == "2"
    assert live.tree(repo) == {"f": b"x", "d/g": b"y"}


def test_malformed_commit_bodies(client: httpx.Client, repo: str) -> None:
    url = f"/v1/repos/{repo}/commits"
    assert client.post(url, content=b"{").status_code == 400
    assert client.post(url, json={"operations": []}).status_code == 422
    assert client.post(url, json={"operations": "x"}).status_code == 422
    assert client.post(url, json={}).status_code == 422
    r = commit(client, repo, [{"op": "mkdir", "path": "d"}], message=5)
    assert r.status_code == 422


def test_directory_semantics(live: ServerProc, client: httpx.Client, repo: str) -> None:
    live.put(repo, "src/a/1", b"1")
    live.put(repo, "src/a/2", b"2")
    live.put(repo, "src/b", b"b")
    # mkdir of an existing directory is a no-op success.
    assert commit(client, repo, [{"op": "mkdir", "path": "src"}]).status_code == 201
    # Renaming a directory moves its whole subtree.
    r = commit(client, repo, [{"op": "rename", "from": "src", "to": "lib/src"}])
    assert r.status_code == 201, r.text
    assert live.tree(repo) == {"lib/src/a/1": b"1", "lib/src/a/2": b"2", "lib/src/b": b"b"}
    # Deleting the last file leaves the directory; an empty directory can be deleted.
    client.delete(file_url(repo, "lib/src/b")).raise_for_status()
    r = commit(
        client,
        repo,
        [
            {"op": "delete", "path": "lib/src/a/1"},
            {"op": "delete", "path": "lib/src/a/2"},
            {"op": "delete", "path": "lib/src/a"},
        ],
    )
    assert r.status_code == 201, r.text
    listing = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"}).json()
    assert [e["path"] for e in listing["entries"]] == ["lib", "lib/src"]
    # A file rename replaces the target (as POSIX rename) unless expect_to says otherwise.
    live.put(repo, "p", b"p")
    live.put(repo, "q", b"q")
    r = commit(client, repo, [{"op": "rename", "from": "p", "to": "q", "expect_to": "absent"}])
    assert r.status_code == 409
    assert r.json()["error"]["conflicts"][0]["current"] == sha(b"q")
    assert commit(client, repo, [{"op": "rename", "from": "p", "to": "q"}]).status_code == 201
    assert live.get(repo, "q") == b"p"


def test_batch_of_1000_writes_in_one_request(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    mark = live.mark()
    ops = [
        {
            "op": "write",
            "path": f"dir{i % 10}/file{i:04}.txt",
            "content_b64": b64(f"content {i}".encode()),
        }
        for i in range(1000)
    ]
    r = commit(client, repo, ops)
    assert r.status_code == 201, r.text
    assert r.json()["head"] == "1"
    assert len(r.json()["results"]) == 1000
    assert [(x.method, x.status) for x in live.requests(mark)] == [("POST", 201)]
    tree = live.tree(repo)
    assert len(tree) == 1000
    assert tree["dir7/file0997.txt"] == b"content 997"
    info = client.get(f"/v1/repos/{repo}").json()
    assert info["file_count"] == 1000


def test_idempotent_commit(client: httpx.Client, repo: str) -> None:
    ops = [{"op": "write", "path": "a", "content_b64": b64(b"1"), "expect": "absent"}]
    first = commit(client, repo, ops, idempotency_key="c-1")
    assert first.status_code == 201
    again = commit(client, repo, ops, idempotency_key="c-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert client.get(f"/v1/repos/{repo}").json()["head"] == "1"
    other = [{"op": "write", "path": "a", "content_b64": b64(b"2")}]
    r = commit(client, repo, other, idempotency_key="c-1")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_conflict"


def test_a_replayed_commit_says_so(client: httpx.Client, repo: str) -> None:
    """A replay answers the first head, older than the repo's now when another commit
    landed in between: `Idempotent-Replayed` tells a client not to take it for the
    latest (a mount that did showed no file it had just replayed)."""
    ops = [{"op": "write", "path": "a", "content_b64": b64(b"1"), "expect": "absent"}]
    first = commit(client, repo, ops, idempotency_key="c-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    other = [{"op": "write", "path": "a", "content_b64": b64(b"2"), "expect": sha(b"1")}]
    assert commit(client, repo, other).headers["X-Repo-Head"] == "2"
    again = commit(client, repo, ops, idempotency_key="c-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Repo-Head"] == "1"  # (the first answer's)


def test_a_replay_after_a_crash_may_carry_the_same_ops_differently(
    client: httpx.Client, repo: str
) -> None:
    """A mount killed after its commit landed replays it with the same key, but names
    the head it sees now as base, and may send as a blob what it sent inline: the same
    commit, so a replay, not 409 "a different request" (which held the changes, found
    by tests/security/test_crash_recovery.py)."""
    ops = [{"op": "write", "path": "a", "content_b64": b64(b"1"), "expect": "absent"}]
    first = commit(client, repo, ops, idempotency_key="c-1")
    assert first.status_code == 201
    as_blob = [{**ops[0], "blob": sha(b"1")}]
    del as_blob[0]["content_b64"]
    again = commit(client, repo, as_blob, idempotency_key="c-1", base=first.json()["head"])
    assert (again.status_code, again.json()) == (201, first.json())


def test_more_inline_contents_than_the_descriptor_limit(server: ServerProc) -> None:
    """The server held a spool file open for every inline content of a commit at once:
    a commit with more of them than its descriptor limit failed with a 500 (found by
    the benchmark's seeding, 20,000 files in one commit)."""
    assert server.proc is not None
    subprocess.run(["prlimit", f"--pid={server.proc.pid}", "--nofile=200:200"], check=True)
    server.create_repo("many")
    ops = [
        {"op": "write", "path": f"d/f{i}", "content_b64": base64.b64encode(b"%d" % i).decode()}
        for i in range(600)
    ]
    with server.client() as c:
        r = c.post("/v1/repos/many/commits", json={"operations": ops}, timeout=120)
        assert r.status_code == 201, r.text
    tree = server.tree("many")
    assert len(tree) == 600 and tree["d/f599"] == b"599"


# One of each kind of operation, with and without its optional fields.
EVERY_KIND: list[Operation] = [
    Write("a.txt", "0" * 64, expect="absent", mode=0o644, mtime_ns=1),
    Write("a.txt", "0" * 64),
    Delete("a.txt", expect="v"),
    Rename("a", "b", expect="v", expect_to="absent"),
    Mkdir("d"),
    Symlink("l", "a.txt", expect="absent"),
]


@pytest.mark.parametrize("op", EVERY_KIND)
def test_an_idempotency_fingerprint_is_what_it_always_was(op: Operation) -> None:
    """A key stored by an older server must still match a replay: what an operation
    does is fingerprinted exactly as dataclasses.astuple saw it."""
    old = [type(op).__name__, *dataclasses.astuple(op)]
    if isinstance(op, Write) and op.mtime_ns is None:
        old.pop()
    assert _what(op) == old


def test_the_fingerprint_of_a_commit_is_pinned() -> None:
    """The SHA-256 an idempotency key is bound to, as servers have stored it: a change
    to an operation's fields (added, renamed, reordered) that would stop a stored key
    from replaying fails here."""
    assert (
        fingerprint([_what(op) for op in EVERY_KIND])
        == "e707d3730080b350df1bc115ccb6f0af72a8a57ab10da483f41780e91fd9f8f8"
    )


def _tree(client: httpx.Client, repo: str) -> dict[str, str]:
    r = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "true"})
    assert r.status_code == 200, r.text
    return {e["path"]: e["type"] for e in r.json()["entries"]}


def test_a_directory_deleted_in_a_commit_is_made_again_by_a_later_write(
    client: httpx.Client, repo: str
) -> None:
    """A commit remembers the directories it found or made; a delete must make it look
    again (the directory is gone, and a write below it makes it anew)."""
    ops = [
        {"op": "write", "path": "d/f", "content_b64": b64(b"1")},
        {"op": "delete", "path": "d/f"},
        {"op": "delete", "path": "d"},
        {"op": "write", "path": "d/g", "content_b64": b64(b"2")},
    ]
    assert commit(client, repo, ops).status_code == 201
    assert _tree(client, repo) == {"d": "dir", "d/g": "file"}


def test_a_directory_renamed_away_in_a_commit_is_made_again_by_a_later_write(
    client: httpx.Client, repo: str
) -> None:
    ops = [
        {"op": "write", "path": "a/x", "content_b64": b64(b"1")},
        {"op": "rename", "from": "a", "to": "b"},
        {"op": "write", "path": "a/y", "content_b64": b64(b"2")},
    ]
    assert commit(client, repo, ops).status_code == 201
    assert _tree(client, repo) == {"a": "dir", "a/y": "file", "b": "dir", "b/x": "file"}


def test_a_file_where_a_remembered_directory_was_is_still_refused(
    client: httpx.Client, repo: str
) -> None:
    ops = [
        {"op": "write", "path": "a/x", "content_b64": b64(b"1")},
        {"op": "write", "path": "a", "content_b64": b64(b"2")},
    ]
    r = commit(client, repo, ops)
    assert r.status_code == 409, r.text
    assert _tree(client, repo) == {}
