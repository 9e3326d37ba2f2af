"""Symbolic links: entries of type "symlink" whose content is their target, never followed."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from repomount.server.sqlite_schema import OLD_ENTRY_COLUMNS
from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import InvalidRequest, Symlink, Write
from support.server import ServerProc, file_url
from support.util import sha


def link_version(target: str) -> str:
    return sha(target.encode())


def commit(client: httpx.Client, repo: str, ops: list[dict[str, Any]]) -> httpx.Response:
    return client.post(f"/v1/repos/{repo}/commits", json={"operations": ops})


def symlink(path: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"op": "symlink", "path": path, "target": target, **extra}


def entries(client: httpx.Client, repo: str, **params: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1", **params})
    r.raise_for_status()
    return {e["path"]: e for e in r.json()["entries"]}


def head_of(client: httpx.Client, repo: str) -> str:
    return str(client.get(f"/v1/repos/{repo}").json()["head"])


def test_create_list_get_head(live: ServerProc, client: httpx.Client, repo: str) -> None:
    live.put(repo, "real.txt", b"real")
    targets = {
        "a/b/rel": "../../real.txt",
        "abs": "/etc/passwd",
        "dangling": "no/such/thing",
        "uni": "ünïcødé → ziel",
        "to-dir": "a",
    }
    r = commit(client, repo, [symlink(p, t, expect="absent") for p, t in targets.items()])
    assert r.status_code == 201, r.text
    assert r.json() == {
        "head": "2",
        "results": [{"path": p, "version": link_version(t)} for p, t in targets.items()],
    }

    listed = entries(client, repo)
    assert listed["a"]["type"] == "dir" and listed["a/b"]["type"] == "dir"  # made as for write
    for path, target in targets.items():
        entry = listed[path]
        assert entry == {
            "path": path,
            "type": "symlink",
            "size": len(target.encode()),
            "version": link_version(target),
            "mtime": entry["mtime"],
            "mtime_ns": entry["mtime_ns"],
            "mode": 0o777,
            "target": target,
        }
    assert "target" not in listed["real.txt"] and "target" not in listed["a"]
    children = client.get(f"/v1/repos/{repo}/tree", params={"path": "a/b"}).json()["entries"]
    assert [(e["path"], e["type"], e["target"]) for e in children] == [
        ("a/b/rel", "symlink", "../../real.txt")
    ]
    # A symlink is no directory, even when its target is one.
    assert client.get(f"/v1/repos/{repo}/tree", params={"path": "to-dir"}).status_code == 404

    for path, target in targets.items():
        data = target.encode()
        r = client.get(file_url(repo, path))
        assert r.status_code == 200
        assert r.content == data  # the target itself, never what it points to
        assert r.headers["X-Repomount-Type"] == "symlink"
        assert r.headers["ETag"] == f'"{link_version(target)}"'
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["X-Repomount-Mode"] == "777"
        assert r.headers["X-Repo-Head"] == "2"
        h = client.head(file_url(repo, path))
        assert h.status_code == 200 and h.content == b""
        for name in ("X-Repomount-Type", "ETag", "Content-Length", "X-Repomount-Mode"):
            assert h.headers[name] == r.headers[name]
    assert client.get(file_url(repo, "real.txt")).headers["X-Repomount-Type"] == "file"
    assert client.head(file_url(repo, "real.txt")).headers["X-Repomount-Type"] == "file"
    # Conditional and ranged GETs work on the target as on a file's content.
    url, version = file_url(repo, "abs"), link_version("/etc/passwd")
    assert client.get(url, headers={"If-None-Match": f'"{version}"'}).status_code == 304
    assert client.get(url, headers={"If-Match": '"0"'}).status_code == 412
    ranged = client.get(url, headers={"Range": "bytes=1-3"})
    assert (ranged.status_code, ranged.content) == (206, b"etc")
    # Nothing below a symlink: not readable, not writable.
    assert client.get(file_url(repo, "to-dir/x")).status_code == 404


def test_replace_with_expect(live: ServerProc, client: httpx.Client, repo: str) -> None:
    v1, v2 = link_version("one"), link_version("two")
    assert commit(client, repo, [symlink("l", "one")]).status_code == 201  # no expect
    # expect "absent" on an existing link, or a stale version: 409 conflict, nothing applied.
    for expect in ("absent", link_version("other")):
        r = commit(client, repo, [symlink("l", "two", expect=expect)])
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "conflict"
        assert r.json()["error"]["conflicts"] == [
            {"index": 0, "path": "l", "expected": expect, "current": v1}
        ]
    r = commit(client, repo, [symlink("l", "two", expect=v1)])
    assert r.status_code == 201 and r.json()["results"] == [{"path": "l", "version": v2}]
    r = commit(client, repo, [symlink("l", "three", expect="*")])
    assert r.status_code == 201
    assert entries(client, repo)["l"]["target"] == "three"
    # A symlink over a file, per expect, and a file over a symlink.
    vf = live.put(repo, "f", b"content")
    r = commit(client, repo, [symlink("f", "x", expect="absent")])
    assert r.json()["error"]["conflicts"][0]["current"] == vf
    assert commit(client, repo, [symlink("f", "x", expect=vf)]).status_code == 201
    assert client.get(file_url(repo, "f")).headers["X-Repomount-Type"] == "symlink"
    r = commit(client, repo, [{"op": "write", "path": "f", "content_b64": "", "expect": vf}])
    assert r.json()["error"]["conflicts"][0]["current"] == link_version("x")
    # PUT over a symlink: If-Match compares with the link's version (412 as for a file).
    url = file_url(repo, "f")
    put = client.put(url, content=b"file again", headers={"If-None-Match": "*"})
    assert put.status_code == 412 and put.json()["error"]["current_version"] == link_version("x")
    put = client.put(url, content=b"file again", headers={"If-Match": f'"{vf}"'})
    assert put.status_code == 412 and put.json()["error"]["current_version"] == link_version("x")
    x = link_version("x")
    put = client.put(url, content=b"file again", headers={"If-Match": f'"{x}"'})
    assert put.status_code == 200, put.text
    got = client.get(url)
    assert got.content == b"file again" and got.headers["X-Repomount-Type"] == "file"
    assert got.headers["X-Repomount-Mode"] == "644"  # not the link's 777
    assert "target" not in entries(client, repo)["f"]
    # A batch write replaces a link the same way.
    r = commit(client, repo, [{"op": "write", "path": "l", "content_b64": "aGk=", "expect": "*"}])
    assert r.status_code == 201
    assert entries(client, repo)["l"]["type"] == "file"
    assert client.get(file_url(repo, "l")).content == b"hi"


def test_symlinks_and_directories_conflict(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    live.put(repo, "d/f", b"f")
    assert commit(client, repo, [{"op": "mkdir", "path": "empty"}]).status_code == 201
    assert commit(client, repo, [symlink("l", "d")]).status_code == 201
    head = head_of(client, repo)
    cases = [
        [symlink("d", "x")],  # over a directory
        [symlink("empty", "x", expect="absent")],  # even an empty one (before expect)
        [symlink("l/below", "x")],  # below a symlink: never followed
        [{"op": "write", "path": "l/f", "content_b64": ""}],
        [{"op": "mkdir", "path": "l"}],
        [{"op": "mkdir", "path": "l/sub"}],
        [{"op": "rename", "from": "l", "to": "empty"}],  # a link onto a directory
        [{"op": "rename", "from": "empty", "to": "l"}],  # and the reverse
        [{"op": "rename", "from": "d/f", "to": "l/f"}],
    ]
    for ops in cases:
        r = commit(client, repo, [{"op": "write", "path": "n", "content_b64": ""}, *ops])
        assert r.status_code == 409, (ops, r.text)
        error = r.json()["error"]
        assert (error["code"], error["index"]) == ("path_conflict", 1), ops
    assert head_of(client, repo) == head
    assert "n" not in entries(client, repo)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "a\0b",
        "x" * 4097,
        "é" * 2049,  # 2049 characters, 4098 bytes
        "\ud800",  # not encodable as UTF-8
        None,
        7,
        ["a"],
    ],
)
def test_bad_targets_are_refused(client: httpx.Client, repo: str, target: object) -> None:
    ops = [
        {"op": "write", "path": "w", "content_b64": ""},
        {"op": "symlink", "path": "bad", "target": target},
    ]
    if target is None:
        del ops[1]["target"]
    body = json.dumps({"operations": ops})  # ASCII: "\ud800" travels as an escape
    r = client.post(f"/v1/repos/{repo}/commits", content=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["index"]) == ("invalid_request", 1)
    assert head_of(client, repo) == "0"
    assert entries(client, repo) == {}


def test_longest_target(client: httpx.Client, repo: str) -> None:
    target = ("x" * 4094) + "é"  # 4096 bytes, the last character two of them
    assert len(target.encode()) == 4096
    r = commit(client, repo, [symlink("long", target)])
    assert r.status_code == 201, r.text
    assert client.get(file_url(repo, "long")).content == target.encode()
    assert entries(client, repo)["long"]["target"] == target


def test_rename_and_delete(live: ServerProc, client: httpx.Client, repo: str) -> None:
    ops = [symlink("d/l", "../t"), symlink("m", "m-target")]
    assert commit(client, repo, [*ops, {"op": "write", "path": "f", "content_b64": "Zg=="}])
    v = link_version("../t")
    r = commit(client, repo, [{"op": "rename", "from": "d/l", "to": "e/l2", "expect": v}])
    assert r.status_code == 201 and r.json()["results"] == [{"path": "e/l2", "version": v}]
    listed = entries(client, repo)
    assert "d/l" not in listed
    assert (listed["e/l2"]["type"], listed["e/l2"]["target"]) == ("symlink", "../t")
    assert listed["e/l2"]["mode"] == 0o777
    # A directory rename carries the links in it.
    assert commit(client, repo, [{"op": "rename", "from": "e", "to": "g"}]).status_code == 201
    assert entries(client, repo)["g/l2"]["target"] == "../t"
    # A link renamed over a file replaces it, and a file renamed over a link too.
    assert commit(client, repo, [{"op": "rename", "from": "m", "to": "f"}]).status_code == 201
    assert entries(client, repo)["f"]["target"] == "m-target"
    live.put(repo, "plain", b"plain")
    assert commit(client, repo, [{"op": "rename", "from": "plain", "to": "f"}]).status_code == 201
    assert client.get(file_url(repo, "f")).headers["X-Repomount-Type"] == "file"
    # Delete with a stale version conflicts; with the right one (or DELETE) it goes.
    r = commit(client, repo, [{"op": "delete", "path": "g/l2", "expect": sha(b"x")}])
    assert r.json()["error"]["conflicts"][0]["current"] == v
    r = commit(client, repo, [{"op": "delete", "path": "g/l2", "expect": v}])
    assert r.status_code == 201
    assert commit(client, repo, [symlink("gone", "soon")]).status_code == 201
    assert client.delete(file_url(repo, "gone"), headers={"If-Match": '"0"'}).status_code == 412
    d = client.delete(file_url(repo, "gone"), headers={"If-Match": f'"{link_version("soon")}"'})
    assert d.status_code == 200
    assert set(entries(client, repo)) == {"d", "g", "f"}


def test_change_feed(client: httpx.Client, repo: str) -> None:
    commit(client, repo, [symlink("d/l", "one")]).raise_for_status()  # 1
    commit(client, repo, [symlink("d/l", "two")]).raise_for_status()  # 2
    commit(client, repo, [{"op": "rename", "from": "d/l", "to": "l"}]).raise_for_status()  # 3
    commit(client, repo, [{"op": "delete", "path": "l"}]).raise_for_status()  # 4
    body = client.get(f"/v1/repos/{repo}/changes", params={"since": "0"}).json()
    assert body["head"] == "4"
    assert [(c["head"], c["path"], c["op"], c["version"]) for c in body["changes"]] == [
        ("1", "d", "mkdir", None),
        ("1", "d/l", "write", link_version("one")),
        ("2", "d/l", "write", link_version("two")),
        ("3", "d/l", "delete", None),
        ("3", "l", "write", link_version("two")),
        ("4", "l", "delete", None),
    ]


def test_history(live: ServerProc, client: httpx.Client, repo: str) -> None:
    commit(client, repo, [symlink("l", "first")]).raise_for_status()  # 1
    commit(client, repo, [symlink("l", "second")]).raise_for_status()  # 2
    live.put(repo, "l", b"a file now")  # 3
    client.delete(file_url(repo, "l")).raise_for_status()  # 4
    commit(client, repo, [symlink("l", "again")]).raise_for_status()  # 5
    expected: dict[str, tuple[str, bytes] | None] = {
        "0": None,
        "1": ("symlink", b"first"),
        "2": ("symlink", b"second"),
        "3": ("file", b"a file now"),
        "4": None,
        "5": ("symlink", b"again"),
    }
    for at, want in expected.items():
        r = client.get(file_url(repo, "l"), params={"at": at})
        listed = entries(client, repo, at=at)
        if want is None:
            assert r.status_code == 404 and listed == {}
            continue
        kind, data = want
        assert (r.headers["X-Repomount-Type"], r.content) == (kind, data), at
        assert listed["l"]["type"] == kind and listed["l"]["version"] == sha(data)
        assert listed["l"].get("target") == (data.decode() if kind == "symlink" else None)


def test_read_tar_has_symlink_members(live: ServerProc, client: httpx.Client, repo: str) -> None:
    long_target = "../" + "ü" * 150 + "/" + "t" * 120  # over tar's 100-byte linkname field
    live.put(repo, "f.txt", b"file")
    ops = [symlink("short", "f.txt"), symlink("d/long", long_target)]
    commit(client, repo, ops).raise_for_status()  # head 2
    commit(client, repo, [symlink("short", "changed")]).raise_for_status()  # head 3
    paths = ["short", "f.txt", "nothing", "d/long", "d"]
    r = client.post(f"/v1/repos/{repo}/read", json={"paths": paths, "at": "2"})
    assert r.status_code == 200 and r.headers["X-Repo-Head"] == "2"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        members = tar.getmembers()
        described = [
            (m.name, m.type, m.linkname, m.size, m.pax_headers.get("repomount.version"))
            for m in members
        ]
        missing = tar.extractfile(members[-1])
        assert missing is not None and missing.read() == b'["nothing", "d"]'
    assert described == [
        ("short", tarfile.SYMTYPE, "f.txt", 0, link_version("f.txt")),
        ("f.txt", tarfile.REGTYPE, "", 4, sha(b"file")),
        ("d/long", tarfile.SYMTYPE, long_target, 0, link_version(long_target)),
        ("MISSING", tarfile.REGTYPE, "", len(b'["nothing", "d"]'), None),
    ]
    assert members[0].mode == 0o777


def test_symlinks_survive_a_restart(server: ServerProc) -> None:
    server.create_repo("r")
    with server.client() as c:
        commit(c, "r", [symlink("a/l", "../x")]).raise_for_status()
        commit(c, "r", [symlink("a/l", "../y")]).raise_for_status()
    server.restart()
    with server.client() as c:
        listed = entries(c, "r")
        assert (listed["a/l"]["type"], listed["a/l"]["target"]) == ("symlink", "../y")
        r = c.get(file_url("r", "a/l"), params={"at": "1"})
        assert (r.headers["X-Repomount-Type"], r.content) == ("symlink", b"../x")


def test_a_data_directory_from_before_symlinks_is_migrated(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.create_repo("r")
    spool = store.new_spool()
    spool.write(b"old")
    store.add_blob(spool)
    store.commit("r", [Write("d/f", spool.sha256, mode=0o755)])
    store.close()
    # Put the entries table back as it was: no target column, no 'symlink' type.
    db = sqlite3.connect(tmp_path / "meta.sqlite3", isolation_level=None)
    db.executescript(
        f"""
        BEGIN;
        CREATE TABLE old (
            id INTEGER PRIMARY KEY,
            repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
            path TEXT NOT NULL, parent TEXT NOT NULL,
            type TEXT NOT NULL CHECK (type IN ('file', 'dir')),
            blob TEXT, size INTEGER NOT NULL, mode INTEGER NOT NULL, mtime REAL NOT NULL,
            commit_from INTEGER NOT NULL, commit_to INTEGER);
        INSERT INTO old SELECT {OLD_ENTRY_COLUMNS} FROM entries;
        DROP TABLE entries;
        ALTER TABLE old RENAME TO entries;
        COMMIT;
        """
    )
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO entries VALUES (99, 1, 'x', '', 'symlink', NULL, 0, 0, 0, 9, NULL)")
    db.close()

    store = SqliteStore(tmp_path)
    try:
        _, entry = store.stat("r", "d/f")
        assert entry is not None
        assert (entry.type, entry.version, entry.mode) == ("file", spool.sha256, 0o755)
        result = store.commit("r", [Symlink("d/l", "f", expect="absent")])
        assert result.head == 2
        listing = store.list_tree("r", "", recursive=True, at=None, after=None, limit=10)
        assert [(e.path, e.type, e.target) for e in listing.entries] == [
            ("d", "dir", None),
            ("d/f", "file", None),
            ("d/l", "symlink", "f"),
        ]
        then = store.list_tree("r", "d", recursive=False, at=1, after=None, limit=10)
        assert [e.path for e in then.entries] == ["d/f"]
        with pytest.raises(InvalidRequest):
            store.commit("r", [Symlink("bad", "")])
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "meta.sqlite3")
    try:
        indexes = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries' "
            "AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
    finally:
        db.close()
    assert indexes == [
        ("entries_closed",),
        ("entries_current",),
        ("entries_parent",),
        ("entries_path",),
    ]


def test_the_relace_and_terminaluse_faces_leave_symlinks_out(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    live.put(repo, "f.txt", b"text")
    commit(client, repo, [symlink("l", "f.txt")]).raise_for_status()
    clone = client.get(f"/relace/v1/repo/{repo}/clone")
    assert clone.status_code == 200, clone.text
    assert clone.json()["files"] == [{"filename": "f.txt", "content": "text"}]
    assert client.get(f"/relace/v1/repo/{repo}/file/l").status_code == 404
    fs = f"/terminaluse/filesystems/{repo}"
    listed = client.get(f"{fs}/files", params={"recursive": "true"})
    assert listed.status_code == 200, listed.text
    assert [f["path"] for f in listed.json()["files"]] == ["f.txt"]
    assert client.get(f"{fs}/file-download", params={"path": "l"}).status_code == 404
    assert client.get(f"{fs}/file-download", params={"path": "f.txt"}).content == b"text"


def test_the_sentry_face_leaves_symlinks_out(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    live.put(repo, "f.js", b"text")
    commit(client, repo, [symlink("l.js", "f.js")]).raise_for_status()
    listed = client.get(f"/api/0/organizations/acme/releases/{repo}/files/")
    assert listed.status_code == 200, listed.text
    assert [f["name"] for f in listed.json()] == ["f.js"]
