"""Durable batched write-back: batching economy, crash replay, offline, remote changes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from support.mount import MountProc, is_mounted, repomount
from support.server import ServerProc
from support.util import wait_until

WRITE_METHODS = {"PUT", "POST", "DELETE"}


def _make_tree(root: Path, count: int) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        rel = f"t/d{i % 20}/e{i % 3}/f{i}.txt"
        data = f"file {i}\n".encode() * (1 + i % 7)
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel] = data
    return files


def _writes(server: ServerProc, repo: str, since: int) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in server.requests(since=since)
        if r.method in WRITE_METHODS and r.path.startswith(f"/v1/repos/{repo}/")
    ]


def _changes_since(server: ServerProc, repo: str, head: str) -> list[dict]:
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/changes", params={"since": head})
        r.raise_for_status()
        return r.json()["changes"]


def _head(server: ServerProc, repo: str) -> str:
    with server.client() as c:
        return c.get(f"/v1/repos/{repo}").json()["head"]


def _retrying(fn, attempts: int = 20):
    for _ in range(attempts - 1):
        try:
            return fn()
        except Exception:
            time.sleep(0.1)  # a pause between retries, not a wait: the faults are random
    return fn()


def test_cp_r_of_2000_files_is_batched(server: ServerProc, mnt: MountProc, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _make_tree(src, 2000)
    mark = server.mark()
    subprocess.run(["cp", "-r", str(src / "t"), str(mnt.path)], check=True, timeout=300)
    mnt.sync(timeout=120)
    assert server.tree(mnt.repo) == files
    writes = _writes(server, mnt.repo, mark)
    assert len(writes) <= 0.02 * len(files), writes


def test_kill_9_before_upload_then_remount_delivers_once(
    server: ServerProc, mount_factory, tmp_path: Path
) -> None:
    m: MountProc = mount_factory(extra_args=["--flush-delay", "0.2"])
    head = _head(server, m.repo)
    os.listdir(m.path)
    server.stop()  # nothing can be sent from now on
    expected = {}
    for i in range(100):
        data = f"payload {i}\n".encode()
        (m.path / f"f{i:03}.txt").write_bytes(data)  # close() returns: journaled
        expected[f"f{i:03}.txt"] = data
    m.kill()  # kill -9: no drain, no goodbye
    server.start()
    assert server.tree(m.repo) == {}
    m2 = MountProc(m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo)
    m2.start(timeout=60)  # replays the journal before serving
    try:
        assert server.tree(m.repo) == expected
        writes = Counter(c["path"] for c in _changes_since(server, m.repo, head))
        assert writes == Counter(expected.keys()), "each file exactly once"
        assert sorted(os.listdir(m2.path)) == sorted(expected)
        status = json.loads(repomount("status", str(m2.path), "--json", env=m2.env).stdout)
        assert status["pending"] == []
    finally:
        m2.stop()


def test_unmount_after_kill_9_names_what_the_journal_holds(
    server: ServerProc, mount_factory
) -> None:
    """A walkthrough found `repomount unmount` of a mount whose daemon was killed saying
    "unmounted" with exit 0 while the journal held changes, and `repomount mount` there
    saying only "is already a mountpoint"."""
    m: MountProc = mount_factory(extra_args=["--flush-delay", "60", "--max-flush-window", "120"])
    # (a shell's `>` makes two journal rows per new file: still one change each)
    subprocess.run(["sh", "-c", "echo a > new1.txt; echo b > new2.txt"], cwd=m.path, check=True)
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)  # no drain, no goodbye: the mount stays behind
    m.proc.wait(10)
    again = repomount("mount", m.src, str(m.path), env=m.env)
    assert again.returncode == 2
    assert "daemon is gone" in again.stderr and f"repomount unmount {m.path}" in again.stderr
    for command in ("status", "sync"):  # (said only "no repomount mount answers")
        asked = repomount(command, str(m.path), env=m.env)
        assert asked.returncode == 1
        assert "daemon is gone" in asked.stderr, asked.stderr
        assert f"repomount unmount {m.path}" in asked.stderr
    started = time.monotonic()
    gone = repomount("unmount", str(m.path), env=m.env)
    # (it waited 15 s for the killed daemon's control socket to go, which it never does)
    assert time.monotonic() - started < 10
    assert gone.returncode == 1, gone.stderr
    assert not is_mounted(m.path)
    said = gone.stderr
    assert "it had not sent 2 changes (new1.txt, new2.txt): they stay" in said, said
    assert str(m.state_dir) in said and "go out at the next mount" in said
    assert server.tree(m.repo) == {}
    m.start()  # the next mount sends them, as said
    assert server.tree(m.repo) == {"new1.txt": b"a\n", "new2.txt": b"b\n"}


def test_mount_over_a_killed_daemon_says_so_while_the_root_is_cached(mount_factory) -> None:
    """The check looked with stat(), which the kernel answers from its attribute cache
    for a while after the daemon died: a mount right after the kill said only "is
    already a mountpoint"."""
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "60"])
    assert m.proc is not None
    os.stat(m.path)  # the root's attributes are now cached
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(10)
    os.stat(m.path)  # (answered from the cache: the daemon is gone)
    again = repomount("mount", m.src, str(m.path), env=m.env)
    assert again.returncode == 2
    assert "daemon is gone" in again.stderr, again.stderr
    assert repomount("unmount", str(m.path), env=m.env).returncode == 0
    assert not is_mounted(m.path)


def test_server_away_for_30s_during_a_write_burst(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "1"])
    (m.path / "cached.txt").write_bytes(b"read me while offline")
    m.sync()
    assert (m.path / "cached.txt").read_bytes() == b"read me while offline"
    server.stop()
    started = time.monotonic()
    expected = {"cached.txt": b"read me while offline"}
    i = 0
    while time.monotonic() - started < 30:
        data = os.urandom(100) * (1 + i % 50)
        (m.path / f"burst{i}.bin").write_bytes(data)  # no error may reach the writer
        expected[f"burst{i}.bin"] = data
        assert (m.path / "cached.txt").read_bytes() == b"read me while offline"
        i += 1
        time.sleep(0.05)  # not a wait: the burst's pace, writes spread over the 30 s
    status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
    assert status["online"] is False and status["pending"]
    assert sorted(os.listdir(m.path)) == sorted(expected)
    server.start()
    m.sync(timeout=120)
    assert server.tree(m.repo) == expected


def test_two_mounts_keep_both(server: ServerProc, mount_factory) -> None:
    a: MountProc = mount_factory(extra_args=["--flush-delay", "0.1"])
    (a.path / "shared.txt").write_bytes(b"v1")
    a.sync()
    b: MountProc = mount_factory(a.repo, create=False, extra_args=["--flush-delay", "0.1"])
    assert (b.path / "shared.txt").read_bytes() == b"v1"
    fa = os.open(a.path / "shared.txt", os.O_WRONLY | os.O_TRUNC)
    fb = os.open(b.path / "shared.txt", os.O_WRONLY | os.O_TRUNC)
    os.write(fa, b"from a")
    os.write(fb, b"from b")
    os.fsync(fa)  # a wins
    with pytest.raises(OSError) as e:
        os.fsync(fb)
    assert e.value.errno == errno.ESTALE
    os.close(fa)
    os.close(fb)
    tree = server.tree(a.repo)
    assert tree.pop("shared.txt") == b"from a"
    assert list(tree.values()) == [b"from b"]


def test_two_mounts_fail_policy_keeps_loser_pending(server: ServerProc, mount_factory) -> None:
    args = ["--flush-delay", "0.1", "--on-conflict", "fail"]
    a: MountProc = mount_factory(extra_args=args)
    (a.path / "shared.txt").write_bytes(b"v1")
    a.sync()
    b: MountProc = mount_factory(a.repo, create=False, extra_args=args)
    assert (b.path / "shared.txt").read_bytes() == b"v1"
    fb = os.open(b.path / "shared.txt", os.O_WRONLY | os.O_TRUNC)
    os.write(fb, b"from b")  # b edits v1...
    (a.path / "shared.txt").write_bytes(b"from a")  # ...while a replaces v1
    # No subprocess while fb is open: its exec would close (flush) fb, a commit point.
    wait_until(lambda: server.tree(a.repo)["shared.txt"] == b"from a", what="a's upload")
    with pytest.raises(OSError) as e:
        os.fsync(fb)
    os.close(fb)
    assert e.value.errno == errno.ESTALE
    assert server.tree(a.repo) == {"shared.txt": b"from a"}
    status = json.loads(repomount("status", str(b.path), "--json", env=b.env).stdout)
    assert [p["path"] for p in status["pending"]] == ["shared.txt"]
    assert (b.path / "shared.txt").read_bytes() == b"from b"  # kept locally, pending


def test_remote_change_shows_at_once_with_the_change_feed(
    server: ServerProc, mount_factory
) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "3600"])
    (m.path / "f.txt").write_bytes(b"old")
    m.sync()
    assert (m.path / "f.txt").read_bytes() == b"old"
    server.put(m.repo, "f.txt", b"new content")
    server.put(m.repo, "added.txt", b"+")
    wait_until(lambda: (m.path / "f.txt").read_bytes() == b"new content", 5, "feed")
    wait_until(lambda: (m.path / "added.txt").exists(), 5, "new file")
    with server.client() as c:
        c.delete(f"/v1/repos/{m.repo}/files/added.txt").raise_for_status()
    wait_until(lambda: not (m.path / "added.txt").exists(), 5, "deletion")


def test_own_commits_coming_back_through_the_feed_are_not_relisted(
    server: ServerProc, mount_factory
) -> None:
    """The feed reports our own commits too; the mount shows them already, so they
    cost no listing (for a directory of 10,000 files that is a long merge each time,
    which stalled every request on the mount). A foreign change still lists once."""
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "3600"])
    d = m.path / "d"
    d.mkdir()
    for i in range(200):
        (d / f"f{i}").write_bytes(b"%d" % i)
    (m.path / "top.txt").write_bytes(b"ours")
    os.listdir(m.path)
    mark = server.mark()
    m.sync()
    server.put(m.repo, "theirs.txt", b"+")  # after ours: seen once ours were handled
    wait_until(lambda: (m.path / "theirs.txt").exists(), 10, "the feed")
    listings = [r for r in server.requests(since=mark) if r.path.endswith("/tree")]
    assert len(listings) == 1, listings  # the root, for theirs.txt (was: 3, d and root)
    assert len(os.listdir(d)) == 200


def test_remote_change_shows_within_the_poll_interval(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory(
        extra_args=["--metadata-ttl", "3600", "--no-change-feed", "--poll-interval", "1"]
    )
    (m.path / "f.txt").write_bytes(b"old")
    m.sync()
    assert (m.path / "f.txt").read_bytes() == b"old"
    server.put(m.repo, "f.txt", b"polled")
    wait_until(lambda: (m.path / "f.txt").read_bytes() == b"polled", 5, "poll")


def test_a_repo_deleted_and_made_again_is_listed_again(server: ServerProc, mount_factory) -> None:
    """Someone deletes the repo and makes it again under its name while it is mounted:
    the mount shows the new repo's files, not the old one's. (Its heads go on from the
    old one's, so the feed's position there is refused, and the feed's 404 meanwhile
    has the tree listed again once it is back.)"""
    m: MountProc = mount_factory(extra_args=["--poll-interval", "0.5"])
    for name in ("old.txt", "older.txt"):  # two commits of ours: the mount is at head 2
        (m.path / name).write_bytes(b"old")
        m.sync()
    with server.client() as c:
        assert c.delete(f"/v1/repos/{m.repo}").status_code == 204
    server.create_repo(m.repo)
    # One commit: had heads started from 0 again, its listing (at head 1) would look
    # older than our own last commit, and the old names would stay.
    server.put(m.repo, "new.txt", b"new")
    wait_until(lambda: sorted(os.listdir(m.path)) == ["new.txt"], 15, "the new repo listed")
    assert (m.path / "new.txt").read_bytes() == b"new"


def _own_server_and_mount(
    server_factory, tmp_path: Path, repo: str, server_args: list[str], mount_args: list[str]
) -> tuple[ServerProc, MountProc]:
    """A server of the test's own (started with `server_args`), a repo on it, mounted."""
    server: ServerProc = server_factory(server_args)
    server.create_repo(repo)
    m = MountProc(
        f"{server.url}/{repo}", tmp_path / f"{repo}-mnt", work_dir=tmp_path / f"{repo}-work",
        token=server.token, repo=repo, extra_args=mount_args,
    )  # fmt: skip
    m.start(timeout=60)
    return server, m


def test_faults_on_10_percent_of_requests(server_factory, mount_factory, tmp_path) -> None:
    flaky, m = _own_server_and_mount(
        server_factory, tmp_path, "flaky", ["--inject-faults", "0.1"],
        ["--flush-delay", "0.05", "--max-flush-window", "0.2"],
    )  # fmt: skip
    try:
        expected = {}
        for i in range(500):
            data = f"{i}:".encode() + os.urandom(64)
            (m.path / f"x{i:03}.bin").write_bytes(data)
            expected[f"x{i:03}.bin"] = data
            if i % 50 == 0:
                time.sleep(0.1)  # not a wait: a gap, so the writes make several batches
        m.sync(timeout=180)

        def changes() -> list[dict]:
            with flaky.client() as c:
                r = c.get("/v1/repos/flaky/changes", params={"since": "0"})
                r.raise_for_status()
                return r.json()["changes"]

        # The test's own requests meet the injected faults too: retry them.
        assert _retrying(lambda: flaky.tree("flaky")) == expected
        changes = _retrying(changes)
        assert Counter(ch["path"] for ch in changes) == Counter(expected.keys()), "no duplicates"
    finally:
        m.stop()


def test_a_file_too_large_for_the_server_holds_only_itself(server_factory, tmp_path: Path) -> None:
    """A 20 MiB file for a server that takes 10 MiB at most (since a restart: the mount
    was told 64 MiB), saved with two small ones: the server refuses its content (413),
    and only it is held, shown by status with the server's reason and still readable
    here. The small ones of its batch land, and `repomount sync` waits for them before
    it says what was not uploaded. (Before, the refusal held the whole batch.)"""
    small, m = _own_server_and_mount(
        server_factory, tmp_path, "lim", ["--max-file-size", "64M"],
        ["--flush-delay", "60", "--max-flush-window", "120"],
    )  # fmt: skip
    try:
        small.stop()
        small.extra_args = ["--max-file-size", "10M"]
        small.start()
        big = os.urandom(20 << 20)
        (m.path / "a.txt").write_bytes(b"a\n")
        (m.path / "big.bin").write_bytes(big)
        (m.path / "b.txt").write_bytes(b"b\n")
        r = repomount("sync", str(m.path), "--timeout", "60", env=m.env)
        assert r.returncode != 0 and "big.bin" in r.stderr and "413" in r.stderr, r.stderr
        assert small.tree("lim") == {"a.txt": b"a\n", "b.txt": b"b\n"}
        status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
        assert [(p["path"], p["state"]) for p in status["pending"]] == [("big.bin", "held")]
        assert (m.path / "big.bin").read_bytes() == big
    finally:
        m.stop()


def test_writes_past_the_servers_file_size_limit_are_efbig(server_factory, tmp_path: Path) -> None:
    """The server says it takes files of at most 1 MiB: a write past that is cut short
    and the next one refused with EFBIG ("File too large"), a truncate past it is EFBIG
    and changes nothing, as on a local filesystem at its largest file size. What was
    written up to the limit lands; nothing is held. (Before: every call succeeded, and
    the change was held by the server's 413 after hashing the whole file.)"""
    lim, m = _own_server_and_mount(server_factory, tmp_path, "mb", ["--max-file-size", "1M"], [])
    try:
        r = subprocess.run(
            ["truncate", "-s", "1T", str(m.path / "sparse")], capture_output=True, text=True
        )
        assert r.returncode != 0 and "File too large" in r.stderr, r.stderr
        assert not (m.path / "sparse").exists() or (m.path / "sparse").stat().st_size == 0
        data = os.urandom(3 << 19)  # 1.5 MiB
        with open(m.path / "big.bin", "wb", buffering=0) as f:
            assert f.write(data) == 1 << 20  # cut short at the limit
            with pytest.raises(OSError) as refused:
                f.write(data[1 << 20 :])
            assert refused.value.errno == errno.EFBIG
        r = subprocess.run(
            ["dd", "if=/dev/zero", f"of={m.path / 'dd.bin'}", "bs=64k", "count=32"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert r.returncode != 0 and "File too large" in r.stderr, r.stderr
        (m.path / "ok.txt").write_bytes(b"fits\n")
        os.truncate(m.path / "ok.txt", 1 << 20)  # at the limit: taken
        r = repomount("sync", str(m.path), "--timeout", "60", env=m.env)
        assert r.returncode == 0, r.stderr
        tree = lim.tree("mb")
        assert tree["big.bin"] == data[: 1 << 20] and tree["dd.bin"] == bytes(1 << 20)
        assert tree["ok.txt"] == b"fits\n" + bytes((1 << 20) - 5)
        assert set(tree) <= {"big.bin", "dd.bin", "ok.txt", "sparse"}
    finally:
        m.stop()


def test_unmount_with_the_remote_away_keeps_the_journal(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory()
    os.listdir(m.path)
    server.stop()
    (m.path / "late.txt").write_bytes(b"written while the server was away")
    r = repomount("unmount", str(m.path), "--drain-timeout", "3", env=m.env)
    assert r.returncode == 1 and "next mount" in r.stderr, r.stderr
    assert m.proc is not None and m.proc.wait(90) == 1
    server.start()
    m2 = MountProc(m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo)
    m2.start(timeout=60)
    try:
        assert server.tree(m.repo) == {"late.txt": b"written while the server was away"}
    finally:
        m2.stop()


def test_a_change_that_landed_after_the_unmount_gave_up_stays_visible(
    server: ServerProc, mount_factory
) -> None:
    """The server stalls (SIGSTOP) with a save on the wire; the unmount gives up and
    keeps it in the journal; the server goes on and commits it; another writer changes
    the file; the next mount replays the save and gets the first answer, with its old
    head. The file was missing from the mount (ENOENT) until another change reached
    the feed (found by a new-user walkthrough)."""
    m: MountProc = mount_factory()
    (m.path / "doc.txt").write_bytes(b"v1\n")
    (m.path / "other.txt").write_bytes(b"keep\n")
    m.sync()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        (m.path / "doc.txt").write_bytes(b"local edit\n")
        r = repomount("unmount", str(m.path), "--drain-timeout", "3", env=m.env)
        assert r.returncode == 1, r.stderr
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert m.proc is not None and m.proc.wait(90) == 1
    wait_until(lambda: server.tree(m.repo)["doc.txt"] == b"local edit\n", 10, "the commit")
    with server.client() as c:
        url = f"/v1/repos/{m.repo}/files/doc.txt"
        version = c.get(url).headers["ETag"]
        c.put(url, content=b"other edit\n", headers={"If-Match": version}).raise_for_status()
    m2 = MountProc(m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo)
    m2.start(timeout=60)
    try:
        assert "replaying 1 change(s)" in m2.log()
        assert sorted(os.listdir(m2.path)) == ["doc.txt", "other.txt"]
        assert (m2.path / "doc.txt").read_bytes() == b"other edit\n"
    finally:
        m2.stop()


def test_local_only_names_stay_local(server: ServerProc, mnt: MountProc) -> None:
    (mnt.path / ".notes.txt.swp").write_bytes(b"swap")
    (mnt.path / "draft~").write_bytes(b"backup")
    (mnt.path / "kept.txt").write_bytes(b"kept")
    mnt.sync()
    assert server.tree(mnt.repo) == {"kept.txt": b"kept"}
    status = json.loads(repomount("status", str(mnt.path), "--json", env=mnt.env).stdout)
    assert status["local_only"] == [".notes.txt.swp", "draft~"]
    assert (mnt.path / ".notes.txt.swp").read_bytes() == b"swap"
    os.rename(mnt.path / "draft~", mnt.path / "draft.txt")  # now an ordinary name
    mnt.sync()
    assert server.tree(mnt.repo) == {"kept.txt": b"kept", "draft.txt": b"backup"}
