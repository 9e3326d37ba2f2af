"""File and directory metadata through a mount, as a local filesystem keeps it.

The contract (each backend): a mode, an owner and the times set with chmod, chown and
utimensat are what `stat` shows (1) at once, (2) after the listings were fetched again
(longer than --metadata-ttl and the kernel's 1 s), and (3) after an unmount and a new
mount of the same repo with the same state directory. Native keeps files' modes and
mtimes remotely, so they show (4) in another mount of the repo, with a state directory
of its own; the others keep what the remote cannot hold in the mount's local attribute
store. A file's mtime does not move by itself once it was written; a directory's
st_nlink is 2 plus its subdirectories.

The table runs once against ext4 in a local temporary directory too
(`test_*_on_a_local_directory`), which proves the expectations are those of a local
filesystem and not this test's own. Directory times, long names and unlinked files:
test_directory_times_names_links.py; modes set in another mount, and the bits no remote
keeps: test_kept_modes.py.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from support.backends import ALL_OPS, Backend
from support.metadata import ATIME_NS, MTIME_NS, dir_with_a_file, errno_of, mode_of, put_file
from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")

SETTLE_S = 4  # > --metadata-ttl 2 and the kernel's 1 s: every listing is fetched again


# --------------------------------------------------------------------- attribute rows


@dataclass
class Row:
    """One attribute: `prepare` makes what must already be on the remote (synced before
    `act`), `act` changes the attribute and returns the value `observe` must show at every
    phase in `phases`."""

    name: str
    prepare: Callable[[Path], None]
    act: Callable[[Path], object]
    observe: Callable[[Path], object]
    phases: tuple[str, ...] = ("1-at-once", "2-after-wait", "3-after-remount")
    expected: object = field(default=None, init=False)


PHASES = ("1-at-once", "2-after-wait", "3-after-remount")
ELSEWHERE = "4-other-state-dir"  # a second mount of the repo: what the remote itself keeps


def _chmod(rel: str, mode: int) -> Callable[[Path], object]:
    def act(root: Path) -> object:
        os.chmod(root / rel, mode)
        return oct(mode)

    return act


def _mkdir_with_mode(root: Path) -> object:
    """`mkdir -m 700 d` (and `install -d -m`, `tar x`, `rsync -a`): the mode given to
    mkdir, with no chmod after it."""
    os.mkdir(root / "mkdir_mode_dir", 0o700)
    put_file(root, "mkdir_mode_dir/keep.txt")  # so that it exists on every remote
    return oct(0o700)


def _create_with_mode(root: Path) -> object:
    """open(O_CREAT, 0600), as `install -m`, ssh-keygen or a mail client makes a file."""
    fd = os.open(root / "created_0600", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"private\n")
    finally:
        os.close(fd)
    return oct(0o600)


def _chown(rel: str) -> Callable[[Path], object]:
    def act(root: Path) -> object:
        os.chown(root / rel, 1234, 4321)
        return (1234, 4321)

    return act


def _owner(rel: str) -> Callable[[Path], object]:
    def observe(root: Path) -> object:
        st = os.stat(root / rel)
        return (st.st_uid, st.st_gid)

    return observe


def _utime(root: Path) -> object:
    os.utime(root / "utime_file", ns=(ATIME_NS, MTIME_NS))
    return {"atime_ns": ATIME_NS, "mtime_ns": MTIME_NS}


def _times(root: Path) -> object:
    st = os.stat(root / "utime_file")
    return {"atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns}


def _utime_dir(root: Path) -> object:
    os.utime(root / "utime_dir", ns=(ATIME_NS, MTIME_NS))  # rsync -a, at the end
    return {"atime_ns": ATIME_NS, "mtime_ns": MTIME_NS}


def _dir_times_set(root: Path) -> object:
    st = os.stat(root / "utime_dir")
    return {"atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns}


def _utime_mtime(root: Path) -> object:
    os.utime(root / "touched_file", ns=(ATIME_NS, MTIME_NS))  # as `touch -d`, `rsync -t`
    return MTIME_NS


def _mtime_of_touched(root: Path) -> object:
    return os.stat(root / "touched_file").st_mtime_ns


OLD_ATIME_NS = -1000 * 10**9 + 5  # before 1970: negative, kept as they are
OLD_MTIME_NS = -31_536_000 * 10**9 + 7


def _utime_before_1970(root: Path) -> object:
    os.utime(root / "old_file", ns=(OLD_ATIME_NS, OLD_MTIME_NS))  # tar x of an old archive
    return {"atime_ns": OLD_ATIME_NS, "mtime_ns": OLD_MTIME_NS}


def _old_times(root: Path) -> object:
    st = os.stat(root / "old_file")
    return {"atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns}


def _old_mtime(root: Path) -> object:
    return os.stat(root / "old_file").st_mtime_ns


def _write_then_stat(root: Path) -> object:
    (root / "written_file").write_bytes(b"written and closed\n")
    return os.stat(root / "written_file").st_mtime_ns  # right after close


def _mtime_of_written(root: Path) -> object:
    return os.stat(root / "written_file").st_mtime_ns


def _write_then_move_its_dir(root: Path) -> object:
    (root / "wb").mkdir()
    (root / "wb" / "f").write_bytes(b"x" * 6276)
    (root / "wd").mkdir()
    os.rename(root / "wb", root / "wd" / "x")  # (before the write was sent)
    return os.stat(root / "wd" / "x" / "f").st_mtime_ns


def _mtime_of_moved(root: Path) -> object:
    return os.stat(root / "wd" / "x" / "f").st_mtime_ns


def _three_subdirs(root: Path) -> object:
    for sub in "abc":  # each holds a file, so that it exists on every remote
        put_file(root, f"three_subdirs/{sub}/keep.txt")
    return 5


def _empty_dir(root: Path) -> object:
    (root / "empty_dir").mkdir()
    return 2


def _nlink(rel: str) -> Callable[[Path], object]:
    """A directory the mount has not listed yet says st_nlink 1 ("unknown", which find
    and fts honour); once listed, 2 + its subdirectories. So: list it, then stat."""

    def observe(root: Path) -> object:
        os.listdir(root / rel)
        return os.stat(root / rel).st_nlink

    return observe


def attribute_rows(can: frozenset[str]) -> list[Row]:
    no_prep: Callable[[Path], None] = lambda root: None  # noqa: E731
    modes_kept = (ELSEWHERE,) if "file_modes" in can else ()
    mtimes_kept = (ELSEWHERE,) if "file_mtimes" in can else ()
    return [
        Row(
            "chmod 0o751 file",
            lambda r: put_file(r, "chmod_file"),
            _chmod("chmod_file", 0o751),
            mode_of("chmod_file"),
            phases=PHASES + modes_kept,
        ),
        Row(
            "chmod 0o700 dir",
            lambda r: dir_with_a_file(r, "chmod_dir"),
            _chmod("chmod_dir", 0o700),
            mode_of("chmod_dir"),
        ),
        Row("mkdir -m 0o700 dir", no_prep, _mkdir_with_mode, mode_of("mkdir_mode_dir")),
        Row(
            "create with mode 0o600 file",
            no_prep,
            _create_with_mode,
            mode_of("created_0600"),
            phases=PHASES + modes_kept,
        ),
        Row(
            "chown 1234:4321 file",
            lambda r: put_file(r, "chown_file"),
            _chown("chown_file"),
            _owner("chown_file"),
        ),
        Row(
            "chown 1234:4321 dir",
            lambda r: dir_with_a_file(r, "chown_dir"),
            _chown("chown_dir"),
            _owner("chown_dir"),
        ),
        Row("utimensat file", lambda r: put_file(r, "utime_file"), _utime, _times),
        Row("utimensat dir", lambda r: dir_with_a_file(r, "utime_dir"), _utime_dir, _dir_times_set),
        Row(
            "utimensat file: its mtime",
            lambda r: put_file(r, "touched_file"),
            _utime_mtime,
            _mtime_of_touched,
            phases=PHASES + mtimes_kept,
        ),
        Row(
            "utimensat file before 1970",
            lambda r: put_file(r, "old_file"),
            _utime_before_1970,
            _old_times,
        ),
        Row(
            "utimensat file before 1970: its mtime",
            no_prep,
            lambda r: OLD_MTIME_NS,  # (set by the row before)
            _old_mtime,
            phases=PHASES + mtimes_kept,
        ),
        Row(
            "mtime after write+close is stable",
            no_prep,
            _write_then_stat,
            _mtime_of_written,
            # (1) is the stat right after close; the row is about what comes later
            phases=("2-after-wait", "3-after-remount", *mtimes_kept),
        ),
        *(
            [
                Row(
                    "mtime after write, then dir moved",
                    no_prep,
                    _write_then_move_its_dir,
                    _mtime_of_moved,
                    phases=("2-after-wait", "3-after-remount", *mtimes_kept),
                )
            ]
            if "rename" in can
            else []
        ),
        Row("nlink dir with 3 subdirs", no_prep, _three_subdirs, _nlink("three_subdirs")),
        Row(
            "nlink empty dir",
            no_prep,
            _empty_dir,
            _nlink("empty_dir"),
            # where the remote has no empty directories (Relace, Terminal Use) nothing is
            # documented about one surviving a remount
            phases=("1-at-once", "2-after-wait", "3-after-remount")
            if "empty_dirs" in can
            else ("1-at-once", "2-after-wait"),
        ),
    ]


def _observe(row: Row, root: Path) -> object:
    try:
        return row.observe(root)
    except OSError as e:
        return f"{type(e).__name__}({errno.errorcode.get(e.errno or 0, e.errno)})"


def _check(
    rows: list[Row], root: Path, phase: str, report: list[str], bad: list[str], how: str = "stat"
) -> None:
    """`how`: "stat" looks each name up; "ls" lists the directory first, as `ls -l` does,
    so the attributes may come with the listing."""
    if how == "ls":
        os.listdir(root)
    for row in rows:
        if phase not in row.phases:
            continue
        got = _observe(row, root)
        ok = got == row.expected
        line = f"{phase + ' ' + how:20} {row.name:36} expected {row.expected!r}, observed {got!r}"
        report.append(("ok   " if ok else "FAIL ") + line)
        if not ok:
            bad.append(line)


def _verdict(title: str, report: list[str], bad: list[str]) -> None:
    print(f"\n{title}\n" + "\n".join(report))
    assert not bad, f"{title}: {len(bad)} of {len(report)} checks differ:\n" + "\n".join(bad)


def test_attributes_at_once_after_listings_expire_and_after_remount(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "2"])
    rows = attribute_rows(backend.can)
    for row in rows:
        row.prepare(m.path)
    m.sync()  # the files exist on the remote before their attributes change
    for row in rows:
        row.expected = row.act(m.path)
    report: list[str] = []
    bad: list[str] = []
    _check(rows, m.path, "1-at-once", report, bad)

    m.sync()
    server.put(m.repo, "made_elsewhere.txt", b"a file the mount did not write\n")
    time.sleep(SETTLE_S)  # not a wait for an event: every row's cached metadata expires
    _check(rows, m.path, "2-after-wait", report, bad)
    _check(rows, m.path, "2-after-wait", report, bad, how="ls")
    # the wait did what it is for: the listing was fetched again (a new remote file shows)
    refetched = (m.path / "made_elsewhere.txt").exists()
    report.append(
        f"{'ok   ' if refetched else 'FAIL '}2-after-wait: listing re-fetched: {refetched}"
    )
    if not refetched:
        bad.append("2-after-wait: the root listing was not fetched again (made_elsewhere.txt)")

    r = m.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{m.log()}"
    m.start()  # same repo, same state directory
    _check(rows, m.path, "3-after-remount", report, bad)
    _check(rows, m.path, "3-after-remount", report, bad, how="ls")
    other: MountProc = mount_factory(m.repo, create=False)  # a state directory of its own
    _check(rows, other.path, ELSEWHERE, report, bad)
    _check(rows, other.path, ELSEWHERE, report, bad, how="ls")
    _verdict(f"attributes on {backend}", report, bad)


def test_a_time_no_listing_could_show_is_refused_and_changes_nothing(
    mount_factory, backend: Backend
) -> None:
    """Before 1698 or after 2242 (the nanoseconds would not fit a signed 64 bits with
    room to spare), utimensat is EINVAL and the file keeps its times: a file with such
    a time would be left out of every listing, in every mount."""
    m: MountProc = mount_factory()
    put_file(m.path, "f")
    (m.path / "new").write_bytes(b"not sent yet\n")
    m.sync()
    put_file(m.path, "g")  # (not sent yet)
    for name in ("f", "g"):
        before = os.stat(m.path / name)
        for seconds in (10_413_792_000, 8_835_984_000, -10_000_000_000):  # 2300, 2250, 1653
            for times in ((seconds * 10**9, before.st_mtime_ns), (0, seconds * 10**9)):
                refused = errno_of(partial(os.utime, m.path / name, ns=times))
                assert refused == "EINVAL", (name, times)
                after = os.stat(m.path / name)
                assert (after.st_atime_ns, after.st_mtime_ns) == (
                    before.st_atime_ns,
                    before.st_mtime_ns,
                ), name
    m.sync()
    names = sorted(os.listdir(m.path))
    r = m.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{m.log()}"
    m.start()
    assert sorted(os.listdir(m.path)) == names == ["f", "g", "new"]


def test_attributes_on_a_local_directory(tmp_path: Path) -> None:
    """The same table on ext4: what the mount must match."""
    rows = attribute_rows(frozenset(ALL_OPS))
    for row in rows:
        row.prepare(tmp_path)
    for row in rows:
        row.expected = row.act(tmp_path)
    report: list[str] = []
    bad: list[str] = []
    for phase in (*PHASES, ELSEWHERE):
        _check(rows, tmp_path, phase, report, bad)
        _check(rows, tmp_path, phase, report, bad, how="ls")
    _verdict("attributes on a local directory", report, bad)
