"""Network latency is paid per batch, not per file (issue 12): what a `cp -r` of a real
sized tree costs in requests on the wire, counted from the server's access log."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

from repomount.vfs.watcher import OWN_ECHO_PAUSE
from support.mount import MountProc
from support.mountfixtures import MountFactory
from support.server import ServerProc
from support.util import wait_until

WRITE_METHODS = {"PUT", "POST", "DELETE"}
MiB = 1 << 20


def make_tree(root: Path) -> dict[str, bytes]:
    """2,000 files in 60 directories, about 30 MiB: mostly small sources, some medium
    files, a few of several MiB (the size mix of a source tree with some assets)."""
    rng = random.Random(12)
    sizes = [rng.randrange(0, 12 * 1024) for _ in range(1800)]
    sizes += [rng.randrange(30 * 1024, 100 * 1024) for _ in range(191)]
    sizes += [rng.randrange(600 * 1024, 1200 * 1024) for _ in range(6)]
    sizes += [2 * MiB, 20, 0]
    rng.shuffle(sizes)
    files = {}
    for i, size in enumerate(sizes):
        rel = f"d{i % 12}/e{i % 5}/f{i}.dat"
        data = rng.randbytes(size)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def test_cp_r_of_2000_files_and_30_mib_takes_at_most_10_write_requests(
    server: ServerProc, mnt: MountProc, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    assert len(files) == 2000 and 28 * MiB < sum(map(len, files.values())) < 34 * MiB
    mark = server.mark()
    started = time.monotonic()
    subprocess.run(["cp", "-r", str(src), str(mnt.path / "tree")], check=True, timeout=300)
    copied = time.monotonic() - started
    mnt.sync(timeout=300)
    writes = [r for r in server.requests(mark) if r.method in WRITE_METHODS]
    assert server.tree(mnt.repo) == {f"tree/{rel}": data for rel, data in files.items()}
    summary = Counter(f"{r.method} {r.path.rsplit('/', 1)[-1][:12]} {r.status}" for r in writes)
    assert len(writes) <= 10, f"{len(writes)} writes (cp took {copied:.1f}s): {summary}"


def test_a_burst_of_fsyncs_does_not_poll_the_feed_once_per_save(
    server: ServerProc, mnt: MountProc
) -> None:
    """Each fsync is a commit, and each commit answers the mount's open change-feed
    poll with its own change; the next poll waits a moment after such an echo, so 40
    saves cost a handful of feed requests, not 40 (E1 of scripts/bench). A change made
    elsewhere in the middle of the burst is not missed: it shows through the feed, well
    before the --poll-interval (10 s) would find it."""
    (mnt.path / "warm").write_bytes(b"x")
    mnt.sync()
    mark = server.mark()
    began = time.monotonic()
    for i in range(40):
        fd = os.open(mnt.path / f"e{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
        finally:
            os.close(fd)
        if i == 20:
            server.put(mnt.repo, "elsewhere.txt", b"from another client")
            made = time.monotonic()
    burst = time.monotonic() - began
    wait_until(lambda: (mnt.path / "elsewhere.txt").exists(), 10, "the other client's file")
    assert time.monotonic() - made < 5.0
    lines = server.requests(since=mark)
    commits = [r for r in lines if r.method == "POST" and r.path.endswith("/commits")]
    polls = [r for r in lines if r.path.endswith("/changes")]
    assert len(commits) >= 40, Counter(f"{r.method} {r.path}" for r in lines)
    # One poll per pause at most (plus the first, the other client's change, the sync
    # and the last); before, one per save: 41. (On a loaded machine the saves are
    # slower and the bound grows with them.)
    most = int(burst / OWN_ECHO_PAUSE) + 4
    assert len(polls) <= most, f"{len(polls)} feed polls for 40 saves in {burst:.2f} s"


def test_a_burst_of_writes_uploads_its_content_while_it_goes_on(
    server: ServerProc, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """The same `cp -r` with its changes held (a minute's flush delay): its content
    goes to the server in packs while it copies, before anything is committed; the sync
    then sends one commit, and at most one pack of what was left."""
    src = tmp_path / "src"
    files = make_tree(src)
    mnt = mount_factory(extra_args=["--flush-delay", "60", "--max-flush-window", "120"])
    mark = server.mark()
    subprocess.run(["cp", "-r", str(src), str(mnt.path / "tree")], check=True, timeout=300)

    def sent() -> list[str]:
        lines = server.requests(mark)
        return [f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in lines if r.method == "POST"]

    wait_until(lambda: sent().count("POST blobs") >= 2, 60, "packs sent during the copy")
    assert "POST commits" not in sent()
    ahead = sent().count("POST blobs")
    mnt.sync(timeout=300)
    assert server.tree(mnt.repo) == {f"tree/{rel}": data for rel, data in files.items()}
    writes = [r for r in server.requests(mark) if r.method in WRITE_METHODS]
    summary = Counter(f"{r.method} {r.path.rsplit('/', 1)[-1][:12]} {r.status}" for r in writes)
    assert sent().count("POST commits") == 1, summary
    assert sent().count("POST blobs") <= ahead + 2, summary  # (one on its way, one left)
    assert len(writes) <= 10, summary


def test_a_large_file_is_uploaded_while_dd_writes_it(
    server: ServerProc, mnt: MountProc, tmp_path: Path
) -> None:
    """dd (which opens its output, dup2()s and closes it, then writes) of 40 MiB with
    conv=fsync: the upload starts while dd writes (one POST /blobs as octet-stream,
    staged, named by the server), the commit names it, and nothing is uploaded again."""
    src = tmp_path / "big.bin"
    data = random.Random(3).randbytes(40 * MiB)
    src.write_bytes(data)
    mark = server.mark()
    subprocess.run(
        ["dd", f"if={src}", f"of={mnt.path / 'big.bin'}", "bs=1M", "conv=fsync", "status=none"],
        check=True,
        timeout=120,
    )
    writes = [r for r in server.requests(mark) if r.method in WRITE_METHODS]
    summary = [f"{r.method} {r.path.rsplit('/', 2)[-2:]} {r.status}" for r in writes]
    assert [(r.method, r.path.endswith("/blobs"), r.status) for r in writes] == [
        ("POST", True, 201),
        ("POST", False, 201),
    ], summary
    assert server.tree(mnt.repo) == {"big.bin": data}
