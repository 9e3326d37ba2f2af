"""The Oxen face where its official client does not go: bad input (a 4xx in Oxen's
error shape, never a 500 or a traceback, nothing changed), branches moved and deleted,
commit ids, depth listings, removals in a workspace behind its branch."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.server import ServerFactory, ServerProc

_names = itertools.count()


@pytest.fixture
def c(live: ServerProc) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{live.url}/api/repos/repomount",
        headers={"Authorization": f"Bearer {live.token}"},
    ) as client:
        yield client


@pytest.fixture
def repo(live: ServerProc) -> str:
    name = f"x{next(_names)}"
    live.create_repo(name)
    live.put(name, "a.txt", b"a")
    live.put(name, "d/b.txt", b"b")
    return name


def commit(c: httpx.Client, repo: str, files: dict[str, bytes], removes=(), branch="main"):
    """One workspace commit through the face; the answer."""
    wid = f"workspace-{next(_names)}"
    c.put(f"/{repo}/workspaces", json={"workspace_id": wid, "branch_name": branch})
    ws = f"/{repo}/workspaces/{wid}"
    if files:
        parts = [("file[]", (p, gzip.compress(d), "application/gzip")) for p, d in files.items()]
        assert c.post(f"{ws}/files/", files=parts).status_code == 200
    if removes:
        assert c.request("DELETE", f"{ws}/files", json=list(removes)).status_code == 200
    return c.post(f"{ws}/merge/{branch}", json={"message": "m", "author": "a", "email": "e"})


def test_bad_input_is_a_4xx_in_oxens_shape(live: ServerProc, c: httpx.Client, repo: str) -> None:
    with live.client() as native:
        head = native.get(f"/v1/repos/{repo}").json()["head"]
    wid = "workspace-bad"
    c.put(f"/{repo}/workspaces", json={"workspace_id": wid, "branch_name": "main"})
    ws = f"/{repo}/workspaces/{wid}"
    cases = [
        c.post("/../../repos", content=b"{"),
        c.post(f"{live.url}/api/repos", content=b"{not json"),
        c.post(f"{live.url}/api/repos", json=["a"]),
        c.post(f"/{repo}/branches", json={"new_name": "bad name", "from_name": "main"}),
        c.post(f"/{repo}/branches", json={"new_name": "x", "commit_id": "f" * 32}),
        c.put(f"/{repo}/branches/main", json={}),
        c.delete(f"/{repo}/branches/main"),
        c.get(f"/{repo}/meta/main/../a.txt"),
        c.get(f"/{repo}/dir/main/?page=zero"),
        c.get(f"/{repo}/commits/history/main/a.txt"),
        c.put(f"/{repo}/file/main/x.txt", content=b"not multipart"),
        c.post(
            f"{ws}/files/",
            files=[("file[]", ("z.txt", b"not gzip", "application/gzip"))],
        ),
        c.post(
            f"{ws}/files/",
            content=b"--x\r\nbroken",
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
        c.request("DELETE", f"{ws}/files", json={"paths": 3}),
        c.post(f"{ws}/merge/main", json={"message": ""}),
        c.post(f"{ws}/merge/main", json={"message": "nothing staged"}),
        c.post(f"{ws}/merge/nope", json={"message": "m"}),
        c.patch(f"/{repo}/file/main/a.txt", json={"new_path": "d/b.txt"}),
        c.patch(f"/{repo}/file/main/missing", json={"new_path": "z"}),
        # names with control characters are never written (as on every face)
        c.post(f"{ws}/files/", files=[("file[]", ("a\nb.txt", gzip.compress(b"x"), "gz"))]),
        c.patch(f"/{repo}/file/main/a.txt", json={"new_path": "a\tb.txt"}),
        # JSON: nested past the parser's depth; larger than any JSON body may be
        c.post(f"/{repo}/branches", content=b"[" * 100_000),
        c.post(f"/{repo}/branches", content=b" " * (64 << 20) + b"{}"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        body = r.json()
        assert body.get("status") == "error" or "error" in body, body
    with live.client() as native:
        assert native.get(f"/v1/repos/{repo}").json()["head"] == head
    assert "Traceback" not in live.log_path.read_text()


def test_branches_move_and_go(live: ServerProc, c: httpx.Client, repo: str) -> None:
    """A branch moved to an older commit shows that commit's id and its tree; history
    follows it; a deleted branch is gone, main is untouched."""
    first = c.get(f"/{repo}/branches/main").json()["branch"]["commit_id"]
    assert (
        c.post(f"/{repo}/branches", json={"new_name": "b", "from_name": "main"}).status_code == 200
    )
    second = commit(c, repo, {"new.txt": b"n"}, branch="b").json()["commit"]
    assert second["parent_ids"] == [first]
    assert c.get(f"/{repo}/meta/b/new.txt").status_code == 200
    assert c.get(f"/{repo}/meta/main/new.txt").status_code == 404
    moved = c.put(f"/{repo}/branches/b", json={"commit_id": first}).json()["branch"]
    assert moved == {"name": "b", "commit_id": first}
    assert c.get(f"/{repo}/meta/b/new.txt").status_code == 404
    assert c.get(f"/{repo}/commits/{second['id']}").json()["commit"]["id"] == second["id"]
    history = c.get(f"/{repo}/commits/history/b").json()["commits"]
    assert history[0]["id"] == first
    assert c.delete(f"/{repo}/branches/b").status_code == 200
    assert [b["name"] for b in c.get(f"/{repo}/branches").json()["branches"]] == ["main"]
    assert live.tree(repo) == {"a.txt": b"a", "d/b.txt": b"b"}


def test_depth_listings_and_a_removal_behind_its_branch(c: httpx.Client, repo: str) -> None:
    """depth=-1 nests every child; removing a directory in a workspace made before
    someone changed a file in it is 409; the directory left empty by a removal goes."""
    listing = c.get(f"/{repo}/dir/main/", params={"depth": -1}).json()
    [d] = [e for e in listing["entries"] if e["is_dir"]]
    assert (d["filename"], d["size"]) == ("d", 1)
    assert [child["filename"] for child in d["children"]] == ["b.txt"]
    wid = "workspace-late"
    c.put(f"/{repo}/workspaces", json={"workspace_id": wid, "branch_name": "main"})
    assert commit(c, repo, {"d/b.txt": b"changed"}).status_code == 200
    assert c.request("DELETE", f"/{repo}/workspaces/{wid}/files", json=["d"]).status_code == 200
    behind = c.post(f"/{repo}/workspaces/{wid}/merge/main", json={"message": "rm d"})
    assert behind.status_code == 409 and behind.json()["error"]["title"] == "Workspace is behind"
    assert commit(c, repo, {}, removes=["d/b.txt"]).status_code == 200
    assert [e["filename"] for e in c.get(f"/{repo}/dir/main/").json()["entries"]] == ["a.txt"]


def test_a_moved_branch_turns_a_file_back_into_an_empty_directory(
    live: ServerProc, c: httpx.Client, repo: str
) -> None:
    with live.client() as native:
        ops = [{"op": "mkdir", "path": "e"}]
        native.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    start = c.get(f"/{repo}/branches/main").json()["branch"]["commit_id"]
    c.post(f"/{repo}/branches", json={"new_name": "b", "commit_id": start})
    assert commit(c, repo, {"e": b"now a file"}, removes=["e"], branch="b").status_code == 200
    assert c.get(f"/{repo}/meta/b/e").json()["entry"]["is_dir"] is False
    c.put(f"/{repo}/branches/b", json={"commit_id": start})
    assert c.get(f"/{repo}/meta/b/e").json()["entry"]["is_dir"] is True


def test_a_gzip_part_that_unpacks_past_the_limit_is_413_in_bounded_memory(
    server_factory: ServerFactory,
) -> None:
    """This stop's security probe: a 1 MiB gzip part took the server from 45 MB to
    2.16 GB, decompressed whole on the event loop. Now a part is refused as it passes
    --max-file-size while it unpacks, in a worker thread; several members still work."""
    live = server_factory(["--max-file-size", "8M"])
    live.create_repo("bomb")
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in about 64 KiB
    ok = gzip.compress(b"first ") + gzip.compress(b"second")  # two members
    with httpx.Client(
        base_url=f"{live.url}/api/repos/repomount/bomb",
        headers={"Authorization": f"Bearer {live.token}"},
    ) as c:
        c.put("/workspaces", json={"workspace_id": "w", "branch_name": "main"})
        r = c.post("/workspaces/w/files/", files=[("file[]", ("z.bin", bomb, "application/gzip"))])
        assert r.status_code == 413 and "unpacks to over" in r.text, r.text
        parts = [("file[]", ("two.txt", ok, "application/gzip"))]
        assert c.post("/workspaces/w/files/", files=parts).status_code == 200
        merged = c.post(
            "/workspaces/w/merge/main", json={"message": "m", "author": "a", "email": "e"}
        )
        assert merged.status_code == 200, merged.text
    assert live.tree("bomb") == {"two.txt": b"first second"}
    status = Path(f"/proc/{live.proc.pid}/status").read_text()
    peak_kib = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM")))
    assert peak_kib < 400 << 10, f"the server's peak RSS was {peak_kib} KiB"
