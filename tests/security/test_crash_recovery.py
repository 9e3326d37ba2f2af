"""Issue 17 #1: a crash must never brick a mount, and never lose or double a change.

`kill -9` of the daemon at random points of a flush (and of the replay at the next
start), then a remount, many times over: every change whose close() returned reaches
the server exactly once. And a journal row whose content file is gone (whatever the
cause) is set aside with a clear report while every other change still goes.
REPOMOUNT_CRASH_TRIALS raises the number of trials (CI runs the default)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from support.mount import MountProc, force_unmount, is_mounted, repomount
from support.server import ServerProc
from support.util import wait_until

TRIALS = int(os.environ.get("REPOMOUNT_CRASH_TRIALS", "20"))


def _head(server: ServerProc, repo: str) -> str:
    with server.client() as c:
        return str(c.get(f"/v1/repos/{repo}").json()["head"])


def _changes_since(server: ServerProc, repo: str, head: str) -> list[dict]:
    out: list[dict] = []
    with server.client() as c:
        while True:
            r = c.get(f"/v1/repos/{repo}/changes", params={"since": head})
            r.raise_for_status()
            body = r.json()
            if not body["changes"]:
                return out
            out += body["changes"]
            head = body["changes"][-1]["head"]


def _kill_9(m: MountProc) -> None:
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(10)
    force_unmount(m.path)


def _start_then_kill_during_replay(m: MountProc, rng: random.Random) -> None:
    """Start a mount and kill it at a random point of its start (the replay of the
    journal runs before it serves)."""
    m.path.mkdir(parents=True, exist_ok=True)
    with m.log_path.open("ab") as log:
        m.proc = subprocess.Popen(
            m.command(), env=m.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    time.sleep(rng.uniform(0.3, 1.2))  # the point of the kill: random by design
    _kill_9(m)


def test_kill_9_at_random_points_of_flushes_delivers_each_change_once(
    server: ServerProc, mount_factory
) -> None:
    rng = random.Random(int(os.environ.get("REPOMOUNT_CRASH_SEED", "17")))
    first: MountProc = mount_factory(extra_args=["--flush-delay", "0.02"])
    head = _head(server, first.repo)
    _kill_9(first)
    m = MountProc(
        first.src, first.path, work_dir=first.work_dir, token=server.token, repo=first.repo,
        extra_args=["--flush-delay", "0.02"],
    )  # fmt: skip
    expected: dict[str, bytes] = {}
    written: Counter[str] = Counter()  # path -> closes that changed its content
    try:
        for t in range(TRIALS):
            if t % 10 == 9:
                _start_then_kill_during_replay(m, rng)
            m.start(timeout=60)  # replays what the last kill left, then serves
            # A burst of closes, each a journaled change once close() returns.
            for i in range(8):
                rel = f"t{t}/f{i}.txt"
                (m.path / rel).parent.mkdir(exist_ok=True)
                data = f"trial {t} file {i}\n".encode() * (1 + rng.randrange(200))
                (m.path / rel).write_bytes(data)
                expected[rel] = data
                written[rel] += 1
            with (m.path / "log.txt").open("ab") as f:  # echo >> log
                f.write(f"trial {t}\n".encode())
            expected["log.txt"] = expected.get("log.txt", b"") + f"trial {t}\n".encode()
            if t:
                old = f"t{t - 1}/f0.txt"
                (m.path / old).rename(m.path / f"t{t - 1}/moved.txt")
                expected[f"t{t - 1}/moved.txt"] = expected.pop(old)
                (m.path / f"t{t - 1}/f1.txt").unlink()
                del expected[f"t{t - 1}/f1.txt"]
            time.sleep(rng.uniform(0, 0.25))  # the point of the kill: random by design
            _kill_9(m)
        m.start(timeout=60)
        m.sync()
        assert server.tree(m.repo) == expected
        status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
        assert status["pending"] == [] and status["set_aside"] == []
        assert status["conflicts"] == []  # a replay never conflicts with its own landing
        # Exactly once: each file was written by one close; no replay wrote it again.
        changes = _changes_since(server, m.repo, head)
        writes = Counter(c["path"] for c in changes if c["op"] == "write")
        for rel, n in written.items():
            assert writes[rel] == n, (rel, writes[rel])
    finally:
        m.stop()


def test_a_row_whose_content_file_is_gone_is_set_aside_and_the_rest_replays(
    server: ServerProc, mount_factory
) -> None:
    m: MountProc = mount_factory(extra_args=["--flush-delay", "3600"])
    os.listdir(m.path)
    for name in ("a.txt", "b.txt", "c.txt"):
        (m.path / name).write_bytes(name.encode())
    _kill_9(m)
    blobs = {p.read_bytes(): p for p in m.state_dir.rglob("blobs/*")}
    assert len(blobs) == 3
    blobs[b"b.txt"].unlink()  # gone (what the crash the probe found left behind)
    m2 = MountProc(m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo)
    m2.start(timeout=60)  # was: "mount failed: Exceptions from Trio nursery"
    try:
        m2.sync()
        assert server.tree(m.repo) == {"a.txt": b"a.txt", "c.txt": b"c.txt"}
        status = json.loads(repomount("status", str(m2.path), "--json", env=m2.env).stdout)
        [aside] = status["set_aside"]
        assert aside["path"] == "b.txt" and "missing" in aside["reason"]
        [report] = list(m.state_dir.rglob("set-aside.txt"))
        assert "b.txt" in report.read_text() and "missing" in report.read_text()
        assert "set aside" in m2.log()
        assert sorted(os.listdir(m2.path)) == ["a.txt", "c.txt"]
    finally:
        m2.stop()


def test_a_content_file_deleted_while_mounted_fails_only_its_own_sync(
    server: ServerProc, mount_factory, tmp_path: Path
) -> None:
    m: MountProc = mount_factory(extra_args=["--flush-delay", "3600"])
    os.listdir(m.path)
    (m.path / "gone.txt").write_bytes(b"lost")
    [blob] = list(m.state_dir.rglob("blobs/*"))
    blob.unlink()  # behind the daemon's back
    (m.path / "kept.txt").write_bytes(b"kept")
    r = repomount("sync", str(m.path), "--timeout", "30", env=m.env)
    assert r.returncode == 1 and "gone.txt set aside" in r.stderr, r.stderr
    assert server.tree(m.repo) == {"kept.txt": b"kept"}  # not stuck behind it
    status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
    assert [a["path"] for a in status["set_aside"]] == ["gone.txt"]
    wait_until(lambda: is_mounted(m.path), 5, "the mount to stay up")
