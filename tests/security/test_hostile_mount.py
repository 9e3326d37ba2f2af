"""Issue 17 #4 and #5 through a real mount: a slow or hostile server.

A `repomount mount` subprocess on the hostile server of `support/hostile.py`, with
small timeouts given the way a user gives them (`--answer-timeout`, `--read-timeout`,
`--connect-timeout`). Probe findings replayed: `ls` of the mount's root hung for 795 s
on a listing that never finished; one entry of an unknown type made `ls` of its whole
directory fail with EIO; a deeply nested answer at mount time was a RecursionError.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hostile import Answer, HostileServer, Overflowing, Silent, StopsAfter, deep_json
from support.mount import MountProc, force_unmount, is_mounted, repomount
from support.util import wait_until

pytestmark = pytest.mark.mount

LARGE = bytes(range(256)) * (40 << 12)  # 10 MiB: read while it arrives (vfs/partial.py)
FILES = {
    "a.txt": b"hello\n",
    "d/b.txt": b"below\n",
    "e/c.txt": b"elsewhere\n",
    "f/small.bin": LARGE[: 1 << 20],
    "f/large.bin": LARGE,
}
ANSWER = 3.0  # --answer-timeout (and --read-timeout) of these mounts, seconds
SLACK = 5.0  # what a loaded 2-core machine may add to a bound (FUSE, process start)
OPTIONS = [
    "--answer-timeout", str(ANSWER), "--read-timeout", str(ANSWER), "--connect-timeout", "2",
    "--metadata-ttl", "0.5", "--no-change-feed", "--poll-interval", "3600",
]  # fmt: skip


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer(FILES) as server:
        yield server


@pytest.fixture
def mount(hostile: HostileServer, tmp_path: Path) -> Iterator[MountProc]:
    m = MountProc(
        hostile.src, tmp_path / "mnt", work_dir=tmp_path / "work", token=None, extra_args=OPTIONS
    )
    m.start()
    try:
        yield m
    finally:
        hostile.closing.set()  # (ends the stalls, so the mount can drain and go)
        m.stop()


def ls(path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ls", path], capture_output=True, text=True, timeout=timeout)


def test_ls_of_a_stalled_listing_fails_within_the_bound_and_the_mount_stays_usable(
    hostile: HostileServer, mount: MountProc
) -> None:
    hostile.misbehave(lambda r: r.is_tree(""), Silent())  # the first listing: never listed
    began = time.monotonic()
    stalled = subprocess.Popen(
        ["ls", mount.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        hostile.wait_for(lambda r: r.is_tree(""))
        # Meanwhile the mount answers what needs no listing.
        assert mount.path.stat().st_ino == 1
        status = repomount("status", str(mount.path), "--json", env=mount.env, timeout=30)
        assert status.returncode == 0 and stalled.poll() is None
        out, err = stalled.communicate(timeout=ANSWER + SLACK + 30)
    finally:
        stalled.kill()
    took = time.monotonic() - began
    assert stalled.returncode != 0 and "Input/output error" in err, (out, err)
    assert took < ANSWER + SLACK, f"ls took {took:.1f} s"
    assert "no answer in 3 s" in mount.log()
    # The server answers again: so does the mount.
    hostile.behave()
    wait_until(lambda: ls(mount.path).stdout.split() == ["a.txt", "d", "e", "f"], 30, "the listing")


def test_a_stalled_relisting_serves_what_was_listed_while_other_directories_go_on(
    hostile: HostileServer, mount: MountProc
) -> None:
    assert ls(mount.path / "d").stdout.split() == ["b.txt"]  # listed
    listed_before = sum(r.is_tree("d") for r in hostile.requests)
    hostile.misbehave(lambda r: r.is_tree("d"), Silent())  # ... and now stalled
    tries: list[subprocess.Popen[str]] = []

    def relisting_stalled() -> bool:
        p = subprocess.Popen(
            ["ls", mount.path / "d"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        tries.append(p)
        try:
            p.wait(0.3)  # trusted for --metadata-ttl: answered at once
        except subprocess.TimeoutExpired:
            pass
        return sum(r.is_tree("d") for r in hostile.requests) > listed_before

    try:
        wait_until(relisting_stalled, 30, "a re-listing of d to be stalled")
        stalled = tries[-1]
        seen = time.monotonic()
        for _ in range(3):  # other directories and files, while d's listing hangs
            began = time.monotonic()
            assert ls(mount.path).stdout.split() == ["a.txt", "d", "e", "f"]
            assert ls(mount.path / "e").stdout.split() == ["c.txt"]
            assert (mount.path / "a.txt").read_bytes() == b"hello\n"
            assert time.monotonic() - began < 2.0
        assert stalled.poll() is None
        out, err = stalled.communicate(timeout=ANSWER + SLACK + 30)
        # Offline now: what was listed is what `ls` shows, within the bound.
        assert stalled.returncode == 0 and out.split() == ["b.txt"], err
        assert time.monotonic() - seen < ANSWER + SLACK
    finally:
        for p in tries:
            p.kill()
            p.wait()


@pytest.mark.parametrize("name", ["small.bin", "large.bin"])
def test_a_download_that_stops_fails_the_read_within_the_bound(
    hostile: HostileServer, mount: MountProc, name: str
) -> None:
    """A cache fill (small) and a read while the file arrives (large, ranged streams)."""
    hostile.misbehave(lambda r: r.route == f"/files/f/{name}", StopsAfter(sent=100_000))
    began = time.monotonic()
    r = subprocess.run(["cat", mount.path / "f" / name], capture_output=True, timeout=120)
    took = time.monotonic() - began
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    assert took < ANSWER + SLACK, f"cat took {took:.1f} s"
    assert (mount.path / "a.txt").read_bytes() == b"hello\n"  # the rest goes on
    hostile.behave()
    assert (mount.path / "f" / name).read_bytes() == FILES[f"f/{name}"]


@pytest.mark.parametrize("name", ["small.bin", "large.bin"])
def test_a_download_that_never_ends_is_cut_off_near_the_listed_size(
    hostile: HostileServer, mount: MountProc, tmp_path: Path, name: str
) -> None:
    """The security probe of this stop: a file listed as 6 bytes answered with an
    endless chunked body at full speed; the mount wrote 2.2 GB into its cache in 5 s,
    and read all 3 GiB the fake sent before the content check failed the open. Now an
    answer is refused once it passes twice the listed size and 1 MiB (a cache fill), or
    the size itself (a read while the file arrives: ranged reads need exact sizes; a
    reader that had every byte by then keeps them)."""
    size = len(FILES[f"f/{name}"])
    endless = hostile.misbehave(lambda r: r.route == f"/files/f/{name}", Overflowing())
    assert isinstance(endless, Overflowing)
    r = subprocess.run(["cat", mount.path / "f" / name], capture_output=True, timeout=120)
    if name == "small.bin":  # (its content check fails: the bytes are not its version)
        assert r.returncode != 0 and b"Input/output error" in r.stderr
    else:
        assert r.returncode != 0 or r.stdout == FILES[f"f/{name}"]
    cached = sum(p.stat().st_size for p in (tmp_path / "work").rglob("*") if p.is_file())
    assert cached < 3 * size + (8 << 20), f"{cached} bytes under the mount's directories"
    assert endless.sent < 3 * size + (64 << 20)  # (the socket buffers hold a few MiB)
    hostile.behave()
    assert (mount.path / "f" / name).read_bytes() == FILES[f"f/{name}"]


def test_a_directory_with_bad_entries_lists_the_rest(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.bad_entries = [
        {"path": "pipe", "type": "fifo", "size": 0},
        {"path": "nan.txt", "type": "file", "size": 1, "mtime": float("nan")},
        {"path": "huge.txt", "type": "file", "size": 10**30},
        {"path": "when.txt", "type": "file", "size": 1, "mtime": "yesterday"},
    ]
    m = MountProc(hostile.src, tmp_path / "mnt", work_dir=tmp_path / "w", token=None)
    m.start()
    try:
        r = subprocess.run(["ls", "-l", m.path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        names = [line.split()[-1] for line in r.stdout.splitlines()[1:]]
        assert names == ["a.txt", "d", "e", "f"]
        assert (m.path / "d" / "b.txt").read_bytes() == b"below\n"
        log = m.log()
        assert "skipping entry 'pipe': unknown type 'fifo'" in log
        for name in ("'nan.txt'", "'huge.txt'", "'when.txt'"):
            assert sum(name in line for line in log.splitlines()) == 1
    finally:
        m.stop()


def test_a_deeply_nested_answer_at_mount_time_is_one_line(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.misbehave(lambda r: r.route == "", Answer(deep_json(100_000)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["--cache-dir", str(tmp_path / "c"), "--state-dir", str(tmp_path / "s")]
    try:
        r = repomount("mount", hostile.src, str(mnt), *args, timeout=60)
        assert r.returncode != 0 and not is_mounted(mnt)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("repomount: "), r.stderr
        assert "nested deeper than 64 levels" in lines[0]
    finally:
        force_unmount(mnt)


FAKE = "2026-12-07 08:00:00 INFO repomount.mounting: FAKE unmounted cleanly"
FORGED = f"boom\n{FAKE}\x1b[31m"


def test_control_characters_from_the_remote_are_neither_shown_nor_printed_raw(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Security probe: names `esc\\x1b[31mred` and `newline\\nname` listed by a remote
    showed in the mount, and a commit refused with FORGED put a forged line in the mount
    log and raw escapes in `status` and `unmount`. Now the names are left out (logged,
    escaped), and the message is escaped everywhere it is printed."""
    hostile.bad_entries = [
        {"path": name, "type": "file", "size": 1, "version": "v", "mtime": 1.7e9}
        for name in ("esc\x1b[31mred", "newline\nname")
    ]
    error = json.dumps({"error": {"code": "boom", "message": FORGED}}).encode()
    hostile.misbehave(lambda r: r.route == "/commits", Answer(error, status=500))
    m = MountProc(
        hostile.src, tmp_path / "mnt", work_dir=tmp_path / "w", token=None,
        extra_args=["--drain-timeout", "2", "--flush-delay", "0"],
    )  # fmt: skip
    m.start()
    try:
        assert sorted(p.name for p in m.path.iterdir()) == ["a.txt", "d", "e", "f"]
        (m.path / "new.txt").write_bytes(b"new\n")
        (m.path / "c1\x9bname").write_bytes(b"an 8-bit CSI is a name's character\n")

        def status() -> subprocess.CompletedProcess[str]:
            return repomount("status", str(m.path), env=m.env, timeout=60)

        wait_until(lambda: "FAKE" in status().stdout, 60, "the commit's error in status")
        shown = status().stdout
        assert "\x1b" not in shown and "\x9b" not in shown, shown
        assert "boom\\n2026-12-07" in shown and "c1\\x9bname" in shown
        assert not [line for line in shown.splitlines() if line.startswith(FAKE)]

        r = repomount("unmount", str(m.path), "--drain-timeout", "2", env=m.env)
        assert r.returncode == 1 and "next mount" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr
        assert "boom\\n2026-12-07" in r.stderr
        assert m.proc is not None and m.proc.wait(90) == 1
        log = m.log()
        assert "\x1b" not in log and "\x9b" not in log
        assert not [line for line in log.splitlines() if line.startswith(FAKE)]
        assert "skipping entry 'esc\\x1b[31mred': holds the control character U+001B" in log
        assert "skipping entry 'newline\\nname'" in log
    finally:
        m.stop()
