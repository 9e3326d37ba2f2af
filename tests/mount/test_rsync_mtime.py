"""Issue 16, finding 4: `rsync -a` into a mount re-sent every file on every run (its
quick check compares size and mtime, and the mount did not keep the mtimes it was given
where the remote could hold them), and each rerun added no-op commits to the feed.

A second `rsync -a --stats` of an unchanged tree transfers no file and commits nothing:
in the same mount, after a remount with the same state directory (every backend: the
times are kept locally for the version they were set on), and, on the native backend,
in a mount with a state directory of its own (another machine, or the state deleted):
the server keeps each write's mtime to the nanosecond. `touch -d` goes to the server
the same way, without uploading the content again.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.backends import Backend
from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("native", "relace", "terminaluse")

FILES = 50
TOUCHED = "2001-09-09 01:46:40.123456789 UTC"
TOUCHED_NS = 1_000_000_000_123_456_789


def _make_tree(root: Path) -> None:
    for i in range(FILES):  # nested three deep, text (Relace's face lists text only)
        p = root / f"d{i % 4}" / f"e{i % 3}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"line {i}\n" * (i + 1))


def _rsync(src: Path, dst: Path) -> int:
    """`rsync -a --stats`; how many regular files it transferred."""
    r = subprocess.run(
        ["rsync", "-a", "--stats", f"{src}/", f"{dst}/"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    found = re.search(r"Number of regular files transferred: ([\d,]+)", r.stdout)
    assert found, r.stdout
    return int(found[1].replace(",", ""))


def _head(server: ServerProc, repo: str) -> str:
    with server.client() as c:
        return str(c.get(f"/v1/repos/{repo}").json()["head"])


def _changes_since(server: ServerProc, repo: str, head: str) -> list[dict]:
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/changes", params={"since": head})
        r.raise_for_status()
        return r.json()["changes"]


def _listed_ns(server: ServerProc, repo: str, path: str) -> int:
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"})
        r.raise_for_status()
        return next(e["mtime_ns"] for e in r.json()["entries"] if e["path"] == path)


def test_a_second_rsync_transfers_nothing_and_commits_nothing(
    server: ServerProc, mount_factory, backend: Backend, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    m: MountProc = mount_factory()
    assert _rsync(src, m.path / "copy") == FILES
    m.sync()
    head = _head(server, m.repo)

    assert _rsync(src, m.path / "copy") == 0  # the same mount
    m.sync()
    assert _changes_since(server, m.repo, head) == []

    r = m.unmount()
    assert r.returncode == 0, r.stdout + r.stderr
    m.start()  # the same state directory
    assert _rsync(src, m.path / "copy") == 0
    m.sync()
    assert _changes_since(server, m.repo, head) == []

    if "file_mtimes" not in backend.can:
        return  # (nothing of the times is on the remote: docs/semantics.md says so)
    other: MountProc = mount_factory(m.repo, create=False)  # a state directory of its own
    assert _rsync(src, other.path / "copy") == 0  # was: 50, and 50 more writes
    other.sync()
    assert _changes_since(server, m.repo, head) == []


@pytest.mark.backends("native")
def test_touch_d_keeps_its_mtime_across_a_remount(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    m: MountProc = mount_factory()
    (m.path / "big.bin").write_bytes(os.urandom(1_000_000))
    m.sync()
    mark = server.mark()
    subprocess.run(["touch", "-d", TOUCHED, str(m.path / "big.bin")], check=True)
    assert (m.path / "big.bin").stat().st_mtime_ns == TOUCHED_NS
    m.sync()
    assert _listed_ns(server, m.repo, "big.bin") == TOUCHED_NS
    uploads = [q for q in server.requests(mark) if "/blobs" in q.path]
    assert uploads == []  # the new time went without the content

    r = m.unmount()
    assert r.returncode == 0, r.stdout + r.stderr
    m.start()
    assert (m.path / "big.bin").stat().st_mtime_ns == TOUCHED_NS
    other: MountProc = mount_factory(m.repo, create=False)
    assert (other.path / "big.bin").stat().st_mtime_ns == TOUCHED_NS  # was: the commit time
