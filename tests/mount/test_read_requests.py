"""Request economy of reads: a tree walk reads small files ahead in bulk, a single cat
reads only what it opens."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import tarfile
from pathlib import Path

from support.mount import MountProc
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc


def _seed(server: ServerProc, repo: str, files: dict[str, bytes]) -> None:
    server.create_repo(repo)
    items = sorted(files.items())
    with server.client() as c:
        for start in range(0, len(items), 1000):
            ops = [
                {"op": "write", "path": p, "content_b64": base64.b64encode(data).decode()}
                for p, data in items[start : start + 1000]
            ]
            c.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()


def _tree(count: int) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        d = f"pkg{i % 20}/sub{i % 7}"
        files[f"{d}/m{i}.py"] = hashlib.sha256(str(i).encode()).hexdigest().encode() * (1 + i % 40)
    return files


def test_tar_of_2000_small_files_takes_at_most_40_read_requests(
    server: ServerProc, mount_factory, tmp_path: Path
) -> None:
    files = _tree(2000)
    name = fresh_repo_name("walk")
    _seed(server, name, files)
    m: MountProc = mount_factory(name, create=False)
    mark = server.mark()
    archive = tmp_path / "out.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(m.path), "."], check=True, timeout=300)
    lines = [r for r in server.requests(since=mark) if not r.path.endswith("/changes")]
    reads = [r for r in lines if r.path.endswith("/read") or "/files/" in r.path]
    assert len(reads) <= 40, sorted({f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in reads})
    with tarfile.open(archive) as t:
        got = {
            m.name.removeprefix("./"): t.extractfile(m).read()  # type: ignore[union-attr]
            for m in t.getmembers()
            if m.isfile()
        }
    assert got == files


def test_a_single_cat_reads_only_its_file(server: ServerProc, mount_factory) -> None:
    files = _tree(300)
    name = fresh_repo_name("one")
    _seed(server, name, files)
    m: MountProc = mount_factory(name, create=False)
    subprocess.run(["ls", "-R", str(m.path)], check=True, capture_output=True, timeout=60)
    mark = server.mark()
    assert (m.path / "pkg3/sub3/m3.py").read_bytes() == files["pkg3/sub3/m3.py"]
    lines = [r for r in server.requests(since=mark) if not r.path.endswith("/changes")]
    assert [r.path.rsplit("/", 1)[-1] for r in lines] == ["m3.py"], lines


def test_files_opened_by_name_in_path_order_are_read_ahead_in_bulk(
    server: ServerProc, mount_factory
) -> None:
    """`git status` opens every file of its index by name, sorted by path, and reads no
    directory: those files come in bulk reads too, not one request each."""
    files = _tree(2000)
    name = fresh_repo_name("byname")
    _seed(server, name, files)
    m: MountProc = mount_factory(name, create=False)
    mark = server.mark()
    for path in sorted(files):
        assert (m.path / path).read_bytes() == files[path], path
    lines = [r for r in server.requests(since=mark) if not r.path.endswith("/changes")]
    reads = [r for r in lines if r.path.endswith("/read") or "/files/" in r.path]
    assert len(reads) <= 40, sorted({f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in reads})
