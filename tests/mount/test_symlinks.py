"""Symbolic links through a mount: stored where the backend stores them, EPERM elsewhere."""

from __future__ import annotations

import errno
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.backends import Backend
from support.mount import MountProc
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")


def _remote_entries(server: ServerProc, repo: str) -> dict[str, dict]:
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/tree", params={"recursive": 1})
        r.raise_for_status()
        return {e["path"]: e for e in r.json()["entries"]}


def test_symlink_round_trip(server: ServerProc, mnt: MountProc, backend: Backend) -> None:
    (mnt.path / "target.txt").write_text("pointed at\n")
    if "symlinks" not in backend.can:
        with pytest.raises(PermissionError):
            os.symlink("target.txt", mnt.path / "link")
        assert not os.path.lexists(mnt.path / "link")
        return
    os.symlink("target.txt", mnt.path / "link")
    os.symlink("../elsewhere/nothing", mnt.path / "dangling")
    assert os.readlink(mnt.path / "link") == "target.txt"
    assert (mnt.path / "link").read_text() == "pointed at\n"  # the kernel follows it
    mnt.sync()
    entries = _remote_entries(server, mnt.repo)
    assert entries["link"]["type"] == "symlink" and entries["link"]["target"] == "target.txt"
    assert entries["dangling"]["target"] == "../elsewhere/nothing"
    os.rename(mnt.path / "link", mnt.path / "link2")
    os.unlink(mnt.path / "dangling")
    mnt.sync()
    entries = _remote_entries(server, mnt.repo)
    assert "dangling" not in entries and entries["link2"]["target"] == "target.txt"


# Only where the remote stores links; test_symlink_round_trip shows the refusal elsewhere.
WITH_SYMLINKS = pytest.mark.backends("native")


@WITH_SYMLINKS
def test_symlink_made_elsewhere_shows_in_the_mount(server: ServerProc, mount_factory) -> None:
    repo = fresh_repo_name("links")
    server.create_repo(repo)
    with server.client() as c:
        ops = [
            {"op": "write", "path": "real/file.txt", "content_b64": "aGk="},
            {"op": "symlink", "path": "alias", "target": "real/file.txt"},
        ]
        c.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    m: MountProc = mount_factory(repo, create=False)
    assert os.path.islink(m.path / "alias")
    assert os.readlink(m.path / "alias") == "real/file.txt"
    assert (m.path / "alias").read_bytes() == b"hi"


@WITH_SYMLINKS
def test_tar_with_symlinks(server: ServerProc, mnt: MountProc, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("f\n")
    os.symlink("d/f.txt", src / "l")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="p")
    subprocess.run(["tar", "xf", str(archive)], cwd=mnt.path, check=True)
    assert os.readlink(mnt.path / "p" / "l") == "d/f.txt"
    mnt.sync()
    entries = _remote_entries(server, mnt.repo)
    assert entries["p/l"]["type"] == "symlink" and entries["p/l"]["target"] == "d/f.txt"


@WITH_SYMLINKS
def test_a_link_whose_target_is_not_utf8_is_einval(server: ServerProc, mnt: MountProc) -> None:
    """A link target's bytes must be UTF-8 (remote targets are text): one that is not
    is EINVAL and nothing is made, as for a name. Before, the journal could not store
    it and the symlink call failed with EIO and a traceback in the log."""
    with pytest.raises(OSError) as e:
        os.symlink(b"target\xff", os.fsencode(mnt.path / "link"))
    assert e.value.errno == errno.EINVAL
    assert not os.path.lexists(mnt.path / "link")
    os.symlink("a\nb", mnt.path / "odd")  # (any UTF-8 but NUL is a target, as locally)
    mnt.sync()
    assert {p: e["target"] for p, e in _remote_entries(server, mnt.repo).items()} == {"odd": "a\nb"}
