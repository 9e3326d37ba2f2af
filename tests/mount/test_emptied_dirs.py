"""A directory whose last file is deleted (or moved away) through the mount stays, as on
a local disk, on every backend that deletes. Where directories exist only through their
files (Relace, Oxen, Sentry), the remote then has nothing below it, and the directory
vanished at its next listing: `ls` of it said ENOENT, and so did a file or directory
created in it by a process working there (pjdfstest's final `rmdir` of its own emptied
test directory failed with ENOENT on all three). Found by pjdfstest."""

from __future__ import annotations

import os

import pytest

from support.backends import Backend
from support.mount import MountProc
from support.server import ServerProc

# (Terminal Use refuses to delete or rename a file the remote has: nothing to empty.)
pytestmark = pytest.mark.backends("native", "relace", "oxen", "sentry")


def _remote_paths(server: ServerProc, repo: str) -> set[str]:
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/tree", params={"recursive": 1})
        r.raise_for_status()
        return {e["path"] for e in r.json()["entries"] if e["type"] != "dir"}


def test_a_directory_emptied_through_the_mount_stays(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    # (No listing is trusted: each look below asks the remote what it has.)
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "0"])
    work = m.path / "out" / "sub"
    work.mkdir(parents=True)
    (work / "f").write_text("x\n")
    (m.path / "moved").mkdir()
    (m.path / "moved" / "g").write_text("y\n")
    (m.path / "top").write_text("t\n")
    m.sync()
    os.unlink(work / "f")
    os.rename(m.path / "moved" / "g", m.path / "g")
    m.sync()
    assert _remote_paths(server, m.repo) == {"g", "top"}
    assert sorted(os.listdir(m.path)) == ["g", "moved", "out", "top"]
    assert os.listdir(m.path / "out") == ["sub"]
    assert os.listdir(work) == [] and os.listdir(m.path / "moved") == []
    (work / "h").write_text("z\n")  # a program working there goes on writing
    (work / "d").mkdir()
    os.rmdir(m.path / "moved")
    m.sync()
    assert _remote_paths(server, m.repo) == {"g", "out/sub/h", "top"}
    assert sorted(os.listdir(m.path)) == ["g", "out", "top"]
    assert sorted(os.listdir(work)) == ["d", "h"]
