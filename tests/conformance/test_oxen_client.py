"""The server's Oxen face, driven by the official `oxenai` client (0.65.1).

What is asserted is what Oxen's API (docs/remotes.md, "Oxen") says the
real server does; where it leaves a choice open, the face's documented choice
(docs/remotes.md, "Oxen"). The client is installed by scripts/setup (without the
dataframe stack it declares; see there). It keeps its configuration under $HOME: each
test module gets a scratch HOME with a user and the server's token for its host.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import oxen
import pytest
import xxhash
from oxen import RemoteRepo, Workspace
from oxen.auth import config_auth
from oxen.remote_repo import create_repo
from oxen.user import config_user

from support.server import ServerProc

_names = itertools.count()


def xxh3(data: bytes) -> str:
    return format(xxhash.xxh3_128_intdigest(data), "x")


@pytest.fixture(scope="module")
def host(live: ServerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`127.0.0.1:PORT` of the live server, with the client configured for it."""
    home = tmp_path_factory.mktemp("oxen-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        address = live.url.split("://", 1)[1]
        config_user("Tess Ter", "tess@example.com")
        config_auth(live.token, host=address)
        yield address


@pytest.fixture
def repo(live: ServerProc, host: str) -> RemoteRepo:
    """A fresh repository with one commit, made through the client."""
    name = f"ns{next(_names)}/data"
    create_repo(name, host=host, scheme="http")
    remote = RemoteRepo(name, host=host, scheme="http")
    workspace = Workspace(remote, "main")
    workspace.add_bytes("README.md", b"# data\n")
    workspace.commit("first")
    return RemoteRepo(name, host=host, scheme="http")


def api(live: ServerProc) -> httpx.Client:
    return httpx.Client(
        base_url=f"{live.url}/api", headers={"Authorization": f"Bearer {live.token}"}
    )


def test_create_and_open_repositories(live: ServerProc, host: str) -> None:
    """create_repo makes an empty repository (no branch yet); RemoteRepo finds it, and
    a repository that does not exist is reported as such. Every store repository is one
    in the `repomount` namespace."""
    create_repo("team/fresh", host=host, scheme="http")
    assert RemoteRepo("team/fresh", host=host, scheme="http").exists()
    assert not RemoteRepo("team/missing", host=host, scheme="http").exists()
    live.create_repo("plain")
    assert RemoteRepo("repomount/plain", host=host, scheme="http").exists()
    with api(live) as c:
        body = c.get("/repos/team/fresh").json()
        assert body["status"] == "success" and body["repository"]["is_empty"] is True
        assert c.post("/repos", json={"namespace": "team", "name": "fresh"}).status_code == 409
        bad = c.post("/repos", json={"namespace": "team", "name": "-no"})
        assert bad.status_code == 400 and bad.json()["status"] == "error"
        assert [r["name"] for r in c.get("/repos/team").json()["repositories"]] == ["fresh"]


def test_workspace_commit_then_read_it_back(live: ServerProc, repo: RemoteRepo) -> None:
    """add + commit go through a workspace (gzipped parts); ls, metadata (xxh3 hash),
    get_file and download (which checks the hash) read the commit back, and the native
    API sees the same files: one store."""
    data = b"a,b\n1,2\n"
    workspace = Workspace(repo, "main")
    workspace.add_bytes("t.csv", data, "tables")
    workspace.commit("a table")
    assert [e.filename for e in repo.ls("tables").entries] == ["t.csv"]
    meta = repo.metadata("tables/t.csv")
    assert (meta.hash, meta.size, meta.data_type) == (xxh3(data), len(data), "tabular")
    assert bytes(repo.get_file("tables/t.csv")) == data
    with api(live) as c:
        entry = c.get(f"/repos/{repo.identifier}/meta/main/tables/t.csv").json()["entry"]
        assert entry["hash"] == xxh3(data)


def test_download_checks_the_hash(repo: RemoteRepo, tmp_path: Path) -> None:
    repo.download("README.md", str(tmp_path))
    assert (tmp_path / "README.md").read_bytes() == b"# data\n"


def test_ls_pages(repo: RemoteRepo) -> None:
    """A directory of 25 files listed 10 at a time: scan reads the three pages."""
    workspace = Workspace(repo, "main")
    for n in range(25):
        workspace.add_bytes(f"f{n:02}.txt", b"%d\n" % n, "many")
    workspace.commit("many files")
    page = repo.ls("many", page_num=2, page_size=10)
    assert (page.total_pages, page.total_entries) == (3, 25)
    assert [e.filename for e in page.entries] == [f"f{n:02}.txt" for n in range(10, 20)]
    assert len(list(repo.scan("many", page_size=10))) == 25


def test_branches_upload_delete_and_history(live: ServerProc, repo: RemoteRepo) -> None:
    """A branch starts at main's commit and goes its own way: an upload to it (one
    commit, PUT /file) is not on main; delete_file is a commit too; history is newest
    first with the messages and authors given."""
    start = repo.get_branch("main").commit_id
    repo.create_branch("feature")
    assert {b.name: b.commit_id for b in repo.branches()} == {"main": start, "feature": start}
    on_branch = RemoteRepo(repo.identifier, host=repo.url.split("/")[2], scheme="http")
    on_branch.checkout("feature")
    src = Path(live.data_dir.parent / "up.txt")
    src.write_bytes(b"uploaded\n")
    on_branch.upload(str(src), "upload it", dst_dir="docs")
    assert on_branch.file_exists("docs/up.txt")
    assert not repo.file_exists("docs/up.txt")
    repo.delete_file("README.md")
    assert not repo.file_exists("README.md")
    log = repo.log()
    assert [c.message for c in log] == ["Removed 'README.md'", "first"]
    assert log[0].author == "Tess Ter"
    assert [c.message for c in on_branch.log()] == ["upload it", "first"]


def test_oxenfs_writes_on_close(repo: RemoteRepo) -> None:
    """OxenFS (fsspec) buffers a write and commits it on close; it reads back."""
    ns, name = repo.identifier.split("/")
    fs = oxen.OxenFS(ns, name, host=repo.url.split("/")[2], scheme="http")
    with fs.open("notes/n.txt", "wb") as f:
        f.write(b"written through fsspec\n")
    with fs.open("notes/n.txt", "rb") as f:
        assert f.read() == b"written through fsspec\n"
    assert [c.message for c in repo.log()][1:] == ["first"]


def test_a_workspace_behind_its_branch_is_a_conflict(live: ServerProc, repo: RemoteRepo) -> None:
    """A file staged in a workspace and changed on the branch since the workspace's
    commit: the commit is refused with 409 "Workspace is behind", nothing is merged.
    A file changed elsewhere on the branch does not stop the commit. An empty commit
    is 422; unknown workspaces, branches and paths are 404."""
    workspace = Workspace(repo, "main")
    workspace.add_bytes("README.md", b"mine\n")
    theirs = Workspace(repo, "main")
    theirs.add_bytes("README.md", b"theirs\n")
    theirs.commit("theirs first")
    with pytest.raises(ValueError, match=r"(?i)behind|conflict|409"):
        workspace.commit("mine")
    assert bytes(repo.get_file("README.md")) == b"theirs\n"
    other = Workspace(repo, "main")
    other.add_bytes("other.txt", b"o\n")
    elsewhere = Workspace(repo, "main")
    elsewhere.add_bytes("elsewhere.txt", b"e\n")
    elsewhere.commit("elsewhere")
    other.commit("other")
    assert repo.file_exists("other.txt") and repo.file_exists("elsewhere.txt")
    with api(live) as c:
        base = f"/repos/{repo.identifier}"
        wid = "workspace-empty"
        c.put(f"{base}/workspaces", json={"workspace_id": wid, "branch_name": "main"})
        empty = c.post(f"{base}/workspaces/{wid}/merge/main", json={"message": "m"})
        assert empty.status_code == 422
        missing = c.get(f"{base}/workspaces/nope")
        assert missing.status_code == 404
        assert missing.json()["status_description"] == "Workspace not found: nope"
        assert c.get(f"{base}/branches/nope").status_code == 404
        assert c.get(f"{base}/file/main/nope.txt").status_code == 404
        assert c.get(f"{base}/dir/nope/").status_code == 404
