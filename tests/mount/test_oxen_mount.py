"""Issue 13 on real `oxen:` mounts, checked with the official `oxenai` client: a change
committed through the client while the same file is edited in the mount ends with both
contents kept; a `cp -r` of 2,000 files is a handful of commits, and the client then
sees every file with its hash."""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import xxhash
from oxen import RemoteRepo, Workspace
from oxen.auth import config_auth
from oxen.user import config_user

from support.mount import MountProc
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc

pytestmark = pytest.mark.backends("oxen")


def xxh3(data: bytes) -> str:
    return format(xxhash.xxh3_128_intdigest(data), "x")


@pytest.fixture
def client(server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The official client, configured for the server in a scratch HOME; its host."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    host = server.url.split("://", 1)[1]
    config_user("Client User", "client@example.com")
    config_auth(server.token, host=host)
    return host


def route(path: str) -> str:
    """What an Oxen request is, from its path: "workspaces", "files", "dir"..."""
    parts = path.split("/")[5:]  # after /api/repos/NS/REPO
    if parts[:1] == ["workspaces"]:
        return ["workspaces", "workspace", parts[2] if len(parts) > 2 else ""][
            min(len(parts), 3) - 1
        ]
    return parts[0] if parts else "repo"


def head(server: ServerProc, repo: str) -> int:
    with server.client() as c:
        return int(c.get(f"/v1/repos/{repo}").json()["head"])


def test_a_client_commit_during_an_edit_keeps_both(
    server: ServerProc, mount_factory, client: str
) -> None:
    name = fresh_repo_name("notes")
    server.create_repo(name)
    server.put(name, "notes.md", b"v1\n")
    m: MountProc = mount_factory(name, create=False)
    repo = RemoteRepo(f"repomount/{name}", host=client, scheme="http")
    assert (m.path / "notes.md").read_text() == "v1\n"
    fd = os.open(m.path / "notes.md", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"edited in the mount\n")
        workspace = Workspace(repo, "main")
        workspace.add_bytes("notes.md", b"edited via the client\n")
        workspace.commit("from the client")
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.ESTALE
    finally:
        os.close(fd)
    m.sync()
    files = {e.filename: e for e in repo.scan()}
    assert bytes(repo.get_file("notes.md")) == b"edited via the client\n"
    [copy] = [name for name in files if name != "notes.md"]
    assert re.fullmatch(r"notes\.conflict-\d{8}T\d{6}Z-.+\.md", copy)
    assert bytes(repo.get_file(copy)) == b"edited in the mount\n"
    assert files[copy].hash == xxh3(b"edited in the mount\n")


def test_cp_r_of_2000_files_is_a_handful_of_commits(
    server: ServerProc, mnt: MountProc, tmp_path: Path, client: str
) -> None:
    rng = random.Random(13)
    src = tmp_path / "src"
    files: dict[str, bytes] = {}
    for i in range(2000):
        rel = f"d{i % 12}/e{i % 5}/f{i}.csv"
        data = rng.randbytes(rng.randrange(0, 4096))
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        files[rel] = data
    before, mark = head(server, mnt.repo), server.mark()
    subprocess.run(["cp", "-r", str(src), str(mnt.path / "tree")], check=True, timeout=300)
    mnt.sync(timeout=300)
    commits = head(server, mnt.repo) - before
    requests = Counter(f"{r.method} {route(r.path)}" for r in server.requests(mark))
    print(f"cp -r of 2,000 files: {commits} commits; requests {dict(requests)}")
    assert 1 <= commits <= 5, (commits, requests)
    repo = RemoteRepo(f"repomount/{mnt.repo}", host=client, scheme="http")
    seen = {}
    for d in sorted({rel.rsplit("/", 1)[0] for rel in files}):
        for entry in repo.scan(f"tree/{d}", page_size=1000):
            seen[f"{d}/{entry.filename}"] = entry.hash
    assert seen == {rel: xxh3(data) for rel, data in files.items()}
