"""Tree listings: direct children, recursive, pagination pinned to one head, history."""

from __future__ import annotations

import httpx

from support.server import ServerFactory, ServerProc, file_url


def entries(client: httpx.Client, repo: str, **params: str) -> list[tuple[str, str]]:
    r = client.get(f"/v1/repos/{repo}/tree", params=params)
    assert r.status_code == 200, r.text
    return [(e["path"], e["type"]) for e in r.json()["entries"]]


def test_listing_shapes(client: httpx.Client, repo: str) -> None:
    for path in ["b.txt", "a/x", "a/y/z", "a.txt"]:
        client.put(file_url(repo, path), content=path.encode()).raise_for_status()
    client.post(
        f"/v1/repos/{repo}/commits", json={"operations": [{"op": "mkdir", "path": "empty"}]}
    ).raise_for_status()

    assert entries(client, repo) == [
        ("a", "dir"),
        ("a.txt", "file"),
        ("b.txt", "file"),
        ("empty", "dir"),
    ]
    assert entries(client, repo, recursive="1") == [
        ("a", "dir"),
        ("a.txt", "file"),
        ("a/x", "file"),
        ("a/y", "dir"),
        ("a/y/z", "file"),
        ("b.txt", "file"),
        ("empty", "dir"),
    ]
    assert entries(client, repo, path="a") == [("a/x", "file"), ("a/y", "dir")]
    assert entries(client, repo, path="a", recursive="1") == [
        ("a/x", "file"),
        ("a/y", "dir"),
        ("a/y/z", "file"),
    ]
    assert entries(client, repo, path="empty") == []

    body = client.get(f"/v1/repos/{repo}/tree", params={"path": "a"}).json()
    assert body["head"] == "5"
    assert body["next_cursor"] is None
    x = body["entries"][0]
    assert x["size"] == 3
    assert len(x["version"]) == 64
    assert x["mode"] == 0o644
    assert isinstance(x["mtime"], float)
    y = body["entries"][1]
    assert (y["size"], y["version"], y["mode"]) == (0, None, 0o755)


def test_listing_errors(client: httpx.Client, repo: str) -> None:
    client.put(file_url(repo, "f"), content=b"x")
    for params, status in [
        ({"path": "f"}, 404),
        ({"path": "nope"}, 404),
        ({"path": "a/../b"}, 422),
        ({"limit": "0"}, 422),
        ({"limit": "10001"}, 422),
        ({"recursive": "maybe"}, 422),
        ({"cursor": "!!!"}, 422),
        ({"at": "x"}, 422),
        ({"at": "99"}, 404),
    ]:
        r = client.get(f"/v1/repos/{repo}/tree", params=params)
        assert r.status_code == status, params
        assert r.headers["X-Repo-Head"] == "1"


def test_pages_are_consistent_while_commits_land(client: httpx.Client, repo: str) -> None:
    ops = [{"op": "write", "path": f"f{i:03}", "content_b64": ""} for i in range(250)]
    client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    seen: list[str] = []
    params = {"limit": "100", "recursive": "1"}
    pages = 0
    while True:
        body = client.get(f"/v1/repos/{repo}/tree", params=params).json()
        assert body["head"] == "1"
        seen += [e["path"] for e in body["entries"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
        # Commits between pages do not show in this listing.
        client.delete(file_url(repo, seen[-1])).raise_for_status()
        client.put(file_url(repo, "zzz-new"), content=b"x").raise_for_status()
    assert pages == 3
    assert seen == [f"f{i:03}" for i in range(250)]
    assert len(entries(client, repo, limit="10000")) == 250 - 2 + 1


def test_listing_at_an_older_head(live: ServerProc, client: httpx.Client, repo: str) -> None:
    live.put(repo, "a", b"1")  # head 1
    live.put(repo, "b", b"2")  # head 2
    client.delete(file_url(repo, "a"))  # head 3
    assert entries(client, repo) == [("b", "file")]
    assert entries(client, repo, at="2") == [("a", "file"), ("b", "file")]
    assert entries(client, repo, at="1") == [("a", "file")]
    assert entries(client, repo, at="0") == []
    r = client.get(file_url(repo, "a"), params={"at": "1"})
    assert (r.status_code, r.content, r.headers["X-Repo-Head"]) == (200, b"1", "1")
    assert client.get(file_url(repo, "b"), params={"at": "1"}).status_code == 404


def test_at_older_than_kept_history_is_410(server_factory: ServerFactory) -> None:
    live = server_factory(["--history", "2"])
    live.create_repo("r")
    for i in range(5):
        live.put("r", "f", str(i).encode())  # heads 1..5
    with live.client() as c:
        assert c.get(file_url("r", "f"), params={"at": "3"}).content == b"2"
        for url in [file_url("r", "f"), "/v1/repos/r/tree"]:
            r = c.get(url, params={"at": "2"})
            assert r.status_code == 410
            assert r.json()["error"]["code"] == "gone"


def test_entry_fields_and_the_edges_of_a_page(client: httpx.Client, repo: str) -> None:
    """(Pages are written as JSON by SQLite: server/sqlite_tree.py.) Each entry's
    `mtime` is its `mtime_ns` to the microsecond, only a symlink carries `target`, a
    name out of ASCII comes back as it went, and a page that ends at the last entry
    names no next one, in the body or in the X-Next-Cursor header."""
    ops = [
        {"op": "write", "path": "a", "content_b64": "", "mtime_ns": 1_700_000_000_123_456_789},
        {"op": "write", "path": "b \u00e9\u4e2d", "content_b64": "", "mtime_ns": -1_500_000_000},
        {"op": "symlink", "path": "c", "target": 'a "quoted" \\ name'},
    ]
    client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    r = client.get(f"/v1/repos/{repo}/tree", params={"limit": "2"})
    body = r.json()
    assert [e["path"] for e in body["entries"]] == ["a", "b \u00e9\u4e2d"]
    assert r.headers["X-Next-Cursor"] == body["next_cursor"] is not None
    a, b = body["entries"]
    assert a["mtime_ns"] == 1_700_000_000_123_456_789 and a["mtime"] == 1700000000.123457
    assert b["mtime_ns"] == -1_500_000_000 and b["mtime"] == -1.5
    assert "target" not in a and "target" not in b
    r = client.get(f"/v1/repos/{repo}/tree", params={"limit": "2", "cursor": body["next_cursor"]})
    last = r.json()
    assert last["entries"][0]["target"] == 'a "quoted" \\ name'
    assert last["next_cursor"] is None and "X-Next-Cursor" not in r.headers
    exact = client.get(f"/v1/repos/{repo}/tree", params={"limit": "3"})
    assert len(exact.json()["entries"]) == 3
    assert exact.json()["next_cursor"] is None and "X-Next-Cursor" not in exact.headers
