"""Request economy of listings, and memory use with large files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from support.mount import MountProc
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc


@pytest.mark.parametrize("first", ["find", "stat, then find"])
def test_find_and_ls_lR_of_10000_files_take_at_most_3_listing_requests(
    server: ServerProc, mount_factory, first: str
) -> None:
    """A walk of the whole tree costs one recursive listing (paged), not one request
    per directory, and nothing per file; the change feed keeps it true past the
    metadata TTL, so a second walk a while later sends nothing. A stat first lists the
    root alone and has the tree loaded behind it, which the walk then uses."""
    repo = fresh_repo_name("tree")
    server.create_repo(repo)
    dirs = [f"d{a}/e{b}" for a in range(25) for b in range(8)]
    with server.client() as c:
        for part in range(2):
            ops = [
                {"op": "write", "path": f"{d}/f{i}.txt", "content_b64": "aGk="}
                for d in dirs[part * 100 : (part + 1) * 100]
                for i in range(50)
            ]
            c.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    m: MountProc = mount_factory(repo, create=False)
    mark = server.mark()
    if first.startswith("stat"):
        assert (m.path / "d7").is_dir()
    found = subprocess.run(
        ["find", str(m.path)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert found.count(".txt") == 10_000
    time.sleep(6)  # past --metadata-ttl (5 s)
    out = subprocess.run(
        ["ls", "-lR", str(m.path)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.count(".txt") == 10_000
    lines = [r for r in server.requests(since=mark) if not r.path.endswith("/changes")]
    tree_calls = [r for r in lines if r.path.endswith("/tree")]
    assert 1 <= len(tree_calls) <= 3, [r.path for r in lines]
    assert len(lines) == len(tree_calls), [f"{r.method} {r.path}" for r in lines]


def test_large_file_read_and_write_keep_rss_low(server: ServerProc, mount_factory) -> None:
    size = 200 * 1024 * 1024
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not compressible to zero
    m: MountProc = mount_factory()
    big = m.path / "big.bin"
    h = hashlib.sha256()
    with big.open("wb") as f:
        for i in range(size // len(block)):
            chunk = block[i % 7 :] + block[: i % 7]
            f.write(chunk)
            h.update(chunk)
    written = h.hexdigest()
    m.sync(timeout=120)
    with server.client() as c:
        r = c.head(f"/v1/repos/{m.repo}/files/big.bin")
        assert r.headers["etag"].strip('"') == written
    # Read it back through a fresh cache (another mount of the same repo).
    m2: MountProc = mount_factory(m.repo, create=False)
    h2 = hashlib.sha256()
    with (m2.path / "big.bin").open("rb") as f:
        while chunk := f.read(1 << 20):
            h2.update(chunk)
    assert h2.hexdigest() == written
    for mp in (m, m2):
        peak_mib = mp.rss_peak_kib() / 1024
        assert peak_mib < 150, f"mount RSS peaked at {peak_mib:.0f} MiB"
    assert os.path.getsize(m2.path / "big.bin") == size


def _bdi(path: Path) -> Path:
    dev = os.stat(path).st_dev
    return Path("/sys/class/bdi") / f"{os.major(dev)}:{os.minor(dev)}" / "read_ahead_kb"


def _read_ahead_kib(path: Path) -> int:
    return int(_bdi(path).read_text())


def test_the_mount_reads_ahead_as_told(mount_factory) -> None:
    """--read-ahead sets the kernel's window for this mount (1M by default; 0 keeps the
    kernel's), which is what lets a large file be read in 1 MiB requests. Only where the
    mount may write sysfs (root, /sys writable): elsewhere the kernel's default stays
    and the mount goes on."""
    told = mount_factory(extra_args=["--read-ahead", "4M"])
    default = mount_factory()
    kept = mount_factory(extra_args=["--read-ahead", "0"])
    kernel = _read_ahead_kib(kept.path)
    if os.access(_bdi(kept.path), os.W_OK):
        assert (_read_ahead_kib(told.path), _read_ahead_kib(default.path)) == (4096, 1024)
    else:
        assert _read_ahead_kib(told.path) == _read_ahead_kib(default.path) == kernel
    (told.path / "f.txt").write_text("still a working mount\n")
    assert (told.path / "f.txt").read_text() == "still a working mount\n"
