"""What a mount does at once, as a local filesystem does it (each backend): a
directory's mtime and ctime move when an entry is created or removed in it, and stay
when nothing is done; a name longer than 255 bytes is ENAMETOOLONG; an unlinked,
still-open file has st_nlink 0 and still reads, and a removed open directory lists
empty.

The checks run once against ext4 in a local temporary directory too
(`test_*_on_a_local_directory`), which proves the expectations are those of a local
filesystem and not this test's own.
"""

from __future__ import annotations

import importlib.machinery
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.backends import ALL_OPS, Backend
from support.metadata import errno_of, put_file
from support.mount import MountProc
from support.server import ServerProc
from support.util import wait_until

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")

LONG_NAME = "x" * 256


def _tick() -> None:
    time.sleep(0.05)  # not a wait: a gap coarser than any filesystem's timestamp granularity


def _dir_times(d: Path) -> tuple[int, int]:
    st = os.stat(d)
    return st.st_mtime_ns, st.st_ctime_ns


def immediate_checks(root: Path, can: frozenset[str]) -> list[tuple[str, object, object]]:
    """(what, expected, observed) for the rows that need no wait. `root/dir` holds a file
    that is already on the remote."""
    out: list[tuple[str, object, object]] = []
    d = root / "dir"

    def moved(what: str, change: Callable[[], None]) -> None:
        before = _dir_times(d)
        _tick()
        change()
        after = _dir_times(d)
        out.append((f"dir mtime increases on {what}", True, after[0] > before[0]))
        out.append((f"dir ctime increases on {what}", True, after[1] > before[1]))
        if not (after[0] > before[0] and after[1] > before[1]):
            out.append((f"  (dir mtime, ctime before/after {what})", "-", (before, after)))

    # the control: with nothing done in it (and past the kernel's 1 s), the times stay
    before = _dir_times(d)
    time.sleep(1.2)  # not a wait: the test is that 1.2 s of nothing changes nothing
    out.append(("dir mtime, ctime unchanged when idle", before, _dir_times(d)))

    # a file made here and unlinked before its first close never reaches the remote, so
    # removing it is allowed on every backend (Terminal Use refuses removing remote files)
    fd = -1

    def create() -> None:
        nonlocal fd
        fd = os.open(d / "new_file", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    dir_atime = os.stat(d).st_atime_ns
    moved("create of a file", create)
    moved("mkdir", lambda: (d / "new_dir").mkdir())
    moved("unlink of a file", lambda: os.unlink(d / "new_file"))
    os.close(fd)
    moved("rmdir", lambda: os.rmdir(d / "new_dir"))
    # A change moves mtime and ctime, not atime: they moved together (bash's "you have
    # new mail" is an mbox whose mtime passed its atime).
    out.append(("dir atime unchanged by its entries' changes", dir_atime, os.stat(d).st_atime_ns))
    f = root / "written"
    f.write_bytes(b"a")
    before = os.stat(f)
    _tick()
    with open(f, "ab") as w:
        w.write(b"b")
    os.truncate(f, 1)
    after = os.stat(f)
    out.append(("file atime unchanged by write, truncate", before.st_atime_ns, after.st_atime_ns))
    out.append(("file mtime increases on write", True, after.st_mtime_ns > before.st_mtime_ns))

    out.append(
        ("stat of a 256-byte name", "ENAMETOOLONG", errno_of(lambda: os.stat(root / LONG_NAME)))
    )
    out.append(
        (
            "create of a 256-byte name",
            "ENAMETOOLONG",
            errno_of(lambda: os.close(os.open(root / LONG_NAME, os.O_WRONLY | os.O_CREAT, 0o644))),
        )
    )
    out.append(
        ("mkdir of a 256-byte name", "ENAMETOOLONG", errno_of(lambda: os.mkdir(root / LONG_NAME)))
    )

    # unlinked while open: never closed, so never sent (allowed on every backend)
    fd = os.open(root / "open_unlinked", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"still readable\n")
    ctime = os.fstat(fd).st_ctime_ns
    _tick()
    os.unlink(root / "open_unlinked")
    out.append(("fstat nlink of an unlinked new file", 0, os.fstat(fd).st_nlink))
    out.append(("ctime of an unlinked file increases", True, os.fstat(fd).st_ctime_ns > ctime))
    out.append(("read of an unlinked new file", b"still readable\n", os.pread(fd, 100, 0)))
    os.close(fd)
    (root / "open_removed_dir").mkdir()  # (made here: removed locally on every backend)
    fd = os.open(root / "open_removed_dir", os.O_RDONLY | os.O_DIRECTORY)
    ctime = os.fstat(fd).st_ctime_ns
    _tick()
    os.rmdir(root / "open_removed_dir")
    out.append(("fstat nlink of a removed open directory", 0, os.fstat(fd).st_nlink))
    out.append(("ctime of a removed directory increases", True, os.fstat(fd).st_ctime_ns > ctime))
    out.append(("listing of a removed open directory", [], os.listdir(fd)))
    os.close(fd)
    if "delete" in can:  # a file the remote has, opened, then unlinked
        fd = os.open(root / "remote_file", os.O_RDONLY)
        os.unlink(root / "remote_file")
        out.append(("fstat nlink of an unlinked remote file", 0, os.fstat(fd).st_nlink))
        out.append(("read of an unlinked remote file", b"on the remote\n", os.pread(fd, 100, 0)))
        os.close(fd)
        (root / "replacement").write_bytes(b"new\n")
        fd = os.open(root / "dir" / "keep.txt", os.O_RDONLY)
        ctime = os.fstat(fd).st_ctime_ns
        _tick()
        os.rename(root / "replacement", root / "dir" / "keep.txt")
        moved_on = os.fstat(fd).st_ctime_ns > ctime
        out.append(("ctime of a file renamed over increases", True, moved_on))
        os.close(fd)
    return out


def _immediate_verdict(title: str, results: list[tuple[str, object, object]]) -> None:
    report = []
    bad = []
    for what, expected, got in results:
        if expected == "-":
            report.append(f"     {what}: {got!r}")
            continue
        line = f"{what:40} expected {expected!r}, observed {got!r}"
        report.append(("ok   " if got == expected else "FAIL ") + line)
        if got != expected:
            bad.append(line)
    print(f"\n{title}\n" + "\n".join(report))
    assert not bad, f"{title}: {len(bad)} checks differ:\n" + "\n".join(bad)


def _prepare_immediate(root: Path) -> None:
    put_file(root, "dir/keep.txt")
    (root / "remote_file").write_bytes(b"on the remote\n")


def test_directory_times_long_names_and_unlinked_files(mount_factory, backend: Backend) -> None:
    m: MountProc = mount_factory()
    _prepare_immediate(m.path)
    m.sync()
    _immediate_verdict(
        f"directory times, names, links on {backend}", immediate_checks(m.path, backend.can)
    )


def test_directory_times_long_names_and_unlinked_files_on_a_local_directory(
    tmp_path: Path,
) -> None:
    _prepare_immediate(tmp_path)
    _immediate_verdict("on a local directory", immediate_checks(tmp_path, frozenset(ALL_OPS)))


def test_a_directory_changed_elsewhere_shows_new_times(mount_factory, backend: Backend) -> None:
    """A name made or removed in another mount changes the directory's mtime and ctime
    here once the listing follows, as on a local disk (and NFS). They stayed: a running
    Python, whose import system caches a directory's names by its mtime, never found a
    module made elsewhere although `ls` listed it. Found by a POSIX conformance probe."""
    extra = ["--poll-interval", "0.5"]
    a: MountProc = mount_factory(extra_args=extra)
    put_file(a.path, "pkg/keep.py")
    put_file(a.path, "pkg/old.py")
    a.sync()
    b: MountProc = mount_factory(a.repo, create=False, extra_args=extra)
    d = b.path / "pkg"
    finder = importlib.machinery.FileFinder(
        str(d), (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
    )
    assert finder.find_spec("keep") is not None and finder.find_spec("new") is None
    before = _dir_times(d)
    atime = os.stat(d).st_atime_ns
    _tick()
    put_file(a.path, "pkg/new.py")
    a.sync()
    wait_until(lambda: "new.py" in os.listdir(d), 20, "the new file listed in the other mount")
    after = _dir_times(d)
    assert after[0] > before[0] and after[1] > before[1], (before, after)
    assert os.stat(d).st_atime_ns == atime  # (a change of entries moves no atime)
    assert finder.find_spec("new") is not None  # (it looks again: the mtime moved)
    if "delete" not in backend.can:
        return
    _tick()
    os.unlink(a.path / "pkg" / "old.py")
    a.sync()
    wait_until(lambda: "old.py" not in os.listdir(d), 20, "the removal listed in the other mount")
    removed = _dir_times(d)
    assert removed[0] > after[0] and removed[1] > after[1], (after, removed)


def test_ctime_moves_while_mounted_and_shows_the_mtime_after_a_remount(
    server: ServerProc, mount_factory
) -> None:
    """The documented ctime row: no remote keeps it, so after a remount a file whose
    mtime was set into the past shows that time as its ctime too."""
    m: MountProc = mount_factory()
    f = m.path / "old.txt"
    f.write_bytes(b"x\n")
    past = 1_500_000_000 * 10**9
    os.utime(f, ns=(past, past))
    before = time.time_ns()
    f.chmod(0o600)
    st = f.stat()
    assert st.st_mtime_ns == past and st.st_ctime_ns >= before - 10**9
    assert m.unmount().returncode == 0
    m.start()
    st = f.stat()
    assert st.st_mtime_ns == past and st.st_ctime_ns == past
