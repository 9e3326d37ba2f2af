"""File and directory metadata through a mount, as a local filesystem keeps it.

The contract (each backend): a mode, an owner and the times set with chmod, chown and
utimensat are what `stat` shows (1) at once, (2) after the listings were fetched again
(longer than --metadata-ttl and the kernel's 1 s), and (3) after an unmount and a new
mount of the same repo with the same state directory. Native keeps files' modes and
mtimes remotely, so they show (4) in another mount of the repo, with a state directory
of its own; the others keep what the remote cannot hold in the mount's local attribute
store. A file's mtime does not move by itself once it was written; a directory's mtime
and ctime move when an entry is created or removed in it; a name longer than 255 bytes
is ENAMETOOLONG; a directory's st_nlink is 2 plus its subdirectories; an unlinked,
still-open file has st_nlink 0 and still reads.

Each table runs once against ext4 in a local temporary directory too
(`test_*_on_a_local_directory`), which proves the expectations are those of a local
filesystem and not this test's own.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from support.backends import ALL_OPS, Backend
from support.mount import MountProc
from support.server import ServerProc
from support.util import wait_until

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")

SETTLE_S = 4  # > --metadata-ttl 2 and the kernel's 1 s: every listing is fetched again
ATIME_NS = 1_000_000_123
MTIME_NS = 2_000_000_456
LONG_NAME = "x" * 256


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


def _file(root: Path, rel: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"content of " + rel.encode() + b"\n")


def _dir_with_a_file(root: Path, rel: str) -> None:
    """A directory that exists on every backend's remote: it holds a file."""
    _file(root, f"{rel}/keep.txt")


def _chmod(rel: str, mode: int) -> Callable[[Path], object]:
    def act(root: Path) -> object:
        os.chmod(root / rel, mode)
        return oct(mode)

    return act


def _mode(rel: str) -> Callable[[Path], object]:
    return lambda root: oct(stat.S_IMODE(os.stat(root / rel).st_mode))


def _mkdir_with_mode(root: Path) -> object:
    """`mkdir -m 700 d` (and `install -d -m`, `tar x`, `rsync -a`): the mode given to
    mkdir, with no chmod after it."""
    os.mkdir(root / "mkdir_mode_dir", 0o700)
    _file(root, "mkdir_mode_dir/keep.txt")  # so that it exists on every remote
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
        _file(root, f"three_subdirs/{sub}/keep.txt")
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
            lambda r: _file(r, "chmod_file"),
            _chmod("chmod_file", 0o751),
            _mode("chmod_file"),
            phases=PHASES + modes_kept,
        ),
        Row(
            "chmod 0o700 dir",
            lambda r: _dir_with_a_file(r, "chmod_dir"),
            _chmod("chmod_dir", 0o700),
            _mode("chmod_dir"),
        ),
        Row("mkdir -m 0o700 dir", no_prep, _mkdir_with_mode, _mode("mkdir_mode_dir")),
        Row(
            "create with mode 0o600 file",
            no_prep,
            _create_with_mode,
            _mode("created_0600"),
            phases=PHASES + modes_kept,
        ),
        Row(
            "chown 1234:4321 file",
            lambda r: _file(r, "chown_file"),
            _chown("chown_file"),
            _owner("chown_file"),
        ),
        Row(
            "chown 1234:4321 dir",
            lambda r: _dir_with_a_file(r, "chown_dir"),
            _chown("chown_dir"),
            _owner("chown_dir"),
        ),
        Row("utimensat file", lambda r: _file(r, "utime_file"), _utime, _times),
        Row(
            "utimensat dir", lambda r: _dir_with_a_file(r, "utime_dir"), _utime_dir, _dir_times_set
        ),
        Row(
            "utimensat file: its mtime",
            lambda r: _file(r, "touched_file"),
            _utime_mtime,
            _mtime_of_touched,
            phases=PHASES + mtimes_kept,
        ),
        Row(
            "utimensat file before 1970",
            lambda r: _file(r, "old_file"),
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
    _file(m.path, "f")
    (m.path / "new").write_bytes(b"not sent yet\n")
    m.sync()
    _file(m.path, "g")  # (not sent yet)
    for name in ("f", "g"):
        before = os.stat(m.path / name)
        for seconds in (10_413_792_000, 8_835_984_000, -10_000_000_000):  # 2300, 2250, 1653
            for times in ((seconds * 10**9, before.st_mtime_ns), (0, seconds * 10**9)):
                refused = _errno_of(partial(os.utime, m.path / name, ns=times))
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


# --------------------------------------------------------- directory times, names, links


def _tick() -> None:
    time.sleep(0.05)  # not a wait: a gap coarser than any filesystem's timestamp granularity


def _dir_times(d: Path) -> tuple[int, int]:
    st = os.stat(d)
    return st.st_mtime_ns, st.st_ctime_ns


def _errno_of(fn: Callable[[], object]) -> str:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "no error"


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

    moved("create of a file", create)
    moved("mkdir", lambda: (d / "new_dir").mkdir())
    moved("unlink of a file", lambda: os.unlink(d / "new_file"))
    os.close(fd)
    moved("rmdir", lambda: os.rmdir(d / "new_dir"))

    out.append(
        ("stat of a 256-byte name", "ENAMETOOLONG", _errno_of(lambda: os.stat(root / LONG_NAME)))
    )
    out.append(
        (
            "create of a 256-byte name",
            "ENAMETOOLONG",
            _errno_of(lambda: os.close(os.open(root / LONG_NAME, os.O_WRONLY | os.O_CREAT, 0o644))),
        )
    )
    out.append(
        ("mkdir of a 256-byte name", "ENAMETOOLONG", _errno_of(lambda: os.mkdir(root / LONG_NAME)))
    )

    # unlinked while open: never closed, so never sent (allowed on every backend)
    fd = os.open(root / "open_unlinked", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"still readable\n")
    os.unlink(root / "open_unlinked")
    out.append(("fstat nlink of an unlinked new file", 0, os.fstat(fd).st_nlink))
    out.append(("read of an unlinked new file", b"still readable\n", os.pread(fd, 100, 0)))
    os.close(fd)
    (root / "open_removed_dir").mkdir()  # (made here: removed locally on every backend)
    fd = os.open(root / "open_removed_dir", os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(root / "open_removed_dir")
    out.append(("fstat nlink of a removed open directory", 0, os.fstat(fd).st_nlink))
    out.append(("listing of a removed open directory", [], os.listdir(fd)))
    os.close(fd)
    if "delete" in can:  # a file the remote has, opened, then unlinked
        fd = os.open(root / "remote_file", os.O_RDONLY)
        os.unlink(root / "remote_file")
        out.append(("fstat nlink of an unlinked remote file", 0, os.fstat(fd).st_nlink))
        out.append(("read of an unlinked remote file", b"on the remote\n", os.pread(fd, 100, 0)))
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
    _file(root, "dir/keep.txt")
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


# ------------------------------------------------------------- metadata set elsewhere


@pytest.mark.backends("native")
def test_a_mode_and_mtime_set_elsewhere_show_and_are_not_undone(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    """Native keeps a file's mode and mtime; a new one set in another mount (the same
    content, so the same version) shows in this mount through the change feed, and a
    chmod here afterwards sends the mtime that is shown, not the one it had before."""
    a: MountProc = mount_factory()
    (a.path / "f").write_bytes(b"hi\n")
    os.utime(a.path / "f", ns=(ATIME_NS, 1_111_111_111_000_000_000))
    a.sync()
    b: MountProc = mount_factory(a.repo, create=False)
    os.utime(b.path / "f", ns=(ATIME_NS, 2_222_222_222_000_000_000))
    os.chmod(b.path / "f", 0o751)
    b.sync()

    def shown_in_a() -> tuple[int, int]:
        st = os.stat(a.path / "f")
        return stat.S_IMODE(st.st_mode), st.st_mtime_ns

    wait_until(lambda: shown_in_a() == (0o751, 2_222_222_222_000_000_000), 20, "B's chmod in A")
    os.chmod(a.path / "f", 0o600)
    a.sync()
    with server.client() as c:
        entries = c.get(f"/v1/repos/{a.repo}/tree", params={"recursive": "1"}).json()["entries"]
    (f,) = [e for e in entries if e["path"] == "f"]
    assert (f["mode"], f["mtime_ns"]) == (0o600, 2_222_222_222_000_000_000)
    r = a.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{a.log()}"
    a.start()  # (its kept attributes must not bring back the old time)
    assert shown_in_a() == (0o600, 2_222_222_222_000_000_000)


@pytest.mark.backends("native", "relace")
def test_setuid_setgid_and_sticky_bits_are_dropped_at_once(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    """A walkthrough: `chmod 4755 f` showed 4755 until a remount, then 755 (no remote
    keeps those bits, and the local store followed the remote). What shows now is what
    is kept: the permission bits, from the chmod (or mkdir) on."""
    m: MountProc = mount_factory()
    _file(m.path, "f")
    _dir_with_a_file(m.path, "d")
    m.sync()
    os.chmod(m.path / "f", 0o4755)
    os.chmod(m.path / "d", 0o3775)
    os.mkdir(m.path / "new", 0o1777)  # (less the umask)
    _file(m.path, "new/keep.txt")  # (an empty directory is local on relace)
    umask = os.umask(0)
    os.umask(umask)
    expected = {"f": "0o755", "d": "0o775", "new": oct(0o777 & ~umask)}

    def shown() -> dict[str, object]:
        return {name: _mode(name)(m.path) for name in expected}

    assert shown() == expected
    m.sync()
    r = m.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{m.log()}"
    m.start()
    assert shown() == expected
